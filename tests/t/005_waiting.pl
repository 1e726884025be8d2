# Waiting inside the server: waiters are admitted right after a window reset
# or a release, in arrival order, show as waiting in pg_stat_activity, and
# leave the queue cleanly on statement_timeout, cancel and exit.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('waiting');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$node->append_conf('postgresql.conf', "ratelimit.enable_test_clock = on");
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

query(q{
	CREATE EXTENSION pg_ratelimit;
	CREATE TABLE got (who text, granted boolean, at timestamptz);
	SELECT rl_define_model('fifo', rpm => 1);
	SELECT rl_debug_set_clock('2030-01-01 00:00:30+00');
	SELECT granted FROM rl_acquire('fifo');
});

# Start a session whose acquire blocks; it records the outcome in "got"
sub start_waiter
{
	my ($who, $call) = @_;
	my $session = $node->background_psql('postgres', on_error_stop => 0);
	$session->query_until(qr/started/, qq{\\echo started
INSERT INTO got SELECT '$who', granted, rl_clock() FROM $call;
});
	return $session;
}

sub waiting
{
	my $model = shift;
	return query("SELECT waiting FROM rl_status WHERE model = '$model'");
}

# three waiters, in this order
my @waiters;
foreach my $who ('w1', 'w2', 'w3')
{
	push @waiters, start_waiter($who, "rl_acquire('fifo', max_wait => '3 min')");
	my $n = scalar @waiters;
	$node->poll_query_until('postgres', "SELECT waiting = $n FROM rl_status WHERE model = 'fifo'")
	  or die "waiter $who did not queue";
}
is(waiting('fifo'), '3', 'three waiters in rl_status');
is(query("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND wait_event_type = 'Extension' AND query LIKE '%rl_acquire%'"),
	'3', 'waiters show as waiting in pg_stat_activity');

# each minute boundary admits exactly one, oldest first
foreach my $minute (1 .. 3)
{
	query(sprintf("SELECT rl_debug_set_clock('2030-01-01 00:%02d:59.8+00')", $minute - 1));
	$node->poll_query_until('postgres', "SELECT count(*) = $minute FROM got")
	  or die "nobody admitted at minute $minute";
	is(query("SELECT string_agg(who, ',' ORDER BY at) FROM got WHERE granted"),
		join(',', map { "w$_" } 1 .. $minute), "minute $minute admits the next waiter in arrival order");
	ok(query(sprintf("SELECT at >= '2030-01-01 00:%02d:00+00' FROM got WHERE who = 'w$minute'", $minute)),
		'not before the boundary');
	note('admitted ' . query(sprintf("SELECT at - '2030-01-01 00:%02d:00+00' FROM got WHERE who = 'w$minute'", $minute))
		  . ' after the boundary');
}
$_->quit foreach @waiters;
is(waiting('fifo'), '0', 'the queue is empty');

# an older waiter that fits is served before a younger one, whatever order
# they wake in; an older one that does not fit holds nobody back
query(q{
	SELECT rl_define_model('share', tpm => 100);
	SELECT rl_debug_set_clock('2030-01-01 00:10:30+00');
	SELECT granted FROM rl_acquire('share', tokens => 100);
	DELETE FROM got;
});
my $big = start_waiter('big', "rl_acquire('share', tokens => 80, max_wait => '3 min')");
$node->poll_query_until('postgres', "SELECT waiting = 1 FROM rl_status WHERE model = 'share'");
my $small = start_waiter('small', "rl_acquire('share', tokens => 30, max_wait => '3 min')");
$node->poll_query_until('postgres', "SELECT waiting = 2 FROM rl_status WHERE model = 'share'");
query("SELECT rl_debug_set_clock('2030-01-01 00:10:59.8+00')");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM got") or die 'nobody admitted';
sleep(1);
is(query("SELECT string_agg(who, ',') FROM got"), 'big',
	'the younger waiter does not take the room the older one needs');
is(query("SELECT granted FROM rl_acquire('share', tokens => 30)"), 'f',
	'nor does a newcomer');
