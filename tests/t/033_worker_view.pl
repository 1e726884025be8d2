# rl_worker shows what an operator needs to tell a healthy worker: the pids
# of the launcher and the worker (the ones pg_stat_activity shows), rounds and
# persist rounds that go on, the rows the last save wrote, notifications sent
# and waiters woken; readable by any role.  Restarts are counted: a SIGTERM
# (the worker saves and stops, the launcher starts it again) and an error
# (pg_cancel_backend: logged by the launcher, kept in last_error, started
# again after a backoff that doubles with each error in a row) each count one.  A SIGKILL is a crash: the server
# resets shared memory, so the counters start over (stats_since moves) and a
# new launcher starts a new worker.  The error message itself is shown to
# members of pg_read_all_stats (pg_monitor) only.
#
# And in pg_stat_activity, the callers blocked in rl_acquire are told
# apart: from PostgreSQL 17 on by the wait event RateLimitAcquire (the idle
# worker and launcher show RateLimitWorkerMain and RateLimitLauncherMain,
# and pg_wait_events lists all three); before, wait_event_type = 'Extension'
# lists only them (the idle worker and launcher show no wait event).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use CrashPoll;

$ENV{PGOPTIONS} = '-c search_path=public,ratelimit';

my $node = PostgreSQL::Test::Cluster->new('worker_view');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.persist_interval = '100ms'
restart_after_crash = on
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

sub log_lines
{
	my ($pattern, $offset) = @_;
	return scalar(grep { /$pattern/ } split(/\n/, slurp_file($node->logfile, $offset // 0)));
}

# The worker's pid, once one other than old_pid is connected
sub wait_for_worker
{
	my $old_pid = shift // 0;
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type = 'pg_ratelimit worker' AND pid <> $old_pid})
	  or die 'no worker';
	return query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'");
}

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('m', max_concurrent => 1);
	CREATE ROLE watcher LOGIN;
});
my $worker = wait_for_worker();
ok($node->poll_query_until('postgres', 'SELECT healthy AND persist_rounds > 0 FROM rl_worker'),
	'healthy, with a save done');

