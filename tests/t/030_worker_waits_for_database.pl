# A server whose ratelimit.database does not exist yet: the launcher says so
# once in the log and waits, with no worker failing over and over (no FATAL
# storm); rl_worker, from another database, says it waits.  Once the
# database is created (with the extension) the worker connects at once and
# serves: a new model's first grants need high-water marks only the worker
# saves.  ALTER DATABASE ... ALLOW_CONNECTIONS false takes the worker off the
# database (after saving) and keeps it off, said once in the log, until
# connections are allowed again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

# every session finds the functions before and after their move to a schema
$ENV{PGOPTIONS} = '-c search_path=public,ratelimit';

my $node = PostgreSQL::Test::Cluster->new('waits_for_database');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.database = 'later'
ratelimit.persist_interval = '200ms'
});
$node->start;

sub query
{
	my ($db, $sql) = @_;
	return $node->safe_psql($db, $sql);
}

# The number of lines of the server log matching a pattern
sub log_lines
{
	my $pattern = shift;
	return scalar(grep { /$pattern/ } split(/\n/, slurp_file($node->logfile)));
}

# rl_worker is server-wide: it answers in any database with the extension
query('postgres', 'CREATE EXTENSION pg_ratelimit');
ok($node->poll_query_until('postgres',
		"SELECT state = 'waiting for database' FROM rl_worker"),
	'rl_worker says the launcher waits for the database');

# Five seconds without the database: the launcher looks again after 1, 2
# and 4 s, and says nothing more
sleep(5);
is(log_lines(qr/database "later" does not exist; pg_ratelimit waits for it/), 1,
	'one log line says that pg_ratelimit waits for the database');
is(log_lines(qr/FATAL/), 0, 'no FATAL in the log');
is(log_lines(qr/background worker "pg_ratelimit worker"/), 0,
	'no worker was started and failed');
is(query('postgres', q{
	SELECT (launcher_pid = (SELECT pid FROM pg_stat_activity
							WHERE backend_type = 'pg_ratelimit launcher'))
		   || ' ' || (worker_pid IS NULL) || ' ' || healthy || ' ' || database || ' '
		   || restarts || ' ' || (next_attempt_at > now() - interval '1 min')
	FROM rl_worker}),
	'true true false later 0 true',
	'rl_worker: the launcher runs, no worker, not healthy, the next look is due');
is(query('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'"),
	'0', 'no worker in pg_stat_activity');

# The database appears: the worker connects and serves
query('postgres', 'CREATE DATABASE later');
query('later', q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('m', rpm => 100);
});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker' AND datname = 'later'"),
	'the worker connects to the new database');
is(query('later', "SELECT count(*) FILTER (WHERE (rl_acquire('m', max_wait => '1 min')).granted) FROM generate_series(1, 3)"),
	'3', 'it serves: grants that need new high-water marks');
is(query('later', q{
	SELECT state || ' ' || (worker_pid = (SELECT pid FROM pg_stat_activity
										  WHERE backend_type = 'pg_ratelimit worker'))
	FROM rl_worker}),
	'running true', 'rl_worker: running, with the pid pg_stat_activity shows');
ok($node->poll_query_until('later', 'SELECT healthy FROM rl_worker'), 'and healthy');
is(log_lines(qr/FATAL/), 0, 'still no FATAL in the log');

# ALLOW_CONNECTIONS false: the worker saves, leaves and stays away
my $worker = query('later', 'SELECT worker_pid FROM rl_worker');
query('postgres', 'ALTER DATABASE later ALLOW_CONNECTIONS false');
is(query('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $worker"), '0',
	'ALLOW_CONNECTIONS false: the worker has left when the statement returns');
ok($node->poll_query_until('postgres',
		"SELECT state = 'waiting for connections' FROM rl_worker"),
	'rl_worker: waiting for connections');
sleep(3);
is(log_lines(qr/database "later" does not allow connections; pg_ratelimit waits until it does/), 1,
	'said once in the log');
is(query('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'"),
	'0', 'no worker meanwhile');

query('postgres', 'ALTER DATABASE later ALLOW_CONNECTIONS true');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker' AND datname = 'later'"),
	'connections allowed again: the worker is back');
is(query('later', "SELECT granted FROM rl_acquire('m', max_wait => '1 min')"), 't',
	'and serves');
is(query('later', 'SELECT restarts FROM rl_worker'), '0',
	'leaving when asked to is not a restart');

$node->stop;
is(log_lines(qr/FATAL/), 0, 'no FATAL in the whole log');
done_testing();
