# Many open leases.  Everything that looks at all of them (rl_leases,
# rl_instances, an instance's leases, the expiry sweep, saving, restoring)
# works in bounded batches, and saving writes only what changed: its reads
# of rl_lease_state do not grow with the leases that stay open.
#
# By default 80,000 leases: about eighty batches, and more than one round
# of the worker to save them (it inserts 64 batches a round).  With PG_TEST_EXTRA
# containing rl_many_leases: 5,000,000 leases with ratelimit.max_leases at
# its maximum of 10,000,000 (about 2.8 GB of shared memory, a few minutes):
# past the 4.8 million at which one array of all open leases went over
# PostgreSQL's 1 GB allocation limit.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $large = ($ENV{PG_TEST_EXTRA} // '') =~ /\brl_many_leases\b/;
my $n = $large ? 5_000_000 : 80_000;
my $max_leases = $large ? 10_000_000 : 100_000;
my $with_instance = $n * 3 / 5;
my $without = $n - $with_instance;

my $node = PostgreSQL::Test::Cluster->new('many_leases');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.enable_test_clock = on
ratelimit.max_leases = $max_leases
ratelimit.instance_timeout = '1h'
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('many');
	SELECT rl_debug_set_clock('2030-01-01 00:00:00+00');
	SELECT rl_heartbeat('inst');
});
is(query(qq{SELECT count(*) FROM generate_series(1, $with_instance)
			WHERE (rl_acquire('many', instance => 'inst', ttl => '1 hour')).granted}),
	$with_instance, "$with_instance leases of instance inst");
is(query(qq{SELECT count(*) FROM generate_series(1, $without)
			WHERE (rl_acquire('many', ttl => '1 hour')).granted}),
	$without, "$without leases without an instance");

is(query(q{SELECT count(*) || ' ' || count(DISTINCT lease_id) FROM rl_leases}), "$n $n",
	'rl_leases shows every lease once');
is(query("SELECT leases FROM rl_instances WHERE instance = 'inst'"), $with_instance,
	'rl_instances counts the leases of the instance');

# the saved table is the open leases
sub saved_equals_open
{
	my $what = shift;
	$node->poll_query_until('postgres', q{
		SELECT NOT EXISTS (SELECT FROM rl_lease_state s FULL JOIN rl_leases l USING (lease_id)
						   WHERE s.lease_id IS NULL OR l.lease_id IS NULL)})
	  or die "the saved leases are not the open ones $what";
	pass("the saved leases are the open ones $what");
}
saved_equals_open('after acquiring them');

# The saves that follow write one lease each: they read no table of all
# the leases (before, every save compared every row with every open lease)
sub lease_table_stats
{
	return query(q{SELECT n_tup_ins || ' ' || n_tup_del || ' ' || seq_tup_read
		FROM pg_stat_user_tables WHERE relname = 'rl_lease_state'});
}
# (each query is a new session: it sees the statistics flushed so far)
$node->poll_query_until('postgres', qq{SELECT n_tup_ins >= $n FROM pg_stat_user_tables WHERE relname = 'rl_lease_state'})
  or die 'the inserts were not counted';
my (undef, undef, $seq_read_before) = split / /, lease_table_stats();
foreach my $i (1 .. 3)
{
	my $id = query(q{SELECT lease_id FROM rl_acquire('many', ttl => '1 hour')});
	$node->poll_query_until('postgres',
		"SELECT EXISTS (SELECT FROM rl_lease_state WHERE lease_id = $id)")
	  or die "lease $i was not saved";
	query("SELECT rl_release($id)");
	$node->poll_query_until('postgres',
		"SELECT NOT EXISTS (SELECT FROM rl_lease_state WHERE lease_id = $id)")
	  or die "lease $i was not deleted";
}
$node->poll_query_until('postgres', q{SELECT n_tup_del >= 3 FROM pg_stat_user_tables WHERE relname = 'rl_lease_state'})
  or die 'the deletes were not counted';
my (undef, undef, $seq_read_after) = split / /, lease_table_stats();
cmp_ok($seq_read_after - $seq_read_before, '<', $n,
	'saving three leases, acquired and released one at a time, read fewer rows than are open');

# an instance that leaves takes its leases with it
query(q{SELECT rl_unregister('inst')});
is(query(q{SELECT in_flight || ' ' || expired FROM rl_status WHERE model = 'many'}),
	"$without $with_instance", 'the instance\'s leases expired');
is(query('SELECT count(*) FROM rl_leases'), $without, 'the others are open');
saved_equals_open('after the instance left');

# a clean restart restores them all, and does not write them again: after
# it, one more lease saved makes n + 4 rows inserted since the start
$node->restart;
is(query(q{SELECT count(*) || ' ' || count(DISTINCT lease_id) FROM rl_leases}),
	"$without $without", 'the open leases are restored');
my $id = query(q{SELECT lease_id FROM rl_acquire('many', ttl => '1 hour')});
$node->poll_query_until('postgres', "SELECT EXISTS (SELECT FROM rl_lease_state WHERE lease_id = $id)")
  or die 'the lease acquired after the restart was not saved';
my $expected = $n + 4;
$node->poll_query_until('postgres', qq{SELECT n_tup_ins >= $expected
	FROM pg_stat_user_tables WHERE relname = 'rl_lease_state'})
  or die 'the insert was not counted';
is((split / /, lease_table_stats())[0], $expected,
	'after the restart the worker saved the new lease, not the restored ones again');
query("SELECT rl_release($id)");
saved_equals_open('after the restart');

# all due at once: one sweep expires them, a batch at a time
query(q{SELECT rl_debug_set_clock('2030-01-01 02:00:00+00')});
is(query('SELECT count(*) FROM rl_leases'), '0', 'every lease expired');
is(query(q{SELECT in_flight || ' ' || expired FROM rl_status WHERE model = 'many'}),
	"0 $n", 'each expired once');
$node->poll_query_until('postgres', 'SELECT NOT EXISTS (SELECT FROM rl_lease_state)')
  or die 'the expired leases were not deleted';
pass('the expired leases were deleted from the saved table');

$node->stop;
done_testing();
