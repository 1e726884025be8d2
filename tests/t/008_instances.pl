# Instances: a LISTENing client gets NOTIFY rl_allocation when an instance
# joins and when one goes stale; the stale instance's leases are expired;
# instances and the memory they count survive a clean restart; a memory
# slot freed on one model wakes a waiter of the instance on another.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('instances');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$node->append_conf('postgresql.conf', "ratelimit.enable_test_clock = on");
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('m', max_concurrent => 20);
	SELECT rl_define_job_type('chat', est_memory_kb => 100, ratio => 0.5);
	SELECT rl_debug_set_clock('2030-01-01 00:00:10+00');
});

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN rl_allocation');

# the rl_allocation payloads received so far, as "instances reason"
# (parsed by the server's own JSON parser)
sub received
{
	my $out = $listener->query_safe('SELECT 1');
	my @payloads = $out =~ /"rl_allocation" with payload "(.*)" received from server process/g;
	return map {
		my $literal = s/'/''/gr;
		query("SELECT j->>'instances' || ' ' || (j->>'reason') FROM (SELECT '$literal'::json AS j) s")
	} @payloads;
}

# wait until at least n notifications arrived; returns all of them
sub wait_for
{
	my $n = shift;
	my @got;
	foreach (1 .. 100)
	{
		push @got, received();
		last if @got >= $n;
		usleep(100_000);
	}
	return @got;
}

is(query(q{SELECT rl_heartbeat('a', 1000)}), '1', 'a joins');
is_deeply([ wait_for(1) ], [ '1 instances' ], 'the listener hears that one instance is live');
is(query(q{SELECT rl_heartbeat('b')}), '2', 'b joins');
is_deeply([ wait_for(1) ], [ '2 instances' ], 'and that two are');
is(query(q{SELECT rl_heartbeat('a', 1000)}), '2', 'a refreshes its heartbeat');

# b holds two leases; a holds its memory's worth of chat jobs:
# floor(1000 x 0.5 / 100) = 5 (chat's share of the model is 10)
query(q{
	SELECT granted FROM rl_acquire('m', 'chat', instance => 'b');
	SELECT granted FROM rl_acquire('m', 'chat', instance => 'b');
});
is(query(q{SELECT count(*) FILTER (WHERE (rl_acquire('m', 'chat', instance => 'a')).granted) FROM generate_series(1, 6)}),
	'5', "a's memory caps its chat jobs at 5");

# a clean restart keeps the instances and what counts against a's memory
$node->restart;
$listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN rl_allocation');
is(query(q{SELECT string_agg(instance || ' ' || coalesce(memory_kb::text, '-') || ' ' || leases, ', ' ORDER BY instance) FROM rl_instances}),
	'a 1000 5, b - 2', 'a clean restart keeps the instances and their leases');
is(query(q{SELECT limited_by FROM rl_acquire('m', 'chat', instance => 'a')}),
	'memory', "a's memory is still full after the restart");

# the cap spans models: a chat job of a waiting on model m2 is held back by
# a's memory, and starts as soon as a releases a chat job on model m
query(q{
	CREATE TABLE got (granted boolean, model text, at timestamptz);
	SELECT rl_define_model('m2', max_concurrent => 10);
});
is_deeply([ wait_for(1) ], [ '2 config' ], 'a new model is announced');
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->query_until(qr/started/, q{\echo started
INSERT INTO got SELECT granted, model, rl_clock() FROM rl_acquire('m2', 'chat', instance => 'a', max_wait => '1 min');
});
$node->poll_query_until('postgres', "SELECT waiting = 1 FROM rl_status WHERE model = 'm2'")
  or die 'the waiter did not queue';
query(q{SELECT rl_release(min(lease_id)) FROM rl_leases WHERE instance = 'a' AND model = 'm'});
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM got")
  or die 'the waiter was not woken';
# (not merely the worker waking every waiter at the next minute)
is(query(q{SELECT granted || ' ' || model || ' ' || (at < '2030-01-01 00:01:00+00') FROM got}),
	'true m2 true',
	'a memory slot freed on one model wakes a waiter of the same instance on another');
$waiter->quit;

# b stops sending heartbeats; a goes on.  Past instance_timeout (15 s) the
# worker drops b, expires its leases and tells the listeners.
query(q{SELECT rl_debug_set_clock('2030-01-01 00:00:20+00')});
query(q{SELECT rl_heartbeat('a', 1000)});
query(q{SELECT rl_debug_set_clock('2030-01-01 00:00:30+00')});
is_deeply([ wait_for(1) ], [ '1 instances' ], 'the listener hears that b went stale');
is(query(q{SELECT string_agg(instance, ',') FROM rl_instances}), 'a', 'b is gone');
is(query(q{SELECT count(*) FROM rl_leases WHERE instance = 'b'}), '0', "b's leases were expired");
is(query(q{SELECT expired FROM rl_status WHERE model = 'm'}), '2', 'counted as expiries');
is(query(q{SELECT pool_slots FROM rl_allocation('a') WHERE job_type IS NULL AND model = 'm'}), '20',
	'the allocation grows back: a has the whole pool');

# a configuration change is news too
query(q{SELECT rl_define_model('m', max_concurrent => 30)});
is_deeply([ wait_for(1) ], [ '1 config' ], 'a limit change is announced');

$node->stop;
done_testing();
