# Configuration changes that bypass the ordinary trigger path still reach
# shared memory, never leaving it silently stale: changes made with
# session_replication_role = replica apply at their commit (the triggers are
# ENABLE ALWAYS); changes made while the triggers are disabled (ALTER TABLE
# ... DISABLE TRIGGER ALL, as pg_restore --disable-triggers does) are picked
# up by the worker within a few seconds; a real pg_dump / pg_restore
# --data-only --disable-triggers round trip restores the models (and the
# README's statements put the triggers back to ENABLE ALWAYS); an open
# configuration transaction keeps no acquire waiting for a re-read; a change
# made while the worker was away is applied when it is back; and logical
# replication into the configuration tables applies the rows copied at
# subscription start and every later change.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('config_bypass');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$node->append_conf('postgresql.conf', "ratelimit.enable_test_clock = on");
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

# The output of a query, or its error message
sub answer
{
	my ($node, $sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql);
	return $ret == 0 ? $stdout : $stderr;
}

# Run SQL; returns (stdout, stderr)
sub run_sql
{
	my ($node, $sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql);
	return ($stdout, $stderr);
}

sub models_sql
{
	my $like = shift // '%';
	return "SELECT coalesce(string_agg(model || '=' || coalesce(rpm::text, '-'), ',' ORDER BY model), '')"
	  . " FROM rl_status WHERE model LIKE '$like'";
}

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('base', rpm => 10);
	SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');
});
# shared memory is loaded before anything bypasses the trigger
is(query(models_sql()), 'base=10', 'configuration loaded');

######################################################################
# (a) session_replication_role = replica: applied at commit
######################################################################

query(q{
	SET session_replication_role = replica;
	SELECT rl_define_model('r1', rpm => 2);
});
is(query(models_sql()), 'base=10,r1=2', 'replica role: a defined model is in rl_status at once');
is(answer($node, "SELECT granted FROM rl_acquire('r1', tokens => 1)"), 't',
	'replica role: and admits at once');

query(q{
	SET session_replication_role = replica;
	UPDATE rl_model SET rpm = 1 WHERE model = 'r1';
});
is(query(models_sql()), 'base=10,r1=1', 'replica role: an UPDATE of the table is in rl_status at once');
is(answer($node, "SELECT limited_by FROM rl_acquire('r1', tokens => 1)"), 'rpm',
	'replica role: and its lower rpm is enforced at once');

query(q{
	BEGIN;
	SET LOCAL session_replication_role = replica;
	INSERT INTO rl_model (model, rpm) VALUES ('r2', 3);
	DELETE FROM rl_model WHERE model = 'r1';
	COMMIT;
});
is(query(models_sql()), 'base=10,r2=3',
	'replica role: an INSERT and a DELETE in one transaction apply at its commit');
my ($out, $err) = run_sql($node, "SELECT granted FROM rl_acquire('r1')");
like($err, qr/model "r1" does not exist/, 'replica role: the deleted model is gone');
query(q{
	SET session_replication_role = replica;
	DELETE FROM rl_model WHERE model = 'r2';
});
is(query(models_sql()), 'base=10', 'replica role: a DELETE alone applies at commit');

######################################################################
# (b) triggers disabled: the worker picks the change up
######################################################################

query(q{
	ALTER TABLE rl_model DISABLE TRIGGER ALL;
	INSERT INTO rl_model (model, rpm) VALUES ('d1', 7);
	ALTER TABLE rl_model ENABLE TRIGGER ALL;
});
ok($node->poll_query_until('postgres', models_sql('d%'), 'd1=7'),
	'a row inserted while the triggers were disabled reaches rl_status');
is(answer($node, "SELECT granted FROM rl_acquire('d1', tokens => 1)"), 't', 'and admits');

# the triggers stay disabled while the changes are made
query('ALTER TABLE rl_model DISABLE TRIGGER ALL');
query("UPDATE rl_model SET rpm = 4 WHERE model = 'd1'");
ok($node->poll_query_until('postgres', models_sql('d%'), 'd1=4'),
	'an UPDATE made while the triggers stay disabled reaches rl_status');
