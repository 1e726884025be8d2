# A call whose time has come never goes on while a lease due at that time
# still counts, also when another backend is sweeping expired leases with
# an older time.  Session A sweeps all the time (each of its acquires leaves
# a lease that is due a microsecond later, and 100,000 open leases make each
# sweep walk long); it is stopped with SIGSTOP, which almost always catches
# it inside a sweep that read the clock before it was moved.  The lease X
# that holds the only slot of a model is then due: an acquire on the model
# must be granted (before the fix it skipped the sweep in progress and was
# refused for concurrency), and releasing a lease whose time is up says
# released = false.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('sweep_race');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.enable_test_clock = on
ratelimit.max_leases = 200000
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('filler');
	SELECT rl_debug_set_clock('2030-01-01 00:00:00+00');
	CREATE TABLE got (round int, granted bool, limited_by text, released bool);
});
# an hour long: none of them expires during the test
is(query(q{SELECT count(*) FROM generate_series(1, 100000)
		   WHERE (rl_acquire('filler', ttl => '1 hour')).granted}),
	'100000', '100,000 open leases');

# A: acquire leases that are due a microsecond later, for ever
my $sweeper = $node->background_psql('postgres', on_error_stop => 0);
my $sweeper_pid = $sweeper->query_safe('SELECT pg_backend_pid()');
$sweeper->query_until(qr/started/, q{\echo started
DO $$ BEGIN LOOP PERFORM rl_acquire('filler', ttl => '1 microsecond'); END LOOP; END $$;
});
$node->poll_query_until('postgres',
	"SELECT expired > 10 FROM rl_status WHERE model = 'filler'")
  or die "A does not sweep";

foreach my $round (1 .. 3)
{
	my $model = "one_$round";
	my $base = sprintf('2030-01-01 00:%02d:00+00', 2 * $round);
	my $due = sprintf('2030-01-01 00:%02d:01+00', 2 * $round + 1);

	# X holds the only slot for 30 seconds; Y, on another model, as long
	query(qq{SELECT rl_debug_set_clock('$base');
			 SELECT rl_define_model('$model', max_concurrent => 1);
			 SELECT rl_define_model('${model}_y');});
	my $x = query(qq{SELECT lease_id FROM rl_acquire('$model', ttl => '30 s', max_wait => '10 s')});
	my $y = query(qq{SELECT lease_id FROM rl_acquire('${model}_y', ttl => '30 s')});
	isnt($x, '', "round $round: X granted");

	# stop A where it is, most likely sweeping with the old time; move on
	kill 'STOP', $sweeper_pid;
	query(qq{SELECT rl_debug_set_clock('$due')});

	my $b = $node->background_psql('postgres', on_error_stop => 0);
	my $b_pid = $b->query_safe('SELECT pg_backend_pid()');
	$b->query_until(qr/started/, qq{\\echo started
INSERT INTO got (round, granted, limited_by)
SELECT $round, granted, limited_by FROM rl_acquire('$model', ttl => '1 min');
});
	# B has its answer, or waits for a lock A holds
	$node->poll_query_until('postgres', qq{SELECT EXISTS (SELECT FROM got WHERE round = $round)
		OR EXISTS (SELECT FROM pg_stat_activity WHERE pid = $b_pid AND wait_event_type = 'LWLock')})
	  or die "round $round: B neither waits nor answers";
	kill 'CONT', $sweeper_pid;
	$node->poll_query_until('postgres', "SELECT EXISTS (SELECT FROM got WHERE round = $round)")
	  or die "round $round: B did not answer";
	$b->quit;

	is(query(qq{SELECT granted || ' ' || coalesce(limited_by, '-') FROM got WHERE round = $round}),
		'true -', "round $round: the slot of the due lease X is free");
	is(query(qq{SELECT released FROM rl_release($x)}), 'f',
		"round $round: releasing the expired lease X says released = false");
	is(query(qq{SELECT released FROM rl_release($y)}), 'f',
		"round $round: releasing the due lease Y says released = false");
	is(query(qq{SELECT count(*) FROM rl_leases WHERE lease_id IN ($x, $y)}), '0',
		"round $round: rl_leases shows neither");
	is(query(qq{SELECT in_flight || ' ' || expired FROM rl_status WHERE model = '${model}_y'}),
		'0 1', "round $round: Y expired, it was not settled");
}

query("SELECT pg_cancel_backend($sweeper_pid)");
$sweeper->quit;
$node->stop;
done_testing();
