# A crash or a failover fails closed: whatever was granted before it, the
# window of the crash never admits more than rpm, tpm or max_concurrent in
# all (an overage charged just before it included).  Bursts of grants come right after the worker saved its counters, so
# none of them is in the saved counters; a backend is then killed with
# SIGKILL (shared memory is reset), and the test keeps acquiring in the same
# minute until refused.  Concurrency includes a lease that was saved,
# released, and whose slot went to a lease granted after the save, and
# hundreds of forgotten leases, which must not fill the lease table; a
# lease of a week holds the lease horizon only while unsaved.  The
# pessimism is bounded: a window is restored at most one headroom (1/16 of
# the limit) above what was granted, and an idle model comes back exactly.
# Then the same across a promotion of a synchronous standby.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use CrashPoll;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.enable_test_clock = on
ratelimit.persist_interval = '5s'
ratelimit.instance_timeout = '1h'
ratelimit.max_lease_ttl = '7d'
restart_after_crash = on
});
$primary->start;

sub query { my ($node, $sql) = @_; return $node->safe_psql('postgres', $sql); }

# Acquire n times; the number granted.  Leases are kept (not released).
# $sure: the acquires are expected to be granted, so they may wait (for new
# high-water marks on a busy machine) rather than be refused.
sub grants
{
	my ($node, $model, $n, $extra, $sure) = @_;
	$extra //= '';
	$extra .= ", max_wait => '1 min'" if $sure;
	return query($node, "SELECT count(*) FILTER (WHERE (rl_acquire('$model'$extra)).granted)"
		  . " FROM generate_series(1, $n)");
}

# Wait until the worker has saved after the call (it saves only what
# changed: a grant on the model 'tick' is something to save): a burst that
# follows comes right after a save, so none of it is in the saved counters
sub wait_for_next_save
{
	my $node = shift;
	my $ticks = query($node, "SELECT requests_minute FROM rl_status WHERE model = 'tick'");
	query($node, "SELECT rl_acquire('tick')");
	$node->poll_query_until('postgres',
		"SELECT requests_minute > $ticks FROM rl_counter WHERE model = 'tick'")
	  or die 'the worker did not save';
}

sub wait_for_worker
{
	my ($node, $old_pid) = @_;
	$old_pid = 0 if $old_pid eq '';
	poll_across_crash($node, qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type = 'pg_ratelimit worker' AND pid <> $old_pid})
	  or die 'no pg_ratelimit worker';
}

query($primary, q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('rpm', rpm => 100);
	SELECT rl_define_model('tpm', tpm => 1000);
	SELECT rl_define_model('conc', max_concurrent => 10);
	SELECT rl_define_model('reuse', max_concurrent => 2);
	SELECT rl_define_model('idle', rpm => 100, max_concurrent => 5);
	SELECT rl_define_model('wide', max_concurrent => 1000000);
	SELECT rl_define_model('long', max_concurrent => 3);
	SELECT rl_define_model('over', tpm => 1000);
	SELECT rl_define_model('tick');
});

######################################################################
# Crash
######################################################################

# a lease of a week (ratelimit.max_lease_ttl allows that here): the marks'
# lease horizon covers it while it is not saved, and comes down once it is
# released and saved
query($primary, "SELECT rl_release((rl_acquire('long', ttl => '7 days')).lease_id)");
ok(query($primary, "SELECT lease_horizon > rl_clock() + interval '6 days' FROM rl_mark WHERE model = 'long'"),
	'a lease of a week was granted under a horizon that covers it');
$primary->poll_query_until('postgres',
	"SELECT lease_horizon < rl_clock() + interval '1 day' FROM rl_mark WHERE model = 'long'")
  or die 'the lease horizon did not come down';
pass('the horizon comes down once that lease is gone');

# one minute of the limiter's clock for the whole crash, with room to spare
query($primary, "SELECT rl_debug_set_clock(date_trunc('minute', now()) + interval '1 minute 1 second')");
my $minute = query($primary, "SELECT date_trunc('minute', rl_clock())");

