# What a restore holds for the leases a crash forgot stays held as long as
# those leases may run: across a second crash and a clean restart (the
# lease horizon is not lowered below it meanwhile), also for a lease granted
# before the model had a concurrency limit; and after a clean stop, nothing
# is granted under its exact marks before new ones are saved (else a
# restart without a save would forget the new lease).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use CrashPoll;

my $node = PostgreSQL::Test::Cluster->new('holds');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.enable_test_clock = on
ratelimit.persist_interval = '1s'
restart_after_crash = on
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

sub worker_pid
{
	return query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'");
}

# SIGKILL a backend and wait for the new worker
sub crash
{
	my $doomed = $node->background_psql('postgres');
	my $pid = $doomed->query_safe('SELECT pg_backend_pid()');
	my $old = worker_pid() || 0;
	kill 'KILL', $pid;
	poll_across_crash($node, qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type = 'pg_ratelimit worker' AND pid <> $old})
	  or die 'no worker after the crash';
	eval { $doomed->quit; };
}

# the worker saved after the call: what follows is in no save
sub wait_for_next_save
{
	my $ticks = query("SELECT requests_minute FROM rl_status WHERE model = 'tick'");
	query("SELECT rl_acquire('tick')");
	$node->poll_query_until('postgres',
		"SELECT requests_minute > $ticks FROM rl_counter WHERE model = 'tick'")
	  or die 'the worker did not save';
}

sub grants
{
	my ($model, $n) = @_;
	return query("SELECT count(*) FILTER (WHERE (rl_acquire('$model')).granted) FROM generate_series(1, $n)");
}

# each part in an hour of the limiter's clock of its own
sub new_hour
{
	my $hours = shift;
	query("SELECT rl_debug_set_clock(date_trunc('hour', now()) + interval '$hours hours 1 second')");
	wait_for_next_save();
	return query('SELECT rl_clock()');
}

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('m', max_concurrent => 2);
	SELECT rl_define_model('u');
	SELECT rl_define_model('c', max_concurrent => 1);
	SELECT rl_define_model('tick');
});

# A lease of an hour that no save saw, then a crash: its slot is held
my $t0 = new_hour(1);
query("SELECT rl_release((rl_acquire('m')).lease_id)");
wait_for_next_save();
query("SELECT rl_acquire('m', ttl => '1 hour')");
crash();
is(query("SELECT in_flight FROM rl_status WHERE model = 'm'"), '1',
	'after a crash the slot of a forgotten lease of an hour is held');
wait_for_next_save();
wait_for_next_save();
is(query("SELECT lease_horizon > rl_clock() + interval '50 minutes' FROM rl_mark WHERE model = 'm'"),
	't', 'the lease horizon stays up while the slot is held');
crash();
$node->restart;
query("SELECT rl_debug_set_clock('$t0'::timestamptz + interval '20 minutes')");
is(query("SELECT in_flight FROM rl_status WHERE model = 'm'"), '1',
	'a second crash and a clean restart later, 20 minutes on, it is still held');
is(query("SELECT (rl_acquire('m', max_wait => '1 min')).granted") . grants('m', 2), 't0',
	'max_concurrent 2: one more lease, not two');

# A lease granted before the model had a concurrency limit
$t0 = new_hour(3);
is(query(q{
	SELECT (rl_acquire('u', ttl => '1 hour')).granted;
	SELECT rl_define_model('u', max_concurrent => 2);
	SELECT (rl_acquire('u')).granted;
	SELECT count(*) FROM rl_lease_state WHERE model = 'u'}),
	"t\n\nt\n0", 'u: a lease of an hour, a limit of 2 set, a second lease, none saved');
crash();
query("SELECT rl_debug_set_clock('$t0'::timestamptz + interval '20 minutes')");
is(grants('u', 3), '0', 'max_concurrent 2: the lease of an hour from before the limit still counts');

# After a clean stop the marks are exact: without the worker, nothing more
# is granted (a release makes no room), so nothing goes unsaved
$t0 = new_hour(5);
my $lease = query("SELECT lease_id FROM rl_acquire('c', ttl => '2 minutes')");
$node->stop;
$node->append_conf('postgresql.conf', 'max_worker_processes = 0');
$node->start;
is(query("SELECT released FROM rl_release($lease)"), 't', 'c: the restored lease is released');
is(query("SELECT granted || ' ' || limited_by FROM rl_acquire('c')"), 'false concurrency',
	'c: and no new lease is granted under the exact marks of the clean stop');
$node->append_conf('postgresql.conf', 'max_worker_processes = 8');
$node->restart;
query("SELECT rl_debug_set_clock('$t0'::timestamptz + interval '3 minutes')");
is(query("SELECT (rl_acquire('c', max_wait => '1 min')).granted") . grants('c', 1), 't0',
	'c: with the worker back, its one slot is granted once');

$node->stop;
done_testing();
