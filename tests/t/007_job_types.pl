# Job types and waiting: a job that does not fit its job type's share waits
# for the next window and starts right after it; a waiter held back only by
# its own share does not hold back other job types; rl_acquire_any with
# max_wait takes whichever model frees first; the worker moves flexible
# ratios every ratelimit.ratio_interval; a clean restart keeps ratios and
# counters.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('job_types');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$node->append_conf('postgresql.conf', "ratelimit.enable_test_clock = on");
$node->append_conf('postgresql.conf', "ratelimit.ratio_interval = '1h'");
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

# Start a session whose acquire blocks; it records the outcome in "got"
sub start_waiter
{
	my ($who, $call) = @_;
	my $session = $node->background_psql('postgres', on_error_stop => 0);
	$session->query_until(qr/started/, qq{\\echo started
INSERT INTO got SELECT '$who', granted, model, rl_clock() FROM $call;
});
	return $session;
}

# model 'jt': rpm 10.  'report' has ratio 0.2 (fixed): rpm share
# floor(10 x 0.2) = 2 jobs a minute.  'chat' has the rest, 0.8: 8 a minute.
query(q{
	CREATE EXTENSION pg_ratelimit;
	CREATE TABLE got (who text, granted boolean, model text, at timestamptz);
	SELECT rl_define_model('jt', rpm => 10);
	SELECT rl_define_job_type('report', ratio => 0.2, flexible => false);
	SELECT rl_define_job_type('chat');
	SELECT rl_debug_set_clock('2030-01-01 00:00:30+00');
});
is(query(q{SELECT count(*) FILTER (WHERE (rl_acquire('jt', 'report')).granted) FROM generate_series(1, 3)}),
	'2', 'report starts exactly its 2 jobs of the minute');

# the third report job waits for the next minute
my $report = start_waiter('report3', "rl_acquire('jt', 'report', max_wait => '3 min')");
$node->poll_query_until('postgres', "SELECT waiting = 1 FROM rl_job_status WHERE job_type = 'report'")
  or die 'the report job did not queue';

# it is held back by its own share only: chat jobs still start around it
is(query(q{SELECT count(*) FILTER (WHERE (rl_acquire('jt', 'chat')).granted) FROM generate_series(1, 3)}),
	'3', 'a waiter held back by its own share does not hold back another job type');

query(q{SELECT rl_debug_set_clock('2030-01-01 00:00:59.8+00')});
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM got")
  or die 'the report job was not admitted';
ok(query(q{SELECT granted AND at >= '2030-01-01 00:01:00+00' AND at < '2030-01-01 00:01:01+00' FROM got WHERE who = 'report3'}),
	'the waiting job starts right after the next window begins');
note('admitted ' . query(q{SELECT at - '2030-01-01 00:01:00+00' FROM got WHERE who = 'report3'}) . ' after the boundary');
$report->quit;

# a fixed job type keeps its full share while a flexible one is saturated
# and queued: chat (0.8 of rpm 10) starts its 8, two more chat jobs queue,
# and report (fixed 0.2) still starts both of its jobs at once
query(q{
	DELETE FROM got;
	SELECT rl_define_model('q', rpm => 10);
	SELECT rl_debug_set_clock('2030-01-01 00:03:10+00');
});
is(query(q{SELECT count(*) FILTER (WHERE (rl_acquire('q', 'chat')).granted) FROM generate_series(1, 8)}),
	'8', 'chat starts its 8 jobs of the minute');
my @queued = map { start_waiter("chat$_", "rl_acquire('q', 'chat', max_wait => '3 s')") } 1 .. 2;
$node->poll_query_until('postgres', "SELECT waiting = 2 FROM rl_job_status WHERE model = 'q' AND job_type = 'chat'")
  or die 'the chat jobs did not queue';
