# A dump of the served database restores into a database of another name:
# CREATE EXTENSION works there, the configuration tables are restored (their
# triggers leave shared memory alone there: it is the served database's),
# every function refuses with a clear error, and the served database goes on
# as before.  With ratelimit.database pointed at the restored database and a
# restart, it is served with the restored configuration.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

$ENV{PGOPTIONS} = '-c search_path=public,ratelimit';

my $node = PostgreSQL::Test::Cluster->new('restore_elsewhere');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.database = 'app'
});
$node->start;

sub query
{
	my ($db, $sql) = @_;
	return $node->safe_psql($db, $sql);
}

# The error of a statement (with its SQLSTATE), or '' when it succeeds
sub error_of
{
	my ($db, $sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql($db, "\\set VERBOSITY verbose\n$sql");
	return $ret == 0 ? '' : $stderr;
}

my $models_sql = q{SELECT string_agg(model || '=' || coalesce(rpm::text, '-'), ',' ORDER BY model) FROM rl_status};

query('postgres', 'CREATE DATABASE app');
query('app', q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('gpt', rpm => 100, tpm => 10000);
	SELECT rl_define_model('claude', max_concurrent => 5);
	SELECT rl_define_job_type('chat', est_tokens => 50, ratio => 0.5);
	SELECT rl_set_max_wait('chat', 'gpt', '5 s');
});
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'")
  or die 'no worker';

my $dump = $node->basedir . '/app.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', 'app' ], 'pg_dump of the served database');
query('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '-d', 'restored', $dump ],
	'pg_restore into a database of another name (CREATE EXTENSION included)');
is(query('restored', q{
	SELECT (SELECT string_agg(model || '=' || coalesce(rpm::text, '-'), ',' ORDER BY model) FROM rl_model)
		   || ' ' || (SELECT string_agg(job_type || '=' || ratio, ',') FROM rl_job_type)
		   || ' ' || (SELECT count(*) FROM rl_job_type_wait)}),
	'claude=-,gpt=100 chat=0.5 1', 'the configuration tables are restored');

# Functions refuse there, clearly
foreach my $sql (
	"SELECT rl_acquire('gpt')",
	"SELECT rl_acquire_any(ARRAY['gpt'])",
	"SELECT rl_release(1)",
	"SELECT * FROM rl_capacity('gpt')",
	"SELECT * FROM rl_status",
	"SELECT * FROM rl_job_status",
	"SELECT * FROM rl_leases",
	"SELECT * FROM rl_instances",
	"SELECT rl_heartbeat('i')",
	"SELECT rl_unregister('i')",
	"SELECT * FROM rl_allocation('i')",
	"SELECT rl_clock()",
	"SELECT rl_debug_set_clock(NULL)",
	"SELECT rl_define_model('x', rpm => 1)",
	"SELECT rl_drop_model('gpt')",
	"SELECT rl_define_job_type('j')",
	"SELECT rl_set_max_wait('chat', 'gpt', '1 s')",
	"SELECT rl_drop_job_type('chat')")
{
	like(error_of('restored', $sql),
		qr/ERROR:  55000: pg_ratelimit is configured for database "app", not "restored".*DETAIL:  The limiter keeps the state of one database in shared memory.*HINT:  Use pg_ratelimit in database "app", or set ratelimit.database = 'restored'/s,
		"refused with 55000, the served database and the way to move: $sql");
}

# Its triggers do nothing to shared memory: changes there do not reach the
# served database's limiter
query('restored', q{
	INSERT INTO rl_model (model, rpm) VALUES ('only_restored', 7);
	UPDATE rl_model SET rpm = 1 WHERE model = 'gpt';
	DELETE FROM rl_model WHERE model = 'claude';
});
is(query('app', $models_sql), 'claude=-,gpt=100', 'the served database is untouched');
is(query('app', "SELECT granted FROM rl_acquire('gpt')"), 't', 'and serves as before');

# Moving: ratelimit.database = 'restored' and a restart
$node->append_conf('postgresql.conf', "ratelimit.database = 'restored'");
$node->restart;
$node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'pg_ratelimit worker' AND datname = 'restored'})
  or die 'no worker in restored';
is(query('restored', $models_sql), 'gpt=1,only_restored=7',
	'the restored database is served with its configuration');
is(query('restored', "SELECT granted FROM rl_acquire('only_restored', max_wait => '1 min')"), 't',
	'and grants');
is(query('restored', "SELECT ratio FROM rl_job_status WHERE model = 'gpt' AND job_type = 'chat'"),
	'0.5', 'with the restored job type');
like(error_of('app', "SELECT rl_acquire('gpt')"),
	qr/configured for database "restored", not "app"/, 'and the old one is refused now');

$node->stop;
done_testing();
