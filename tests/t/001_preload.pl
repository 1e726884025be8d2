# Without shared_preload_libraries the extension installs, and every function
# raises a clear error; in a database other than ratelimit.database too.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('not_preloaded');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION pg_ratelimit');

my @calls = (
	"SELECT rl_acquire('m')",
	"SELECT rl_acquire_any(ARRAY['m'])",
	"SELECT rl_release(1)",
	"SELECT * FROM rl_capacity('m')",
	"SELECT * FROM rl_status",
	"SELECT * FROM rl_leases",
	"SELECT rl_debug_set_clock(NULL)",
	"SELECT rl_clock()",
	"SELECT rl_define_model('m', rpm => 1)",
	"SELECT rl_drop_model('m')",
	"SELECT rl_define_job_type('j')",
	"SELECT rl_drop_job_type('j')",
	"SELECT rl_set_max_wait('j', 'm', '1s')",
	"INSERT INTO rl_model (model) VALUES ('m')");
foreach my $sql (@calls)
{
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql);
	isnt($ret, 0, "fails without preloading: $sql");
	like($stderr, qr/pg_ratelimit must be loaded via shared_preload_libraries/,
		"says why: $sql");
}

# Preloaded, but used from a database other than ratelimit.database
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$node->append_conf('postgresql.conf', "ratelimit.database = 'limiter'");
$node->restart;
$node->safe_psql('postgres', 'CREATE DATABASE limiter');
my ($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT rl_acquire('m')");
isnt($ret, 0, 'refused outside ratelimit.database');
like($stderr, qr/pg_ratelimit is configured for database "limiter"/, 'names the database');

# Creating it there fails with the same message; in "limiter" it works
($ret, $stdout, $stderr) = $node->psql('postgres',
	'DROP EXTENSION pg_ratelimit; CREATE EXTENSION pg_ratelimit');
like($stderr, qr/configured for database "limiter"/, 'CREATE EXTENSION elsewhere is refused');
$node->safe_psql('limiter', 'CREATE EXTENSION pg_ratelimit');
is($node->safe_psql('limiter',
		"SELECT rl_define_model('m', rpm => 1); SELECT granted FROM rl_acquire('m')"),
	"\nt", 'works in ratelimit.database');

$node->stop;
done_testing();
