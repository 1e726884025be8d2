# Polling a server that is restarting after a crash.
#
# PostgreSQL::Test::Cluster's psql and poll_query_until hand psql its query
# on stdin.  While the server restarts, psql may fail to connect and exit
# before IPC::Run has written that query; IPC::Run then dies of a broken
# pipe.  These polls take that for "not yet" and try again.
package CrashPoll;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Utils;
use Time::HiRes qw(usleep);

our @EXPORT = qw(poll_across_crash);

# poll_across_crash(NODE, QUERY[, EXPECTED[, DBNAME]]): true once QUERY
# returns EXPECTED ('t' unless given), false after the tests' timeout
sub poll_across_crash
{
	my ($node, $query, $expected, $dbname) = @_;
	$expected //= 't';
	$dbname //= 'postgres';
	my $attempts = 10 * $PostgreSQL::Test::Utils::timeout_default;
	foreach (1 .. $attempts)
	{
		my ($ret, $stdout) = eval { $node->psql($dbname, $query) };
		return 1 if defined $ret && $ret == 0 && $stdout eq $expected;
		usleep(100_000);
	}
	return 0;
}

1;