query("INSERT INTO rl_model (model, rpm) VALUES ('d2', 5)");
ok($node->poll_query_until('postgres', models_sql('d%'), 'd1=4,d2=5'),
	'an INSERT made while the triggers stay disabled reaches rl_status');
query("DELETE FROM rl_model WHERE model = 'd1'");
ok($node->poll_query_until('postgres', models_sql('d%'), 'd2=5'),
	'a DELETE made while the triggers stay disabled reaches rl_status');
($out, $err) = run_sql($node, "SELECT granted FROM rl_acquire('d1')");
like($err, qr/model "d1" does not exist/, 'the deleted model is gone');
query('ALTER TABLE rl_model ENABLE TRIGGER ALL');

query('ALTER TABLE rl_job_type DISABLE TRIGGER ALL');
query("INSERT INTO rl_job_type (job_type, est_tokens, ratio) VALUES ('dj', 10, 0.5)");
query('ALTER TABLE rl_job_type ENABLE TRIGGER ALL');
ok($node->poll_query_until('postgres',
		"SELECT string_agg(model || '/' || job_type || '/' || ratio, ',' ORDER BY model) FROM rl_job_status",
		'base/dj/0.5,d2/dj/0.5'),
	'a job type inserted while the triggers were disabled reaches rl_job_status');
query("DELETE FROM rl_model WHERE model = 'd2'; DELETE FROM rl_job_type WHERE job_type = 'dj'");

######################################################################
# (c) pg_dump, then pg_restore --data-only --disable-triggers
######################################################################

query(q{
	SELECT rl_define_model('p1', rpm => 6);
	SELECT rl_define_model('p2', rpm => 8);
	SELECT rl_define_job_type('pj', est_tokens => 10);
	SELECT rl_set_max_wait('pj', 'p1', '2s');
});
my $dump = $node->basedir . '/config.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', 'postgres' ], 'pg_dump');
query('DELETE FROM rl_job_type_wait; DELETE FROM rl_job_type; DELETE FROM rl_model');
is(query(models_sql()), '', 'the models are removed');
$node->command_ok(
	[ 'pg_restore', '--data-only', '--disable-triggers', '-d', 'postgres', $dump ],
	'pg_restore --data-only --disable-triggers');
is(query('SELECT count(*) FROM rl_model'), '3', 'the dump restored the rows');
ok($node->poll_query_until('postgres', models_sql(), 'base=10,p1=6,p2=8'),
	'the restored models reach rl_status');
ok($node->poll_query_until('postgres',
		"SELECT string_agg(model || '/' || job_type, ',' ORDER BY model) FROM rl_job_status",
		'base/pj,p1/pj,p2/pj'),
	'the restored job type reaches rl_job_status');
is(answer($node, "SELECT granted FROM rl_acquire('p1', tokens => 1)"), 't', 'a restored model admits');

