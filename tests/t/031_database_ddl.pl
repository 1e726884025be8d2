# Statements that need the served database without other sessions work
# without FORCE and without the operator doing anything: the worker saves its
# state, as at a clean stop, and leaves before they run, and comes back after
# them when the database is (still) there.
# - CREATE DATABASE ... TEMPLATE: the copy holds the state as it was just
#   before (the save interval is an hour: only leaving saved it), and the
#   worker reconnects afterwards;
# - ALTER DATABASE ... SET TABLESPACE: the same;
# - a role that may not run the statement does not make the worker leave;
# - CREATE DATABASE ... TEMPLATE from inside the served database;
# - a rolled-back savepoint (or exception block) gives the worker back at
#   once, and a prepared transaction cannot keep it away;
# - statements that fail anyway (ALLOW_CONNECTIONS false from inside) leave
#   it be;
# - ALTER DATABASE ... RENAME: the worker waits for the old name; with
#   ratelimit.database set to the new name and a restart, the configuration,
#   counters and open leases are all there;
# - DROP DATABASE: the worker saved its state first, then the launcher waits
#   for the database (said once); created again with the extension, it is
#   served again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

$ENV{PGOPTIONS} = '-c search_path=public,ratelimit';

my $node = PostgreSQL::Test::Cluster->new('database_ddl');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.database = 'app'
ratelimit.persist_interval = '1h'
ratelimit.enable_test_clock = on
max_prepared_transactions = 2
});
$node->start;

sub query
{
	my ($db, $sql) = @_;
	return $node->safe_psql($db, $sql);
}

