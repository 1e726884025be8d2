# Shared memory is sized at server start from ratelimit.max_models,
# max_job_types and max_leases; when one is full the caller gets a clear
# error and nothing changes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('limits');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.max_models = 2
ratelimit.max_job_types = 1
ratelimit.max_leases = 16
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('a');
	SELECT rl_define_model('b');
	SELECT rl_define_job_type('j');
});

my ($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT rl_define_model('c')");
like($stderr, qr/ERROR:  too many pg_ratelimit models/, 'third model refused');
like($stderr, qr/ratelimit\.max_models is 2/, 'error names the setting');
is($node->safe_psql('postgres', 'SELECT count(*) FROM rl_model'), '2', 'table unchanged');

($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT rl_define_job_type('k')");
like($stderr, qr/ERROR:  too many pg_ratelimit job types/, 'second job type refused');

# redefining and replacing within the limit still works
$node->safe_psql('postgres', "SELECT rl_drop_model('b'); SELECT rl_define_model('c', rpm => 5)");
is($node->safe_psql('postgres', "SELECT string_agg(model, ',' ORDER BY model) FROM rl_status"),
	'a,c', 'a dropped slot is reused');

# leases: 16 fit, the 17th is an error (not a denial), a release makes room
$node->safe_psql('postgres', 'CREATE TABLE held AS SELECT * FROM rl_acquire(\'a\') LIMIT 0');
$node->safe_psql('postgres', "INSERT INTO held SELECT (g).* FROM (SELECT rl_acquire('a') AS g FROM generate_series(1, 16)) s");
is($node->safe_psql('postgres', 'SELECT count(*) FROM held WHERE granted'), '16', '16 leases granted');
($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT * FROM rl_acquire('a')");
like($stderr, qr/ERROR:  too many open pg_ratelimit leases/, '17th lease refused');
like($stderr, qr/ratelimit\.max_leases is 16/, 'error names the setting');
is($node->safe_psql('postgres', "SELECT requests_minute || ' ' || in_flight FROM rl_status WHERE model = 'a'"),
	'16 16', 'the refused acquire reserved nothing');
$node->safe_psql('postgres', 'SELECT rl_release(lease_id) FROM held LIMIT 1');
is($node->safe_psql('postgres', "SELECT granted FROM rl_acquire('a')"), 't', 'room again after a release');

$node->stop;
done_testing();
