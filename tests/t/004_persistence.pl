# Durability: a clean restart keeps counters, leases, daily usage and the
# test clock exactly; a crash keeps what was saved; the worker comes back
# after being terminated; a standby refuses to admit.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use CrashPoll;

my $node = PostgreSQL::Test::Cluster->new('primary');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.enable_test_clock = on
ratelimit.persist_interval = '200ms'
restart_after_crash = on
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

sub worker_pid
{
	return query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'");
}

# Wait until a worker other than $old_pid runs; survives the server
# restarting under us (plain connections, retried).
sub wait_for_worker
{
	my ($node, $old_pid) = @_;
	$old_pid = 0 if $old_pid eq '';
	return poll_across_crash($node, qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type = 'pg_ratelimit worker' AND pid <> $old_pid});
}

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('m', rpm => 100, tpm => 10000, rpd => 1000,
						   max_concurrent => 10, price_input => 2, price_output => 8);
	SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');
	CREATE TABLE held (lease_id bigint);
	INSERT INTO held SELECT lease_id FROM rl_acquire('m', tokens => 100, instance => 'w1');
	INSERT INTO held SELECT lease_id FROM rl_acquire('m', tokens => 100);
	INSERT INTO held SELECT lease_id FROM rl_acquire('m', tokens => 100);
});
query("SELECT rl_release(min(lease_id), input_tokens => 30, output_tokens => 20) FROM held");

my $status_sql = "SELECT requests_minute || ' ' || tokens_minute || ' ' || requests_day || ' ' "
  . "|| tokens_day || ' ' || in_flight || ' ' || granted || ' ' || cost_today FROM rl_status";
my $leases_sql = "SELECT string_agg(lease_id || ':' || tokens || ':' || coalesce(instance, '-'), ',' ORDER BY lease_id) FROM rl_leases";
my $usage_sql = "SELECT requests || ' ' || input_tokens || ' ' || output_tokens || ' ' || cost FROM rl_usage";
my $status = query($status_sql);
my $leases = query($leases_sql);
is($status, '3 250 3 250 2 3 0.00022', 'state before the restart');

# clean restart: nothing lost
$node->restart;
is(query($status_sql), $status, 'clean restart keeps the counters');
is(query($leases_sql), $leases, 'clean restart keeps the open leases');
is(query($usage_sql), '3 30 20 0.00022', 'daily usage is in rl_usage');
ok(query("SELECT rl_clock() BETWEEN '2030-01-01 00:00:05+00' AND '2030-01-01 00:00:50+00'"),
	'the test clock carries on from where it was');
is(query("SELECT released FROM rl_release((SELECT max(lease_id) FROM held), input_tokens => 100)"),
	't', 'a lease acquired before the restart releases after it');

# crash: what was saved survives, and what was granted since the last save
# is not forgotten: each window counts at least up to what was granted,
# and at most one headroom of its high-water mark more (1/16 of the limit:
# 7 requests of rpm 100, 625 tokens of tpm 10000, 1 of max_concurrent 10)
query("SELECT granted FROM rl_acquire('m', tokens => 1000)");
$node->poll_query_until('postgres',
	"SELECT requests_minute = 4 FROM rl_counter WHERE model = 'm'")
  or die 'the worker did not save';
$node->append_conf('postgresql.conf', "ratelimit.persist_interval = '1h'");
$node->reload;
# wait until the worker runs with the new interval, then change something
$node->poll_query_until('postgres', "SELECT setting = '3600000' FROM pg_settings WHERE name = 'ratelimit.persist_interval'");
sleep(1);
query("SELECT granted FROM rl_acquire('m', tokens => 7)");
is(query("SELECT requests_minute FROM rl_status"), '5', 'five requests before the crash');
my $crashed_pid = worker_pid();
kill 'KILL', $crashed_pid;
wait_for_worker($node, $crashed_pid) or die 'no worker after the crash';
is(query("SELECT requests_minute BETWEEN 5 AND 5 + 7 AND tokens_minute BETWEEN 1257 AND 1257 + 625
			AND in_flight BETWEEN 3 AND 3 + 1 FROM rl_status"),
	't', 'crash restart counts every grant, the unsaved one too, within one headroom');
like(slurp_file($node->logfile), qr/terminated by signal 9/, 'it was a crash');

# the worker comes back after being terminated
$node->append_conf('postgresql.conf', "ratelimit.persist_interval = '200ms'");
$node->reload;
my $old_pid = worker_pid();
query("SELECT pg_terminate_backend($old_pid)");
ok(wait_for_worker($node, $old_pid), 'the worker restarts after being terminated');

# a standby refuses to admit; the primary's state reaches it through the tables
$node->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'backup', has_streaming => 1);
$standby->start;
$node->wait_for_catchup($standby);
my ($ret, $stdout, $stderr) = $standby->psql('postgres', "SELECT rl_acquire('m')");
like($stderr, qr/pg_ratelimit cannot admit requests on a standby/, 'a standby refuses to admit');
is($standby->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'"),
	'0', 'no worker on a standby');
is($standby->safe_psql('postgres', "SELECT requests_minute FROM rl_counter WHERE model = 'm'"),
	query("SELECT requests_minute FROM rl_counter WHERE model = 'm'"), 'the saved state replicates');

# after promotion the worker starts and restores from the replicated tables
$node->stop;
$standby->promote;
wait_for_worker($standby, '') or die 'no worker after promotion';
is($standby->safe_psql('postgres', "SELECT granted FROM rl_acquire('m', tokens => 1)"), 't',
	'the promoted standby admits');
ok($standby->safe_psql('postgres', "SELECT requests_minute >= 5 AND in_flight >= 3 FROM rl_status"),
	'it started from the replicated state');

$standby->stop;
done_testing();