is(query("SELECT granted FROM rl_acquire('share', tokens => 20)"), 't',
	'what is left after the older waiter is free to take');
query("SELECT rl_debug_set_clock('2030-01-01 00:11:59.8+00')");
$node->poll_query_until('postgres', "SELECT count(*) = 2 FROM got") or die 'small not admitted';
pass('the younger waiter is admitted at the next reset');
$_->quit foreach ($big, $small);

# a waiter too big to fit now holds nobody back
query(q{
	SELECT rl_define_model('holdback', tpm => 100);
	SELECT granted FROM rl_acquire('holdback', tokens => 50);
	DELETE FROM got;
});
my $huge = start_waiter('huge', "rl_acquire('holdback', tokens => 90, max_wait => '2 s')");
$node->poll_query_until('postgres', "SELECT waiting = 1 FROM rl_status WHERE model = 'holdback'");
is(query("SELECT granted FROM rl_acquire('holdback', tokens => 40)"), 't',
	'a waiter that does not fit does not block a newcomer that does');
$huge->quit;    # returns once its 2 s wait is over

# a release wakes a waiter at once
query(q{
	SELECT rl_define_model('conc', max_concurrent => 1);
	CREATE TABLE held AS SELECT lease_id FROM rl_acquire('conc');
	DELETE FROM got;
});
my $w = start_waiter('after_release', "rl_acquire('conc', max_wait => '3 min')");
$node->poll_query_until('postgres', "SELECT waiting = 1 FROM rl_status WHERE model = 'conc'");
query("SELECT rl_release(lease_id) FROM held");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM got WHERE granted") or die 'not woken';
pass('a release admits the waiter');
$w->quit;

# statement_timeout and cancel end a wait cleanly
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"SET statement_timeout = '300ms'; SELECT rl_acquire('conc', max_wait => '1 min')");
like($stderr, qr/canceling statement due to statement timeout/, 'statement_timeout ends the wait');
is(waiting('conc'), '0', 'and leaves the queue');

my $cancelled = $node->background_psql('postgres', on_error_stop => 0);
$cancelled->query_until(qr/started/, "\\echo started\nSELECT rl_acquire('conc', max_wait => '1 min');\n");
$node->poll_query_until('postgres', "SELECT waiting = 1 FROM rl_status WHERE model = 'conc'");
query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE '%rl_acquire%'");
$node->poll_query_until('postgres', "SELECT waiting = 0 FROM rl_status WHERE model = 'conc'")
  or die 'cancel did not leave the queue';
pass('cancel ends the wait and leaves the queue');
is($cancelled->query('SELECT 1'), '1', 'the cancelled session is usable');
$cancelled->quit;

my $terminated = $node->background_psql('postgres', on_error_stop => 0);
$terminated->query_until(qr/started/, "\\echo started\nSELECT rl_acquire('conc', max_wait => '1 min');\n");
$node->poll_query_until('postgres', "SELECT waiting = 1 FROM rl_status WHERE model = 'conc'");
query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE '%rl_acquire%'");
$node->poll_query_until('postgres', "SELECT waiting = 0 FROM rl_status WHERE model = 'conc'")
  or die 'exit did not leave the queue';
pass('a backend that exits while waiting leaves the queue');
eval { $terminated->quit };    # its psql lost the connection

# dropping the model ends its waits with an error
my $dropped = start_waiter('dropped', "rl_acquire('conc', max_wait => '1 min')");
$node->poll_query_until('postgres', "SELECT waiting = 1 FROM rl_status WHERE model = 'conc'");
query("SELECT rl_drop_model('conc')");
is($dropped->query("SELECT 'alive'"), 'alive', 'the waiter of a dropped model carries on');
like(slurp_file($node->logfile), qr/ERROR:  model "conc" does not exist/,
	'its wait ended with an error naming the model');
is(query("SELECT count(*) FROM got WHERE who = 'dropped'"), '0', 'and it got no lease');
$dropped->quit;

$node->stop;
done_testing();