# pg_restore --disable-triggers ends with ENABLE TRIGGER ALL, which leaves
# the triggers firing on origin only: the worker reads the tables every
# round and says so until, as the README says, they are ENABLE ALWAYS again
ok($node->poll_query_until('postgres', qq{SELECT pg_read_file('} . $node->logfile
		  . qq{') ~ 'configuration triggers are not ENABLE ALWAYS'}),
	'the worker warns that the triggers are not ENABLE ALWAYS');
query(q{
	ALTER TABLE rl_model ENABLE ALWAYS TRIGGER rl_model_changed,
		ENABLE ALWAYS TRIGGER rl_model_truncated;
	ALTER TABLE rl_job_type ENABLE ALWAYS TRIGGER rl_job_type_changed,
		ENABLE ALWAYS TRIGGER rl_job_type_truncated;
	ALTER TABLE rl_job_type_wait ENABLE ALWAYS TRIGGER rl_job_type_wait_changed,
		ENABLE ALWAYS TRIGGER rl_job_type_wait_truncated;
});
is(query(q{SELECT string_agg(DISTINCT tgenabled::text, ',') FROM pg_trigger
		   WHERE tgname LIKE 'rl\_%'}),
	'A', "the README's statements make them ENABLE ALWAYS again");

######################################################################
# (e) an open configuration transaction keeps no acquire waiting
######################################################################

# a trigger change asks the worker to read the tables again while a
# configuration transaction holds the lock: the worker tries again later,
# and acquires do not wait for it
my $open = $node->background_psql('postgres');
$open->query_safe("BEGIN; SELECT rl_define_model('pending', rpm => 1)");
query('ALTER TABLE rl_job_type_wait ENABLE ALWAYS TRIGGER rl_job_type_wait_changed');
is(answer($node, "SET statement_timeout = '5s'; SELECT granted FROM rl_acquire('base', tokens => 1)"),
	't', 'an acquire does not wait for an open configuration transaction');
$open->query_safe('ROLLBACK');
$open->quit;

######################################################################
# (f) a change behind the triggers' back while no worker runs
######################################################################

my $worker = query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'");
query(qq{
	SELECT pg_terminate_backend($worker);
	BEGIN;
	ALTER TABLE rl_model DISABLE TRIGGER ALL;
	UPDATE rl_model SET rpm = 77 WHERE model = 'base';
	ALTER TABLE rl_model ENABLE ALWAYS TRIGGER rl_model_changed,
		ENABLE ALWAYS TRIGGER rl_model_truncated;
	COMMIT;
});
ok($node->poll_query_until('postgres', models_sql('base'), 'base=77'),
	'a change made while the worker was away reaches rl_status when it is back');

######################################################################
# (d) logical replication into the configuration tables
######################################################################

my $publisher = PostgreSQL::Test::Cluster->new('publisher');
$publisher->init(allows_streaming => 'logical');
$publisher->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$publisher->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$publisher->start;
$publisher->safe_psql('postgres', q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('pub1', rpm => 5);
	SELECT rl_define_job_type('pubj', est_tokens => 10);
	SELECT rl_set_max_wait('pubj', 'pub1', '1s');
	CREATE PUBLICATION rl_config FOR TABLE rl_model, rl_job_type, rl_job_type_wait;
});

my $pub_connstr = $publisher->connstr . ' dbname=postgres';
query("CREATE SUBSCRIPTION rl_config CONNECTION '$pub_connstr' PUBLICATION rl_config");

# the rows copied at subscription start
ok($node->poll_query_until('postgres',
		"SELECT string_agg(model, ',') FROM rl_model WHERE model LIKE 'pub%'", 'pub1'),
	'logical replication: the subscription copies the rows into rl_model');
ok($node->poll_query_until('postgres', models_sql('pub%'), 'pub1=5'),
	'logical replication: the model copied at subscription start reaches rl_status');
ok($node->poll_query_until('postgres',
		"SELECT count(*) FROM rl_job_status WHERE job_type = 'pubj'", '4'),
	'logical replication: the job type copied at subscription start reaches rl_job_status');
is(answer($node, "SELECT granted FROM rl_acquire('pub1', tokens => 1)"), 't',
	'logical replication: the copied model admits');

# later changes on the publisher
$publisher->safe_psql('postgres', "SELECT rl_define_model('pub2', rpm => 3)");
ok($node->poll_query_until('postgres', models_sql('pub%'), 'pub1=5,pub2=3'),
	'logical replication: a model defined on the publisher reaches rl_status');
$publisher->safe_psql('postgres', "SELECT rl_define_model('pub1', rpm => 9)");
ok($node->poll_query_until('postgres', models_sql('pub%'), 'pub1=9,pub2=3'),
	'logical replication: a changed limit reaches rl_status');
$publisher->safe_psql('postgres', "SELECT rl_drop_model('pub1')");
ok($node->poll_query_until('postgres', models_sql('pub%'), 'pub2=3'),
	'logical replication: a model dropped on the publisher leaves rl_status');
($out, $err) = run_sql($node, "SELECT granted FROM rl_acquire('pub1')");
like($err, qr/model "pub1" does not exist/, 'logical replication: the dropped model is gone');
is(answer($node, "SELECT granted FROM rl_acquire('pub2', tokens => 1)"), 't',
	'logical replication: the new model admits');

query('DROP SUBSCRIPTION rl_config');
$publisher->stop;
$node->stop;
done_testing();
