# rl_stats counts how waits end, on the models concerned, with the seconds
# they took: granted after a release (on the model that granted it), timed
# out when max_wait passes, cancelled by pg_cancel_backend,
# statement_timeout or the session's end.  A call granted at once waited
# for nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('stats_waits');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$node->start;

# the functions may live in public or in ratelimit
$node->safe_psql('postgres', 'ALTER DATABASE postgres SET search_path = public, ratelimit');

sub query { return $node->safe_psql('postgres', shift); }

# "waits granted/timed out/cancelled" of a model, and whether each has seconds > 0
sub waits
{
	my $model = shift;
	return query(
		"SELECT waits_granted || '/' || waits_timed_out || '/' || waits_cancelled || ' '
			|| (wait_seconds_granted > 0) || '/' || (wait_seconds_timed_out > 0) || '/'
			|| (wait_seconds_cancelled > 0)
		 FROM rl_stats WHERE model = '$model'");
}

sub wait_for_waiters
{
	my ($model, $n) = @_;
	$node->poll_query_until('postgres',
		"SELECT waiting = $n FROM rl_status WHERE model = '$model'")
	  or die "no $n waiters on $model";
}

# A session whose acquire blocks; its outcome goes to the table got
sub start_waiter
{
	my $call = shift;
	my $session = $node->background_psql('postgres', on_error_stop => 0);
	$session->query_until(qr/started/, "\\echo started\nINSERT INTO got SELECT * FROM $call;\n");
	return $session;
}

query(q{
	CREATE EXTENSION pg_ratelimit;
	CREATE TABLE got (granted boolean, lease_id bigint, model text, retry_after interval,
					  limited_by text);
	SELECT rl_define_model('w', max_concurrent => 1);
	SELECT rl_define_model('w2', max_concurrent => 1);
	CREATE TABLE held AS SELECT lease_id, model FROM rl_acquire('w');
	INSERT INTO held SELECT lease_id, model FROM rl_acquire('w2');
});
is(waits('w'), '0/0/0 false/false/false', 'a call granted at once counts no wait');

# granted after a release
my $waiter = start_waiter("rl_acquire('w', max_wait => '3 min')");
wait_for_waiters('w', 1);
query("SELECT rl_release(lease_id) FROM held WHERE model = 'w'");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM got WHERE granted")
  or die 'the waiter was not granted';
$waiter->quit;
is(waits('w'), '1/0/0 true/false/false', 'a waiter granted after a release');
is(query("SELECT granted || ' ' || denied FROM rl_stats WHERE model = 'w'"), '2 0',
	'it is granted, not denied');

# timed out: the waiter above holds w's slot now
is(query("SELECT granted FROM rl_acquire('w', max_wait => '200 ms')"), 'f',
	'a wait that runs out is refused');
is(waits('w'), '1/1/0 true/true/false', 'and counts as timed out');
is(query("SELECT denied || ' ' || denied_concurrency FROM rl_stats WHERE model = 'w'"), '1 1',
	'and as a denial by concurrency');

# cancelled: pg_cancel_backend
my $cancelled = $node->background_psql('postgres', on_error_stop => 0);
$cancelled->query_until(qr/started/,
	"\\echo started\nSELECT rl_acquire('w', max_wait => '3 min');\n");
wait_for_waiters('w', 1);
query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity
	   WHERE wait_event_type = 'Extension' AND query LIKE '%rl_acquire%'");
wait_for_waiters('w', 0);
$node->poll_query_until('postgres', "SELECT waits_cancelled = 1 FROM rl_stats WHERE model = 'w'")
  or die 'the cancelled wait was not counted';
is(waits('w'), '1/1/1 true/true/true', 'a wait ended by pg_cancel_backend counts as cancelled');
is($cancelled->query('SELECT 1'), '1', 'the cancelled session is usable');
$cancelled->quit;

# cancelled: statement_timeout
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"SET statement_timeout = '300ms'; SELECT rl_acquire('w', max_wait => '1 min')");
like($stderr, qr/canceling statement due to statement timeout/, 'statement_timeout ends a wait');
is(query("SELECT waits_cancelled FROM rl_stats WHERE model = 'w'"), '2',
	'and counts as cancelled');

# cancelled: the session ends while it waits
my $terminated = $node->background_psql('postgres', on_error_stop => 0);
$terminated->query_until(qr/started/,
	"\\echo started\nSELECT rl_acquire('w', max_wait => '3 min');\n");
wait_for_waiters('w', 1);
query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	   WHERE wait_event_type = 'Extension' AND query LIKE '%rl_acquire%'");
$node->poll_query_until('postgres', "SELECT waits_cancelled = 3 FROM rl_stats WHERE model = 'w'")
  or die 'the wait of a terminated session was not counted';
pass('a wait ended by the end of its session counts as cancelled');
eval { $terminated->quit; };
is(query("SELECT denied FROM rl_stats WHERE model = 'w'"), '1',
	'a cancelled wait is not a denial (the call did not return)');

# rl_acquire_any waits on both models: granted by w2, it counts there only;
# timed out, on both
query("DELETE FROM got");
$waiter = start_waiter("rl_acquire_any('{w,w2}', max_wait => '3 min')");
wait_for_waiters('w2', 1);
query("SELECT rl_release(lease_id) FROM held WHERE model = 'w2'");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM got WHERE granted AND model = 'w2'")
  or die 'the waiter was not granted on w2';
$waiter->quit;
is(waits('w2'), '1/0/0 true/false/false', 'a wait on two models counts where it was granted');
is(waits('w'), '1/1/3 true/true/true', 'and not on the model that did not grant it');
is(query("SELECT granted FROM rl_acquire_any('{w,w2}', max_wait => '200 ms')"), 'f',
	'a wait on two models that runs out');
is(query("SELECT string_agg(model || ' ' || waits_timed_out || ' ' || denied, ',' ORDER BY model)
		  FROM rl_stats"),
	'w 2 2,w2 1 1', 'counts as timed out, and as a denial, on both');

$node->stop;
done_testing();
