# A crash in the middle of the worker's lease save.  150,000 leases are
# opened at once; the worker saves at most 65,536 new ones a round, so the
# save takes several rounds.  A backend is killed (a crash restart) while the
# saved table holds only part of them.  After the restart the leases open
# are exactly the rows the last committed save left, no row is saved twice,
# and later rounds keep the table equal to the open leases.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use CrashPoll;

my $node = PostgreSQL::Test::Cluster->new('mid_save');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.max_leases = 200000
ratelimit.persist_interval = '500ms'
restart_after_crash = on
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

# no limits: no high-water marks to wait for
query(q{
	CREATE EXTENSION pg_ratelimit;
	INSERT INTO rl_model (model) VALUES ('big');
	SELECT count(*) FROM generate_series(1, 150000) i
	WHERE (rl_acquire('big', ttl => '1 hour')).granted;
});
$node->poll_query_until('postgres', 'SELECT count(*) > 0 FROM rl_lease_state')
  or die 'the worker saved nothing';
my $saved_before = query('SELECT count(*) FROM rl_lease_state');
note("saved when the crash came: $saved_before of 150000");

# a backend killed with SIGKILL: every backend and the worker restart
my $doomed = $node->background_psql('postgres');
my $pid = $doomed->query_safe('SELECT pg_backend_pid()');
kill 'KILL', $pid;
eval { $doomed->quit };
poll_across_crash($node, 'SELECT true') or die 'the server did not come back';
like(slurp_file($node->logfile), qr/terminated by signal 9/, 'it was a crash');

my $saved = query('SELECT count(*) FROM rl_lease_state');
cmp_ok($saved, '>=', $saved_before, 'the committed rows survived the crash');
is(query('SELECT count(*) FROM rl_leases'), $saved,
	'the leases open after the restart are the saved rows');
is(query('SELECT count(*) FROM rl_leases l JOIN rl_lease_state s USING (lease_id)'), $saved,
	'each of them, by id');
is(query('SELECT count(*) - count(DISTINCT lease_id) FROM rl_lease_state'), '0',
	'no row saved twice');

# rounds after the restart keep the table equal to the open leases
query("SELECT count(rl_release(lease_id)) FROM rl_leases WHERE lease_id % 2 = 0");
my $open = query('SELECT count(*) FROM rl_leases');
query("SELECT count(*) FROM generate_series(1, 1000) i WHERE (rl_acquire('big', ttl => '1 hour')).granted");
$open += 1000;
$node->poll_query_until('postgres', "SELECT count(*) = $open FROM rl_lease_state")
  or die 'the saved table did not follow the open leases';
is(query('SELECT count(*) FROM rl_leases l JOIN rl_lease_state s USING (lease_id)'), $open,
	'later saves follow releases and grants');

$node->stop;
done_testing();
