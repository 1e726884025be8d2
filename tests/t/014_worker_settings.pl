# The worker does not depend on settings the owner of the database (or of
# its role) chose: with the database read-only by default, a statement and
# lock timeout of a millisecond, a serializable default and a search_path
# that names nothing, it still saves high-water marks and state, so
# acquires are still granted.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('worker_settings');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.persist_interval = '200ms'
});
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('m', rpm => 100, max_concurrent => 10);
	ALTER DATABASE postgres SET default_transaction_read_only = on;
	ALTER DATABASE postgres SET statement_timeout = '1ms';
	ALTER DATABASE postgres SET lock_timeout = '1ms';
	ALTER DATABASE postgres SET idle_in_transaction_session_timeout = '1ms';
	ALTER DATABASE postgres SET default_transaction_isolation = 'serializable';
	ALTER DATABASE postgres SET search_path = nowhere;
});
$node->restart;

# the test's own sessions undo the database's settings
$ENV{PGOPTIONS} = join(' ', '-c default_transaction_read_only=off', '-c statement_timeout=0',
	'-c lock_timeout=0', '-c idle_in_transaction_session_timeout=0',
	'-c default_transaction_isolation=read\ committed', '-c search_path=public,ratelimit');
sub query { return $node->safe_psql('postgres', shift); }

is(query("SELECT count(*) FILTER (WHERE (rl_acquire('m', max_wait => '1 min')).granted) FROM generate_series(1, 5)"),
	'5', 'acquires that need new high-water marks are granted');
ok($node->poll_query_until('postgres', "SELECT granted = 5 FROM rl_counter WHERE model = 'm'"),
	'the worker saves the counters');
ok(query("SELECT requests_minute >= 5 FROM rl_mark WHERE model = 'm'"), 'and the marks');
unlike(slurp_file($node->logfile), qr/read-only transaction|statement timeout|lock timeout/,
	'the worker ran into none of the settings');

$node->stop;
done_testing();
