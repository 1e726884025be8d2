# Input and output token limits (itpm, otpm) over restarts and crashes:
# - a clean restart keeps each limit's usage and the output part of every
#   open lease's estimate, so that a release after it settles input and
#   output apart exactly as before it;
# - a crash fails closed for them too: what was granted after the last
#   save of the counters is covered by the high-water marks.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use CrashPoll;

my $node = PostgreSQL::Test::Cluster->new('io_limits');
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

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('io', tpm => 100000, itpm => 10000, otpm => 2000);
	SELECT rl_define_model('io_crash', itpm => 5000, otpm => 1000);
});

######################################################################
# A clean restart
######################################################################

# the minute has 58 s left for the restart
query(q{SELECT rl_debug_set_clock('2030-01-01 00:20:02+00')});
my $open = query(q{SELECT lease_id FROM rl_acquire('io', tokens => 3500, output_tokens => 500,
														ttl => '1 h')});
query(q{SELECT rl_release(lease_id, input_tokens => 800, output_tokens => 100)
		FROM rl_acquire('io', tokens => 1200, output_tokens => 200)});
is(query(q{SELECT input_tokens_minute || '/' || output_tokens_minute FROM rl_status WHERE model = 'io'}),
	'3800/600', 'before the restart: the open estimate and the settled usage');

$node->restart;
is(query(q{SELECT input_tokens_minute || '/' || output_tokens_minute || '/' || tokens_minute
			FROM rl_status WHERE model = 'io'}),
	'3800/600/4400', 'a clean restart keeps the usage of itpm, otpm and tpm');
is(query(qq{SELECT output_tokens FROM rl_lease_state WHERE lease_id = $open}), '500',
	'the open lease was saved with the output part of its estimate');

# settled apart: 1000 input (3000 reserved) and 100 output (500 reserved)
is(query(qq{SELECT released FROM rl_release($open, input_tokens => 1000, output_tokens => 100)}),
	't', 'the lease is released after the restart');
is(query(q{SELECT input_tokens_minute || '/' || output_tokens_minute FROM rl_status WHERE model = 'io'}),
	'1800/200', 'its release settles input and output apart, as before the restart');

######################################################################
# A crash fails closed
######################################################################

query(q{SELECT rl_debug_set_clock('2030-01-01 00:30:01+00')});
# four grants of 200 output tokens: only the marks know of them
is(query(q{SELECT count(*) FILTER (WHERE (rl_acquire('io_crash', tokens => 210, output_tokens => 200,
												  ttl => '1 h')).granted)
		   FROM generate_series(1, 4)}), '4', 'four grants before the crash');
my $worker = query(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'});
kill 'KILL', $worker;
poll_across_crash($node, qq{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'pg_ratelimit worker' AND pid <> $worker})
  or die 'no worker after the crash';
like(slurp_file($node->logfile), qr/terminated by signal 9/, 'it was a crash');
ok(query(q{SELECT output_tokens_minute FROM rl_status WHERE model = 'io_crash'}) >= 800,
	'after the crash otpm counts at least what was granted before it');
is(query(q{SELECT granted FROM rl_acquire('io_crash', tokens => 211, output_tokens => 201)}), 'f',
	'so what the four left of otpm is all it admits');

$node->stop;
done_testing();