# traffic that the worker saves
is(grants($primary, 'rpm', 20, '', 1), '20', 'rpm: 20 granted and saved');
is(grants($primary, 'tpm', 20, ', tokens => 10', 1), '20', 'tpm: 200 tokens granted and saved');
is(grants($primary, 'conc', 3, '', 1), '3', 'conc: 3 leases granted and saved');
is(grants($primary, 'idle', 4, '', 1), '4', 'idle: 4 granted, then nothing');
query($primary, "SELECT rl_heartbeat('i1')");
my $reused = query($primary, "SELECT lease_id FROM rl_acquire('reuse', instance => 'i1')");

# overage charged by releases: a mark soon covers it
is(query($primary, q{
	SELECT count(*) FILTER (WHERE (rl_release((rl_acquire('over', tokens => 100)).lease_id,
											  input_tokens => 100, output_tokens => 100)).released)
	FROM generate_series(1, 5)}), '5', 'over: 5 leases of 100 tokens released with 200 each');
$primary->poll_query_until('postgres', "SELECT tokens_minute >= 1000 FROM rl_mark WHERE model = 'over'")
  or die 'no mark covers the overage';
$primary->poll_query_until('postgres', qq{
	SELECT (SELECT requests_minute FROM rl_counter WHERE model = 'rpm') = 20
	   AND (SELECT tokens_minute FROM rl_counter WHERE model = 'tpm') = 200
	   AND (SELECT count(*) FROM rl_lease_state WHERE model = 'conc') = 3
	   AND EXISTS (SELECT FROM rl_lease_state WHERE lease_id = $reused)
	   AND EXISTS (SELECT FROM rl_instance_state WHERE instance = 'i1')
	   AND (SELECT requests_minute = 4 AND in_flight = 4 FROM rl_mark WHERE model = 'idle')})
  or die 'the worker did not save the traffic, nor bring the idle model\'s marks down';

# right after a save: bursts that no save sees.  The saved lease of 'reuse'
# is released and both its slots go to new leases.
wait_for_next_save($primary);
my $burst = query($primary, qq{
	SELECT (SELECT count(*) FILTER (WHERE (rl_acquire('rpm', max_wait => '1 min')).granted) FROM generate_series(1, 30))
		|| ' ' || (SELECT count(*) FILTER (WHERE (rl_acquire('tpm', tokens => 10, max_wait => '1 min')).granted)
				   FROM generate_series(1, 30))
		|| ' ' || (SELECT count(*) FILTER (WHERE (rl_acquire('conc', max_wait => '1 min')).granted)
				   FROM generate_series(1, 5))
		|| ' ' || (SELECT released FROM rl_release($reused))
		|| ' ' || (SELECT count(*) FILTER (WHERE (rl_acquire('reuse', max_wait => '1 min')).granted)
				   FROM generate_series(1, 2))
		|| ' ' || (SELECT count(*) FILTER (WHERE (rl_acquire('wide', max_wait => '1 min')).granted)
				   FROM generate_series(1, 300));
});
is($burst, '30 30 5 true 2 300', 'the bursts are granted');
is(query($primary, q{
	SELECT string_agg(model || ' ' || requests_minute || ' ' || tokens_minute, ', ' ORDER BY model)
	FROM rl_counter WHERE model IN ('rpm', 'tpm')}),
	'rpm 20 0, tpm 20 200', 'no save has the bursts');

