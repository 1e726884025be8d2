# A wake-up of the worker that comes while its commit waits for a
# synchronous standby is not lost.  That wait (SyncRep) resets the worker's
# latch: a request for a new high-water mark made meanwhile used to wait for
# the worker's next timed round (the next save or minute boundary) instead of
# being served when the commit returned, so that under synchronous
# replication an acquire past a mark could wait up to persist_interval.
# Two acquires on a model whose marks move one request at a time (rpm 16):
# the first asks for a mark, which the worker commits while the standby is
# down; the second asks meanwhile.  When the standby is back the first is
# granted under the new mark, and the second must get the next one.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
# no timed round comes soon: a save and a move of ratios every hour, the
# next minute 50 s away (the test clock)
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.enable_test_clock = on
ratelimit.persist_interval = '1h'
ratelimit.ratio_interval = '1h'
search_path = 'public, ratelimit'
});
$primary->start;

sub query { return $primary->safe_psql('postgres', shift); }

query(q{
	CREATE EXTENSION pg_ratelimit;
	CREATE TABLE got (who text, granted boolean);
	SELECT rl_define_model('m', rpm => 16);
});

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;
$primary->append_conf('postgresql.conf', "synchronous_standby_names = 'standby'");
$primary->reload;
$primary->poll_query_until('postgres', "SELECT sync_state = 'sync' FROM pg_stat_replication")
  or die 'the standby is not synchronous';
query("SELECT rl_debug_set_clock('2030-01-01 00:00:10+00')");

# An acquire in a session of its own; the outcome goes to "got" (committed
# locally: it must not wait for the standby)
sub start_acquire
{
	my ($who, $max_wait) = @_;
	my $session = $primary->background_psql('postgres', on_error_stop => 0);
	$session->query_until(qr/started/, qq{SET synchronous_commit = local;
\\echo started
INSERT INTO got SELECT '$who', granted FROM rl_acquire('m', max_wait => '$max_wait');
});
	return $session;
}

# the standby is down: the worker's commits (synchronous_commit = on) wait
$standby->stop;

# the first acquire needs a mark: the worker saves one and waits in its commit
my $first = start_acquire('first', '40 s');
$primary->poll_query_until('postgres',
	"SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'")
  or die 'the worker does not wait for the standby';

# the second needs the next mark: its request wakes the worker while that waits
my $second = start_acquire('second', '40 s');
$primary->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM pg_stat_activity
	WHERE backend_type = 'client backend' AND wait_event_type = 'Extension'
	  AND query LIKE '%rl_acquire(''m''%'})
  or die 'the acquires do not wait for their marks';
is(query("SELECT wait_event FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'"),
	'SyncRep', 'the worker was still waiting for the standby');

# the standby is back: the worker's commit returns
$standby->start;
$primary->poll_query_until('postgres', "SELECT count(*) = 2 FROM got")
  or die 'the acquires did not return';
is(query("SELECT string_agg(who || ' ' || granted, ', ' ORDER BY who) FROM got"), 'first true, second true',
	'the mark requested while the worker waited in its commit was saved after it, not at its next timed round');
ok(query("SELECT rl_clock() < '2030-01-01 00:01:00+00'"), 'before the next minute boundary');

$first->quit;
$second->quit;
$standby->stop;
$primary->stop;
done_testing();