is(query(q{
	SELECT (launcher_pid = (SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit launcher'))
		   || ' ' || (worker_pid = (SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'))
		   || ' ' || state || ' ' || database || ' ' || restarts
		   || ' ' || (started_at <= now()) || ' ' || (stats_since <= started_at)
		   || ' ' || (last_error IS NULL) || ' ' || (next_attempt_at IS NULL)
	FROM rl_worker}),
	'true true running postgres 0 true true true true',
	'the pids are the ones pg_stat_activity shows; running, no restart, no error');

# rounds and persist rounds go on
my ($rounds, $persists) = split /\|/, query('SELECT rounds, persist_rounds FROM rl_worker');
ok($node->poll_query_until('postgres',
		"SELECT rounds > $rounds AND persist_rounds > $persists FROM rl_worker"),
	'rounds and persist rounds increase');
# (a round that changed nothing writes nothing: rows_written stays)
$node->poll_query_until('postgres', q{SELECT last_persist_rows = 0 FROM rl_worker})
  or die 'the worker keeps writing';
my $written = query('SELECT rows_written FROM rl_worker');
query("SELECT rl_acquire('m', ttl => '1 h')");
ok($node->poll_query_until('postgres', "SELECT rows_written > $written FROM rl_worker"),
	'a save after a grant writes rows');
# (clock_timestamp: the worker saves again while the statement runs)
is(query('SELECT last_persist_ms >= 0 AND last_persist_at <= clock_timestamp() FROM rl_worker'), 't',
	'the last save has its duration and time');
is($node->safe_psql('postgres', 'SELECT state FROM rl_worker', extra_params => [ '-U', 'watcher' ]),
	'running', 'any role can read rl_worker');

######################################################################
# The wait-event filter: only blocked rl_acquire callers
######################################################################

# m's one slot is taken: a second acquire waits
my $waiter = $node->background_psql('postgres');
my $waiter_pid = $waiter->query_safe('SELECT pg_backend_pid()');
$waiter->query_until(qr/waiting/, q{
	\echo waiting
	SELECT granted FROM rl_acquire('m', max_wait => '5 min');
});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $waiter_pid AND wait_event_type = 'Extension'"),
	'the blocked caller shows wait_event_type Extension');
is(query(q{SELECT string_agg(pid::text, ',') FROM pg_stat_activity
		   WHERE wait_event_type = 'Extension' AND backend_type = 'client backend'}),
	$waiter_pid, "wait_event_type = 'Extension' of client backends lists only it");
if ($node->pg_version >= 17)
{
	is(query("SELECT wait_event FROM pg_stat_activity WHERE pid = $waiter_pid"),
		'RateLimitAcquire', 'its wait event is RateLimitAcquire (PostgreSQL 17+)');
	ok($node->poll_query_until('postgres', q{
		SELECT string_agg(backend_type || ' ' || wait_event_type || ' ' || wait_event, ', '
						  ORDER BY backend_type)
			   = 'pg_ratelimit launcher Extension RateLimitLauncherMain, '
				 'pg_ratelimit worker Extension RateLimitWorkerMain'
		FROM pg_stat_activity
		WHERE backend_type IN ('pg_ratelimit worker', 'pg_ratelimit launcher') AND state = 'idle'}),
		'the worker and the launcher, idle, show their own wait events');
	is(query(q{SELECT string_agg(name, ' ' ORDER BY name) FROM pg_wait_events
			   WHERE type = 'Extension' AND name LIKE 'RateLimit%'}),
		'RateLimitAcquire RateLimitLauncherMain RateLimitWorkerMain',
		'pg_wait_events lists the three');
}
else
{
	is(query("SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE wait_event_type = 'Extension'"),
		$waiter_pid, "wait_event_type = 'Extension' lists only it");
	ok($node->poll_query_until('postgres', q{
		SELECT count(*) = 2 FROM pg_stat_activity
		WHERE backend_type IN ('pg_ratelimit worker', 'pg_ratelimit launcher')
		  AND state = 'idle' AND wait_event IS NULL}),
		'the worker and the launcher, idle, show no wait event');
}

# the release wakes the waiter and notifies (a denial came first)
my ($woken, $sent) = split /\|/, query('SELECT waiters_woken, notifications_sent FROM rl_worker');
query("SELECT rl_acquire('m')");	# denied: a notice is due when capacity frees
query("SELECT rl_release(lease_id) FROM rl_leases WHERE pid <> $waiter_pid");
ok($node->poll_query_until('postgres', "SELECT waiters_woken > $woken FROM rl_worker"),
	'waiters_woken counts the wake-up');
ok($node->poll_query_until('postgres', "SELECT notifications_sent > $sent FROM rl_worker"),
	'notifications_sent counts the notice');
$waiter->quit;

######################################################################
# Restarts
######################################################################

# SIGTERM: the worker saves, stops, and is started again
my $offset = -s $node->logfile;
query("SELECT pg_terminate_backend($worker)");
$worker = wait_for_worker($worker);
ok($node->poll_query_until('postgres', "SELECT state = 'running' AND restarts = 1 FROM rl_worker"),
	'after a SIGTERM the worker is back and it counts as a restart');
is(log_lines(qr/pg_ratelimit worker saved its state and stopped/, $offset), 1,
	'it saved its state first');

# An error (a cancel): logged once by the launcher, kept, started again
$offset = -s $node->logfile;
query("SELECT pg_cancel_backend($worker)");
$worker = wait_for_worker($worker);
ok($node->poll_query_until('postgres', "SELECT state = 'running' AND restarts = 2 FROM rl_worker"),
	'after an error the worker is back and it counts as a restart');
is(query('SELECT last_error || (last_error_at <= now()) FROM rl_worker'),
	'canceling statement due to user requesttrue', 'rl_worker keeps the error and its time');
# the message is for monitoring roles (pg_read_all_stats, as in pg_monitor)
sub last_error_as_watcher
{
	return $node->safe_psql('postgres', 'SELECT last_error FROM rl_worker',
		extra_params => [ '-U', 'watcher' ]);
}
is(last_error_as_watcher(), '<insufficient privilege>', 'another role sees that there was an error');
query('GRANT pg_monitor TO watcher');
is(last_error_as_watcher(), 'canceling statement due to user request', 'a member of pg_monitor reads it');
is(log_lines(qr/pg_ratelimit worker exited with an error; the launcher starts it again in 1 s/, $offset),
	1, 'the launcher logged the failure once');

# Another error soon after: the launcher backs off longer
$offset = -s $node->logfile;
query("SELECT pg_cancel_backend($worker)");
$worker = wait_for_worker($worker);
ok($node->poll_query_until('postgres', "SELECT state = 'running' AND restarts = 3 FROM rl_worker"),
	'after a second error the worker is back');
is(log_lines(qr/pg_ratelimit worker exited with an error; the launcher starts it again in 2 s/, $offset),
	1, 'after a backoff twice as long');

# SIGKILL: a crash; shared memory starts over, and so do the counters
my ($launcher, $since) = split /\|/, query('SELECT launcher_pid, stats_since FROM rl_worker');
kill 'KILL', $worker;
poll_across_crash($node, qq{
	SELECT launcher_pid <> $launcher AND worker_pid IS NOT NULL AND state = 'running'
	FROM rl_worker})
  or die 'no worker after the crash';
is(query("SELECT restarts || ' ' || (stats_since > '$since') || ' ' || (last_error IS NULL) FROM rl_worker"),
	'0 true true', 'after a crash: a new launcher and worker, counters since the restart');
like(slurp_file($node->logfile), qr/terminated by signal 9/, 'it was a crash');

$node->stop;
done_testing();