# The number of lines of the server log matching a pattern, from an offset
sub log_lines
{
	my ($pattern, $offset) = @_;
	return scalar(grep { /$pattern/ } split(/\n/, slurp_file($node->logfile, $offset // 0)));
}

# The pid of the worker connected to a database, once there is one
sub wait_for_worker
{
	my ($db, $old_pid) = @_;
	$old_pid //= 0;
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type = 'pg_ratelimit worker' AND datname = '$db' AND pid <> $old_pid})
	  or die "no worker in $db";
	return query('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'");
}

query('postgres', 'CREATE EXTENSION pg_ratelimit');
query('postgres', 'CREATE DATABASE app');
query('app', 'CREATE EXTENSION pg_ratelimit');
my $worker = wait_for_worker('app');
# its first round (which saves everything) is over before the model exists
$node->poll_query_until('app', 'SELECT persist_rounds >= 1 FROM rl_worker')
  or die 'no first round';
# counters are checked in the day window: the test clock's day lasts
query('app', q{
	SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');
	SELECT rl_define_model('m', rpm => 100, max_concurrent => 10);
	SELECT rl_define_job_type('chat', est_tokens => 10);
	SELECT count(*) FILTER (WHERE (rl_acquire('m', 'chat', ttl => '1 h')).granted)
	FROM generate_series(1, 3);
});
is(query('app', "SELECT count(*) FROM rl_counter WHERE model = 'm' AND requests_day > 0"), '0',
	'nothing saved yet: the save interval is an hour');

######################################################################
# CREATE DATABASE ... TEMPLATE
######################################################################

query('postgres', 'CREATE DATABASE copy TEMPLATE app');
pass('CREATE DATABASE copy TEMPLATE app succeeds');
is(query('copy', "SELECT requests_day || ' ' || tokens_day FROM rl_counter WHERE model = 'm'"),
	'3 30', 'the copy holds the counters: the worker saved them before leaving');
is(query('copy', 'SELECT count(*) FROM rl_lease_state'), '3', 'and the open leases');
$worker = wait_for_worker('app', $worker);
pass('the worker reconnects afterwards');
is(query('app', "SELECT granted FROM rl_acquire('m', max_wait => '1 min')"), 't', 'and serves');
is(log_lines(qr/pg_ratelimit worker saved its state and left database "app"/), 1,
	'the log says it saved and left');

######################################################################
# ALTER DATABASE ... SET TABLESPACE
######################################################################

my $location = PostgreSQL::Test::Utils::tempdir();
query('postgres', "CREATE TABLESPACE elsewhere LOCATION '$location'");
query('postgres', 'ALTER DATABASE app SET TABLESPACE elsewhere');
is(query('postgres', "SELECT spcname FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE datname = 'app'"),
	'elsewhere', 'ALTER DATABASE app SET TABLESPACE succeeds');
$worker = wait_for_worker('app', $worker);
is(query('app', "SELECT granted FROM rl_acquire('m', max_wait => '1 min')"), 't',
	'the worker is back and serves');

######################################################################
# Only a role that may run the statement makes the worker leave
######################################################################

query('postgres', 'CREATE ROLE intruder LOGIN');
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE app',
	extra_params => [ '-U', 'intruder' ]);
like($stderr, qr/must be owner of database app/, 'a role that does not own the database cannot drop it');
($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE DATABASE mine TEMPLATE app',
	extra_params => [ '-U', 'intruder' ]);
like($stderr, qr/permission denied to create database/, 'nor copy it');
is(query('postgres', 'SELECT worker_pid || state || restarts FROM rl_worker'), "${worker}running0",
	'and the worker stayed');

# The owner of the database without CREATEDB may not rename it
query('postgres', 'CREATE ROLE keeper LOGIN NOCREATEDB; ALTER DATABASE app OWNER TO keeper');
($ret, $stdout, $stderr) = $node->psql('postgres', 'ALTER DATABASE app RENAME TO kept',
	extra_params => [ '-U', 'keeper' ]);
like($stderr, qr/permission denied to rename database/,
	'the owner without CREATEDB cannot rename the database');
is(query('postgres', 'SELECT worker_pid || state || restarts FROM rl_worker'), "${worker}running0",
	'and the worker stayed');
query('postgres', 'ALTER DATABASE app OWNER TO CURRENT_USER');

######################################################################
# CREATE DATABASE ... TEMPLATE from the served database itself
######################################################################

query('app', 'CREATE DATABASE copy_from_inside TEMPLATE app');
is(query('copy_from_inside', 'SELECT count(*) FROM rl_model'), '1',
	'CREATE DATABASE ... TEMPLATE app succeeds from a session connected to app');
$worker = wait_for_worker('app', $worker);
pass('and the worker reconnects');

######################################################################
# Savepoints and prepared transactions
######################################################################

# In one session: the rename in a savepoint makes the worker leave; rolled
# back, the worker comes back while the transaction is still open
is(query('postgres', qq{
	BEGIN;
	SAVEPOINT s;
	ALTER DATABASE app RENAME TO app_for_a_moment;
	SELECT worker_pid IS NULL FROM rl_worker;
	ROLLBACK TO s;
	DO \$\$
	BEGIN
		FOR i IN 1..600 LOOP
			EXIT WHEN (SELECT worker_pid IS NOT NULL AND worker_pid <> $worker FROM rl_worker);
			PERFORM pg_sleep(0.1);
		END LOOP;
	END
	\$\$;
	SELECT worker_pid IS NOT NULL AND worker_pid <> $worker FROM rl_worker;
	COMMIT;
}), "t\nt", 'a rename rolled back to its savepoint lets the worker back before the transaction ends');
$worker = wait_for_worker('app', $worker);

($ret, $stdout, $stderr) = $node->psql('postgres', q{
	BEGIN;
	ALTER DATABASE app RENAME TO app_prepared;
	PREPARE TRANSACTION 'rename';
});
like($stderr, qr/cannot PREPARE a transaction that made the pg_ratelimit worker leave database "app"/,
	'PREPARE TRANSACTION after a rename fails');
is(query('postgres', q{SELECT (SELECT count(*) FROM pg_prepared_xacts) || ' '
	|| (SELECT count(*) FROM pg_database WHERE datname = 'app')}), '0 1',
	'nothing is prepared and the database keeps its name');
$worker = wait_for_worker('app', $worker);
pass('and the worker comes back');

# A rename undone by a PL/pgSQL exception block gives the worker back too,
# and the transaction can then be prepared
is(query('postgres', qq{
	BEGIN;
	DO \$\$
	BEGIN
		ALTER DATABASE app RENAME TO app_in_a_block;
		RAISE EXCEPTION 'undo';
	EXCEPTION WHEN raise_exception THEN
		NULL;
	END
	\$\$;
	DO \$\$
	BEGIN
		FOR i IN 1..600 LOOP
			EXIT WHEN (SELECT worker_pid IS NOT NULL AND worker_pid <> $worker FROM rl_worker);
			PERFORM pg_sleep(0.1);
		END LOOP;
	END
	\$\$;
	SELECT worker_pid IS NOT NULL AND worker_pid <> $worker FROM rl_worker;
	PREPARE TRANSACTION 'after_the_block';
	COMMIT PREPARED 'after_the_block';
}), 't', 'a rename caught in an exception block lets the worker back, and PREPARE works after it');
$worker = wait_for_worker('app', $worker);

# ALTER DATABASE ... ALLOW_CONNECTIONS false from inside the database fails
# in PostgreSQL: it does not make the worker leave
($ret, $stdout, $stderr) = $node->psql('app', 'ALTER DATABASE app ALLOW_CONNECTIONS false');
like($stderr, qr/cannot disallow connections for current database/,
	'ALLOW_CONNECTIONS false is refused from inside the database');
is(query('postgres', 'SELECT worker_pid FROM rl_worker'), $worker, 'and the worker stayed');

######################################################################
# ALTER DATABASE ... RENAME, then ratelimit.database = the new name
######################################################################

query('app', "SELECT rl_acquire('m', 'chat', ttl => '1 h')");
is(query('app', 'SELECT count(*) FROM rl_leases'), '6', 'six open leases');
my $log_offset = -s $node->logfile;
query('postgres', 'ALTER DATABASE app RENAME TO app_renamed');
pass('ALTER DATABASE app RENAME TO app_renamed succeeds');
ok($node->poll_query_until('postgres', "SELECT state = 'waiting for database' FROM rl_worker"),
	'the launcher waits for a database named app');
is(log_lines(qr/database "app" does not exist; pg_ratelimit waits for it/, $log_offset), 1,
	'said once');
($ret, $stdout, $stderr) = $node->psql('app_renamed', "SELECT rl_acquire('m')");
like($stderr, qr/pg_ratelimit is configured for database "app", not "app_renamed"/,
	'the renamed database is not served until the setting follows');

$node->append_conf('postgresql.conf', "ratelimit.database = 'app_renamed'");
$node->restart;
$worker = wait_for_worker('app_renamed');
is(query('app_renamed', q{
	SELECT string_agg(model || ' rpm=' || rpm || ' requests=' || requests_day
					  || ' tokens=' || tokens_day || ' in_flight=' || in_flight, ', ')
	FROM rl_status}),
	'm rpm=100 requests=6 tokens=40 in_flight=6',
	'after the restart: configuration and counters are there');
is(query('app_renamed', "SELECT count(*) || ' ' || count(*) FILTER (WHERE job_type = 'chat') FROM rl_leases"),
	'6 4', 'and the open leases');
is(query('app_renamed', 'SELECT count(*) FROM rl_job_type'), '1', 'and the job type');

######################################################################
# DROP DATABASE
######################################################################

query('app_renamed', "SELECT rl_acquire('m')");
my $rounds = query('postgres', 'SELECT persist_rounds FROM rl_worker');
query('postgres', 'DROP DATABASE app_renamed');
pass('DROP DATABASE succeeds without FORCE');
is(query('postgres', "SELECT persist_rounds > $rounds AND last_persist_rows > 0 FROM rl_worker"),
	't', 'the worker saved its state first');
is(log_lines(qr/pg_ratelimit worker saved its state and left database "app_renamed"/), 1,
	'the log says it saved and left');
ok($node->poll_query_until('postgres', "SELECT state = 'waiting for database' FROM rl_worker"),
	'the launcher waits for the database');
is(log_lines(qr/database "app_renamed" does not exist; pg_ratelimit waits for it/), 1, 'said once');
is(log_lines(qr/FATAL/), 0, 'no FATAL in the log');

query('postgres', 'CREATE DATABASE app_renamed');
query('app_renamed', q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('n', rpm => 10);
});
$worker = wait_for_worker('app_renamed');
is(query('app_renamed', "SELECT granted FROM rl_acquire('n', max_wait => '1 min')"), 't',
	'created again: served again');
is(query('app_renamed', 'SELECT restarts FROM rl_worker'), '0',
	'none of this counted as a restart');

$node->stop;
done_testing();
