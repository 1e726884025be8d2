# Bucket models (window_type => 'bucket') where timing and restarts matter:
# - a caller waiting in the server is granted as soon as the bucket holds
#   its request, long before the minute ends (max_wait is shorter than the
#   time to the boundary);
# - a listener hears NOTIFY rl_capacity with reason "refill" when the bucket
#   holds what it refused;
# - a clean restart keeps the bucket's state (saved with refilled_at): an
#   emptied bucket stays empty, less what refilled meanwhile; so does a job
#   type's share of it;
# - a crash fails closed: what was granted after the last save of the
#   counters is covered by the marks, so admissions over the crash stay
#   within what the bucket allowed (capacity plus refill over the time).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time);
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use CrashPoll;

my $node = PostgreSQL::Test::Cluster->new('bucket');
$node->init;
$node->append_conf('postgresql.conf', qq{
search_path = 'public, ratelimit'
shared_preload_libraries = 'pg_ratelimit'
ratelimit.enable_test_clock = on
ratelimit.persist_interval = '1h'
restart_after_crash = on
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

# How many of n acquires on a model are granted (no waiting)
sub take
{
	my ($model, $n) = @_;
	return query(qq{SELECT count(*) FILTER (WHERE (rl_acquire('$model', ttl => '1 h')).granted)
					FROM generate_series(1, $n)});
}

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('wait', rpm => 60, window_type => 'bucket');
	SELECT rl_define_model('durable', rpm => 60, window_type => 'bucket');
	SELECT rl_define_model('crash', rpm => 60, window_type => 'bucket');
	SELECT rl_define_model('shared', rpm => 120, window_type => 'bucket');
	SELECT rl_define_job_type('half', ratio => 0.5, flexible => false);
});

######################################################################
# Waiting in the server, and the refill notification
######################################################################

# 59 s to the end of the minute; the waiter may wait 20 s
query(q{SELECT rl_debug_set_clock('2030-01-01 00:00:01+00')});
is(take('wait', 61), '60', 'a full bucket admits its capacity, then refuses');

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN rl_capacity');

is(query(q{SELECT granted FROM rl_acquire('wait', max_wait => '20 s')}), 't',
	'a caller waiting in the server is granted when the bucket holds its request, before the minute ends');
is(query(q{SELECT waits_granted FROM rl_stats WHERE model = 'wait'}), '1',
	'it waited: one wait granted');

my $heard = 0;
for (1 .. 100)
{
	my $out = $listener->query_safe('SELECT 1');
	if ($out =~ /with payload "\{"model": "wait", "reason": "refill"/)
	{
		$heard = 1;
		last;
	}
	select(undef, undef, undef, 0.1);
}
ok($heard, 'a listener hears reason "refill" when the bucket holds what it refused');
$listener->quit;

######################################################################
# A clean restart keeps the bucket's state
######################################################################

query(q{SELECT rl_debug_set_clock('2030-01-01 00:05:00+00')});
is(take('durable', 60), '60', 'the bucket is emptied');
$node->restart;
my $after = query(q{SELECT requests_minute FROM rl_status WHERE model = 'durable'});
ok($after >= 40 && $after <= 60,
	"after a clean restart the bucket is still nearly empty (lacks $after of 60)");
is(query(q{SELECT refilled_at IS NOT NULL FROM rl_counter WHERE model = 'durable'}), 't',
	'its saved usage says when it is as of');
ok(take('durable', 61) < 30, 'and it admits only what refilled, not a full bucket');

# a job type's share: half of rpm 120, a bucket of 60 refilling one a second
query(q{SELECT rl_debug_set_clock('2030-01-01 00:07:00+00')});
is(query(q{SELECT count(*) FILTER (WHERE (rl_acquire('shared', 'half', ttl => '1 h')).granted)
		   FROM generate_series(1, 61)}), '60', 'the job type empties its share');
$node->restart;
my $share_after = query(q{SELECT requests_minute FROM rl_job_status
						  WHERE model = 'shared' AND job_type = 'half'});
ok($share_after >= 40 && $share_after <= 60,
	"after a clean restart its share is still nearly empty (lacks $share_after of 60)");
my $share_granted = query(q{SELECT count(*) FILTER (WHERE (rl_acquire('shared', 'half')).granted)
							FROM generate_series(1, 61)});
ok($share_granted < 30, "the job type gets only what refilled ($share_granted), not a full share");
ok(take('shared', 61) >= 55, 'while the rest of the model stays open to calls without it');

######################################################################
# A crash fails closed
######################################################################

# the counters are saved every hour: only the marks know of these grants
query(q{SELECT rl_debug_set_clock('2030-01-01 00:10:00+00')});
my $start = time();
my $before_crash = take('crash', 40);
is($before_crash, '40', '40 granted before the crash');
# a backend killed: the server resets shared memory and restores
my $worker = query(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'});
kill 'KILL', $worker;
poll_across_crash($node, qq{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'pg_ratelimit worker' AND pid <> $worker})
  or die 'no worker after the crash';
like(slurp_file($node->logfile), qr/terminated by signal 9/, 'it was a crash');
my $after_crash = take('crash', 61);
my $elapsed = time() - $start;

# the bucket allowed its capacity and one request a second since
my $allowed = 60 + int($elapsed) + 1;
ok($before_crash + $after_crash <= $allowed,
	"over the crash: $before_crash + $after_crash granted, within the $allowed the bucket allowed in "
	  . sprintf('%.1f', $elapsed) . ' s');
ok($after_crash < 60, 'the restored bucket was not full');

$node->stop;
done_testing();
