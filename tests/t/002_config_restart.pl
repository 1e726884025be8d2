# The configuration tables are the source of truth: after a restart shared
# memory is rebuilt from them before anything is admitted, and a dropped and
# re-created extension starts from its (empty) tables.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('config_restart');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('openai/gpt-4o', rpm => 2, tpm => 1000, max_concurrent => 5);
	SELECT rl_define_job_type('chat', est_tokens => 400, est_requests => 1);
});

$node->restart;

# the first call after the restart loads the configuration
is($node->safe_psql('postgres',
		"SELECT granted FROM rl_acquire('openai/gpt-4o', job_type => 'chat')"),
	't', 'model and job type known after restart');
is($node->safe_psql('postgres',
		"SELECT rpm || ' ' || tpm || ' ' || max_concurrent || ' ' || tokens_minute FROM rl_status"),
	'2 1000 5 400', 'limits restored, job type estimate applied');
is($node->safe_psql('postgres',
		"SELECT granted FROM rl_acquire('openai/gpt-4o', tokens => 1)"),
	't', 'second request admitted');
is($node->safe_psql('postgres',
		"SELECT limited_by FROM rl_acquire('openai/gpt-4o', tokens => 1)"),
	'rpm', 'limits enforced after restart');

# a configuration change made right after a restart, before anything loaded,
# is applied whole at commit
$node->restart;
$node->safe_psql('postgres', "SELECT rl_define_model('anthropic/claude', rpm => 7)");
is($node->safe_psql('postgres', "SELECT string_agg(model || '=' || rpm, ',' ORDER BY model) FROM rl_status"),
	'anthropic/claude=7,openai/gpt-4o=2', 'both models present');

# DROP EXTENSION + CREATE EXTENSION starts from empty tables
$node->safe_psql('postgres', 'DROP EXTENSION pg_ratelimit; CREATE EXTENSION pg_ratelimit');
is($node->safe_psql('postgres', 'SELECT count(*) FROM rl_status'), '0',
	'a re-created extension has no models');
my ($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT rl_acquire('openai/gpt-4o')");
like($stderr, qr/model "openai\/gpt-4o" does not exist/, 'old models are gone');

$node->stop;
done_testing();