is(query(q{SELECT count(*) FILTER (WHERE (rl_acquire('q', 'report')).granted) FROM generate_series(1, 2)}),
	'2', 'the fixed job type starts its full share while the flexible one is queued');
$node->poll_query_until('postgres', "SELECT count(*) = 2 FROM got")
  or die 'the queued chat jobs did not time out';
is(query(q{SELECT count(*) FROM got WHERE granted}), '0', 'the queued chat jobs never took the fixed share');
$_->quit foreach @queued;

# rl_acquire_any with max_wait waits on all its models: the one that frees
# first wins, even when it is not the first listed.  'slow' frees at the next
# minute; 'fast' (concurrency 1) frees when its lease is released.
query(q{
	DELETE FROM got;
	SELECT rl_define_model('slow', rpm => 1);
	SELECT rl_define_model('fast', max_concurrent => 1);
	SELECT rl_debug_set_clock('2030-01-01 00:05:10+00');
	SELECT granted FROM rl_acquire('slow', 'chat');
	CREATE TABLE fast_lease AS SELECT lease_id FROM rl_acquire('fast', 'chat');
});
my $any = start_waiter('any', "rl_acquire_any('{slow,fast}', 'chat', max_wait => '3 min')");
$node->poll_query_until('postgres', "SELECT waiting = 1 FROM rl_status WHERE model = 'fast'")
  or die 'the rl_acquire_any call did not queue';
query(q{SELECT rl_release(lease_id) FROM fast_lease});
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM got")
  or die 'rl_acquire_any was not admitted';
is(query(q{SELECT granted || ' ' || model FROM got}), 'true fast', 'the model that frees first wins');
$any->quit;

# flexible ratios move every ratelimit.ratio_interval: 'chat' is refused
# (load 1), 'idle' has no load, 'report' is fixed.
#   idle gives min(0.4 - 0.01, 0.2) x (1 - 0) = 0.2; chat receives it
query(q{
	SELECT rl_define_job_type('chat', ratio => 0.4);
	SELECT rl_define_job_type('idle', ratio => 0.4);
	SELECT rl_define_model('flex', rpm => 100);
	SELECT rl_debug_set_clock('2030-01-01 00:10:10+00');
});
is(query(q{SELECT count(*) FILTER (WHERE (rl_acquire('flex', 'chat')).granted) FROM generate_series(1, 41)}),
	'40', 'chat starts its 40 jobs, the 41st is refused');
query(q{ALTER SYSTEM SET ratelimit.ratio_interval = '200ms'; SELECT pg_reload_conf();});
$node->poll_query_until('postgres', "SELECT ratio > 0.4 FROM rl_job_status WHERE model = 'flex' AND job_type = 'chat'")
  or die 'the ratios did not move';
query(q{ALTER SYSTEM SET ratelimit.ratio_interval = '1h'; SELECT pg_reload_conf();});
is(query(q{SELECT string_agg(job_type || ' ' || round(ratio::numeric, 2), ', ' ORDER BY job_type) FROM rl_job_status WHERE model = 'flex'}),
	'chat 0.60, idle 0.20, report 0.20', 'the idle flexible job type lent 0.2 to the loaded one, the fixed one kept its ratio');

# a clean restart keeps each job type's moved ratio and its window counters
$node->restart;
is(query(q{SELECT round(ratio::numeric, 2) || ' ' || requests_minute || ' ' || denied FROM rl_job_status WHERE model = 'flex' AND job_type = 'chat'}),
	'0.60 40 1', "a clean restart keeps a job type's ratio and counters");
is(query(q{SELECT requests FROM rl_usage WHERE model = 'flex' AND job_type = 'chat'}),
	'40', "and its part of the day's usage");
is(query(q{SELECT count(*) FILTER (WHERE (rl_acquire('flex', 'chat')).granted) FROM generate_series(1, 30)}),
	'20', 'after the restart chat starts only what is left of its share: 60 - 40 = 20');

$node->stop;
done_testing();
