# rl_stats' counters never reset: the worker saves them in rl_counter with
# the model's other counters, and they come back after a clean restart and
# after a crash.  On a 1.0 schema (the library updated, ALTER EXTENSION ...
# UPDATE not yet run) the worker saves and restores without them; once
# updated, it saves them for every model.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use CrashPoll;

my $node = PostgreSQL::Test::Cluster->new('stats_persistence');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.persist_interval = '200ms'
restart_after_crash = on
});
$node->start;

# the functions may live in public or in ratelimit
$node->safe_psql('postgres', 'ALTER DATABASE postgres SET search_path = public, ratelimit');

sub query { return $node->safe_psql('postgres', shift); }

sub worker_pid
{
	return query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'");
}

# Wait until a worker other than $old_pid runs; survives the server
# restarting under us
sub wait_for_worker
{
	my $old_pid = shift || 0;
	return poll_across_crash($node, qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type = 'pg_ratelimit worker' AND pid <> $old_pid});
}

# every counter of rl_stats (since too) for a model, as one string
my $stats_sql = q{SELECT concat_ws(' ', granted, denied, denied_rpm, denied_tpm, denied_rpd,
	denied_tpd, denied_concurrency, denied_job_type, denied_memory, waits_granted,
	waits_timed_out, waits_cancelled, wait_seconds_granted, wait_seconds_timed_out,
	wait_seconds_cancelled, requests_total, input_tokens_total, output_tokens_total,
	cached_tokens_total, cost_total, expired, overage_events, overage_tokens, since)
	FROM rl_stats WHERE model = 'p'};

# the same from the saved row
my $saved_sql = q{SELECT concat_ws(' ', granted, denied, denied_rpm, denied_tpm, denied_rpd,
	denied_tpd, denied_concurrency, denied_job_type, denied_memory, waits_granted,
	waits_timed_out, waits_cancelled, wait_us_granted / 1e6::float8,
	wait_us_timed_out / 1e6::float8, wait_us_cancelled / 1e6::float8, requests_total,
	input_tokens_total, output_tokens_total, cached_tokens_total, cost_total, expired,
	overage_events, overage_tokens, stats_since)
	FROM rl_counter WHERE model = 'p'};

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('p', max_concurrent => 2,
						   price_input => 2, price_output => 8, price_cached => 1);
	SELECT rl_release((rl_acquire('p', tokens => 100)).lease_id,
					  input_tokens => 60, output_tokens => 70, cached_tokens => 5);
	SELECT granted FROM rl_acquire('p', tokens => 10);
	SELECT granted FROM rl_acquire('p', tokens => 10);
	SELECT granted FROM rl_acquire('p', tokens => 10);
	SELECT granted FROM rl_acquire('p', tokens => 10, max_wait => '100 ms');
});
my $stats = query($stats_sql);
like($stats, qr/^3 2 0 0 0 0 2 0 0 0 1 0 0 0\.\d+ 0 3 60 70 5 0\.000685 0 1 35 \d/,
	'counters before the restart: denials, a timed-out wait, totals, an overage');
$node->poll_query_until('postgres', "SELECT ($saved_sql) = (" . $stats_sql . ")")
  or die 'the worker did not save rl_stats';
pass('the worker saves them in rl_counter');

$node->restart;
is(query($stats_sql), $stats, 'a clean restart keeps every counter, and since');

# a crash keeps what was saved
query("SELECT granted FROM rl_acquire('p', max_wait => '100 ms')");
$stats = query($stats_sql);
$node->poll_query_until('postgres', "SELECT ($saved_sql) = (" . $stats_sql . ")")
  or die 'the worker did not save rl_stats';
my $crashed_pid = worker_pid();
kill 'KILL', $crashed_pid;
wait_for_worker($crashed_pid) or die 'no worker after the crash';
like(slurp_file($node->logfile), qr/terminated by signal 9/, 'it was a crash');
is(query($stats_sql), $stats, 'a crash restart keeps every saved counter');
is(query("SELECT denied || ' ' || denied_concurrency || ' ' || waits_timed_out
		  FROM rl_stats WHERE model = 'p'"), '3 3 2', 'the denial and the wait before the crash');

# A 1.0 schema: the worker saves without the columns of rl_stats
query(q{
	DROP EXTENSION pg_ratelimit;
	CREATE EXTENSION pg_ratelimit VERSION '1.0';
});
is(query("SELECT extversion FROM pg_extension WHERE extname = 'pg_ratelimit'"), '1.0',
	'the extension is at 1.0');
is(query("SELECT count(*) FROM pg_class WHERE relname = 'rl_stats'"), '0', 'without rl_stats');
# what the worker logged about the extension dropped under it is logged
# before it saves again
query("SELECT rl_define_model('q')");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM rl_counter WHERE model = 'q'")
  or die 'the worker did not save on 1.0';
my $log_offset = -s $node->logfile;
query(q{
	SELECT rl_define_model('p', max_concurrent => 1);
	SELECT granted FROM rl_acquire('p');
	SELECT granted FROM rl_acquire('p');
	SELECT granted FROM rl_acquire('p');
});
$node->poll_query_until('postgres', "SELECT denied = 2 FROM rl_counter WHERE model = 'p'")
  or die 'the worker did not save on 1.0';
pass('the worker saves on 1.0');
$node->restart;
is(query("SELECT granted || ' ' || denied FROM rl_status WHERE model = 'p'"), '1 2',
	'and restores on 1.0');
unlike(slurp_file($node->logfile, $log_offset), qr/ERROR|WARNING/, 'without errors or warnings');

# updated: the worker saves the counters of rl_stats, also of models that
# did not change since
query("ALTER EXTENSION pg_ratelimit UPDATE");
is(query("SELECT extversion FROM pg_extension WHERE extname = 'pg_ratelimit'"), '1.2',
	'the extension is at 1.2');
$node->poll_query_until('postgres',
	"SELECT stats_since IS NOT NULL FROM rl_counter WHERE model = 'p'")
  or die 'the worker did not save the counters of rl_stats after the update';
is(query("SELECT denied || ' ' || denied_rpm || ' ' || requests_total FROM rl_counter
		  WHERE model = 'p'"),
	'2 0 0', 'saved after the update: the breakdown counts since the restart');
query("SELECT granted FROM rl_acquire('p')");
$stats = query($stats_sql);
$node->poll_query_until('postgres', "SELECT ($saved_sql) = (" . $stats_sql . ")")
  or die 'the worker did not save rl_stats';
$node->restart;
is(query($stats_sql), $stats, 'and restores them');
is(query("SELECT denied || ' ' || denied_concurrency FROM rl_stats WHERE model = 'p'"), '3 1',
	'the denial after the update');
unlike(slurp_file($node->logfile, $log_offset), qr/ERROR|WARNING/, 'without errors or warnings');

$node->stop;
done_testing();
