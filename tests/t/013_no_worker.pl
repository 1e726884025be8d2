# Without a worker nothing can be granted past a high-water mark, and so
# nothing at all on a new model: the request fits the limits, waits for a
# mark that never comes, and is refused (fail closed) naming the limit, with
# retry_after one second, counted as a denial, and said in the server log.
# Reading the state and releasing need no worker.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('no_worker');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
# no background worker can register: the limiter's worker does not run
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
max_worker_processes = 0
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('m', rpm => 10);
});
is(query("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'"),
	'0', 'no worker runs');

is(query(q{SELECT granted || ' ' || limited_by || ' ' || (retry_after BETWEEN '0.5 s' AND '1 s')
		   FROM rl_acquire('m')}),
	'false rpm true', 'a request that fits the limits is refused without a new mark');
is(query("SELECT requests_minute || ' ' || denied FROM rl_status"), '0 1',
	'nothing was reserved, and the refusal counts as a denial');
like(slurp_file($node->logfile),
	qr/refused a request that fits the limits of model "m": no new high-water mark was saved in time/,
	'the server log says why');

$node->stop;
done_testing();