# SIGKILL a backend: the postmaster resets shared memory
my $doomed = $primary->background_psql('postgres');
my $doomed_pid = $doomed->query_safe('SELECT pg_backend_pid()');
my $worker_pid = query($primary,
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'");
kill 'KILL', $doomed_pid;
wait_for_worker($primary, $worker_pid);
eval { $doomed->quit; };
like(slurp_file($primary->logfile), qr/terminated by signal 9/, 'it was a crash');
is(query($primary, "SELECT date_trunc('minute', rl_clock())"), $minute,
	'still the minute of the crash');

# the window of the crash: never more than the limits in all
my $status = query($primary, q{
	SELECT string_agg(model || ' ' || requests_minute || ' ' || tokens_minute || ' ' || in_flight,
					  ', ' ORDER BY model) FROM rl_status});
note("restored: $status");
ok(query($primary, "SELECT requests_minute BETWEEN 50 AND 50 + 7 FROM rl_status WHERE model = 'rpm'"),
	'rpm: restored with every grant counted, at most one headroom (7) more');
ok(query($primary, "SELECT tokens_minute BETWEEN 500 AND 500 + 63 FROM rl_status WHERE model = 'tpm'"),
	'tpm: restored with every grant counted, at most one headroom (63) more');
my $more = grants($primary, 'rpm', 100);
ok(50 + $more <= 100, "rpm: 50 before the crash + $more after <= 100");
$more = grants($primary, 'tpm', 100, ', tokens => 10');
ok(500 + 10 * $more <= 1000, "tpm: 500 tokens before the crash + " . 10 * $more . " after <= 1000");
is(query($primary, "SELECT in_flight BETWEEN 8 AND 8 + 1 FROM rl_status WHERE model = 'conc'"), 't',
	'max_concurrent: restored with every lease counted, at most one headroom (1) more');
$more = grants($primary, 'conc', 20);
ok(8 + $more <= 10, "max_concurrent: 8 leases held across the crash + $more after <= 10");

# the saved lease of 'reuse' was released before the crash and its slot
# reused: when it ends now (its instance leaves), it keeps its slot
query($primary, "SELECT rl_unregister('i1')");
is(query($primary, "SELECT count(*) FROM rl_leases WHERE model = 'reuse'"),
	'0', 'the restored lease of reuse ended');
is(grants($primary, 'reuse', 1), '0',
	'max_concurrent: a restored lease whose slot was reused keeps it after it ends');

# the slots of leases the crash forgot are held as a count, not as leases:
# 300 of them do not fill the lease table
is(query($primary, q{SELECT in_flight >= 300 FROM rl_status WHERE model = 'wide'}), 't',
	'wide: the 300 leases granted after the save are counted in flight');
is(query($primary, q{SELECT count(*) FROM rl_leases WHERE model = 'wide'}), '0',
	'wide: and take no room in the lease table');

# the overage reported before the crash is not forgotten
is(grants($primary, 'over', 1, ', tokens => 100'), '0',
	'tpm: the overage charged before the crash still counts');

# an idle model comes back exactly: no capacity lost
is(query($primary, "SELECT requests_minute || ' ' || in_flight FROM rl_status WHERE model = 'idle'"),
	'4 4', 'an idle model is restored exactly');
is(grants($primary, 'idle', 1, '', 1) . grants($primary, 'idle', 1), '10',
	'and its last free slot is there, and then none');

######################################################################
# Failover to a synchronous standby
######################################################################

query($primary, q{
	SELECT rl_define_model('fo_rpm', rpm => 100);
	SELECT rl_define_model('fo_conc', max_concurrent => 10);
});
$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;
$primary->append_conf('postgresql.conf', "synchronous_standby_names = '*'");
$primary->reload;
$primary->poll_query_until('postgres',
	"SELECT sync_state = 'sync' FROM pg_stat_replication")
  or die 'the standby is not synchronous';

query($primary, "SELECT rl_debug_set_clock(date_trunc('minute', now()) + interval '2 minutes 1 second')");
$minute = query($primary, "SELECT date_trunc('minute', rl_clock())");
is(grants($primary, 'fo_rpm', 20, '', 1), '20', 'failover: 20 granted');
wait_for_next_save($primary);
wait_for_next_save($primary);
is(query($primary, q{
	SELECT (SELECT count(*) FILTER (WHERE (rl_acquire('fo_rpm', max_wait => '1 min')).granted) FROM generate_series(1, 40))
		|| ' ' || (SELECT count(*) FILTER (WHERE (rl_acquire('fo_conc', max_wait => '1 min')).granted)
				   FROM generate_series(1, 6))}),
	'40 6', 'failover: a burst right after a save');

$primary->stop('immediate');
$standby->promote;
wait_for_worker($standby, '');
is(query($standby, "SELECT date_trunc('minute', rl_clock())"), $minute,
	'failover: still the minute of the burst');
$more = grants($standby, 'fo_rpm', 100);
ok(60 + $more <= 100, "failover rpm: 60 before + $more after <= 100");
$more = grants($standby, 'fo_conc', 20);
ok(6 + $more <= 10, "failover max_concurrent: 6 held + $more after <= 10");

$standby->stop;
done_testing();
