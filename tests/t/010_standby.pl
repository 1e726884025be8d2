# Standbys and promotion: a standby never treats its shared memory as
# authoritative.  Its views re-read the configuration and saved state as
# replayed so far (and say, in a NOTICE, that they are on a standby), even
# after a first read before the primary changed anything; every function that
# changes the limiter's state refuses with 25006; and after promotion the
# first use works from the configuration and saved state committed at that
# point: a model added since is known, a changed limit is the one enforced, a
# dropped model is gone.  Twice: a second standby, made from the promoted
# server, is promoted after more changes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Run SQL with verbose errors (the SQLSTATE is shown as "ERROR:  25006: ...");
# returns (stdout, stderr).
sub run_sql
{
	my ($node, $sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return ($stdout, $stderr);
}

# Call acquire n times in the current minute; the number granted
sub grants
{
	my ($node, $model, $n) = @_;
	my ($ret, $out) = $node->psql('postgres',
		join("\n", map { "SELECT granted FROM rl_acquire('$model', tokens => 1);" } 1 .. $n),
		on_error_stop => 0);
	return scalar(grep { $_ eq 't' } split(/\n/, $out));
}

# Wait until the pg_ratelimit worker runs on the node
sub wait_for_worker
{
	my $node = shift;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'")
	  or die 'no pg_ratelimit worker on ' . $node->name;
}

my $models_sql = "SELECT string_agg(model || '=' || coalesce(rpm::text, '-'), ',' ORDER BY model) FROM rl_status";

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.enable_test_clock = on
ratelimit.persist_interval = '200ms'
});
$primary->start;
$primary->safe_psql('postgres', q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('m1', rpm => 10);
	SELECT rl_define_job_type('chat', est_tokens => 10);
	SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');
});

$primary->backup('backup1');
my $standby1 = PostgreSQL::Test::Cluster->new('standby1');
$standby1->init_from_backup($primary, 'backup1', has_streaming => 1);
$standby1->start;
$primary->wait_for_catchup($standby1);

######################################################################
# The reproduction: the standby reads rl_status before anything changes
######################################################################

my ($out, $err) = run_sql($standby1, $models_sql);
is($out, 'm1=10', 'the standby reads the replicated configuration');
like($err, qr/NOTICE:  .*standby/, 'and says that it is on a standby');

# on the primary: m1's rpm lowered, m2 defined, a lease and an instance
# saved by the worker
$primary->safe_psql('postgres', q{
	SELECT rl_define_model('m1', rpm => 3);
	SELECT rl_define_model('m2', rpm => 5);
	SELECT rl_heartbeat('w1');
});
my $lease = $primary->safe_psql('postgres',
	"SELECT lease_id FROM rl_acquire('m1', job_type => 'chat', instance => 'w1')");
$primary->poll_query_until('postgres',
	"SELECT EXISTS (SELECT FROM rl_lease_state WHERE lease_id = $lease)"
	  . " AND EXISTS (SELECT FROM rl_instance_state WHERE instance = 'w1')")
  or die 'the worker did not save the lease and the instance';
$primary->wait_for_catchup($standby1);

# the standby's views follow the replayed tables
($out, $err) = run_sql($standby1, $models_sql);
is($out, 'm1=3,m2=5', 'standby rl_status shows the changed rpm and the new model');
like($err, qr/NOTICE:  .*standby/, 'rl_status on a standby raises the NOTICE');
($out, $err) = run_sql($standby1,
	"SELECT string_agg(model || '/' || job_type, ',' ORDER BY model) FROM rl_job_status");
is($out, 'm1/chat,m2/chat', 'standby rl_job_status shows the new model');
like($err, qr/NOTICE:  .*standby/, 'rl_job_status on a standby raises the NOTICE');
($out, $err) = run_sql($standby1, "SELECT lease_id || ' ' || model || ' ' || instance FROM rl_leases");
is($out, "$lease m1 w1", 'standby rl_leases shows the lease saved on the primary');
like($err, qr/NOTICE:  .*standby/, 'rl_leases on a standby raises the NOTICE');
($out, $err) = run_sql($standby1, "SELECT string_agg(instance, ',') FROM rl_instances");
is($out, 'w1', 'standby rl_instances shows the instance saved on the primary');
like($err, qr/NOTICE:  .*standby/, 'rl_instances on a standby raises the NOTICE');
($out, $err) = run_sql($standby1, "SELECT limit_value FROM rl_capacity('m1') WHERE dimension = 'rpm'");
is($out, '3', 'standby rl_capacity shows the changed rpm');
like($err, qr/NOTICE:  .*standby/, 'rl_capacity on a standby raises the NOTICE');
($out, $err) = run_sql($standby1, q{SET search_path = public, ratelimit;
	SELECT state || ' ' || healthy || ' ' || (launcher_pid IS NULL) || ' ' || (worker_pid IS NULL)
	FROM rl_worker});
is($out, 'standby true true true', 'standby rl_worker: no launcher, no worker, as it should be');

######################################################################
# Everything that changes the state refuses on a standby with 25006
######################################################################

foreach my $call (
	"rl_acquire('m1')",
	"rl_acquire_any(ARRAY['m1', 'm2'])",
	"rl_release($lease, input_tokens => 5)",
	"rl_heartbeat('w2')",
	"rl_unregister('w1')",
	"rl_observe('m1', '{\"retry-after\": \"60\"}', 429)",
	"rl_debug_set_clock('2030-01-01 00:30:00+00')",
	"rl_define_model('mx', rpm => 1)",
	"rl_drop_model('m1')",
	"rl_define_job_type('batch')",
	"rl_set_max_wait('chat', 'm1', '1s')",
	"rl_drop_job_type('chat')")
{
	($out, $err) = run_sql($standby1, "SELECT $call");
	like($err, qr/ERROR:  25006:/, "$call refuses on a standby with 25006");
}
($out, $err) = run_sql($standby1, "SELECT count(*) FROM rl_leases");
is($out, '1', 'the lease is still open on the standby');

######################################################################
# Promotion: the configuration and state committed at that point
######################################################################

$primary->stop;
$standby1->promote;
wait_for_worker($standby1);

# every call on the standby rebuilt shared memory: the role's lease count is
# still the one lease restored, no more
($out, $err) = run_sql($standby1,
	"SET ratelimit.max_leases_per_role = 1; SELECT granted FROM rl_acquire('m2', tokens => 1)");
like($err, qr/holds too many pg_ratelimit leases/, 'the restored lease counts against its role');
($out, $err) = run_sql($standby1,
	"SET ratelimit.max_leases_per_role = 2;"
	  . " SELECT (rl_release((rl_acquire('m2', tokens => 1)).lease_id)).released");
is($out, 't', 'once, however often the standby rebuilt its state');

($out, $err) = run_sql($standby1, "SELECT granted FROM rl_acquire('m2', tokens => 1)");
is($out, 't', 'the promoted server admits on the model defined after the standby first read');
unlike($err, qr/standby/, 'and says nothing about a standby');
($out, $err) = run_sql($standby1, $models_sql);
is($out, 'm1=3,m2=5', 'promoted rl_status shows the committed configuration');
unlike($err, qr/standby/, 'promoted rl_status says nothing about a standby');
is((run_sql($standby1, "SELECT lease_id || ' ' || instance FROM rl_leases WHERE model = 'm1'"))[0],
	"$lease w1", 'the lease saved before the promotion is open');
is((run_sql($standby1, "SELECT released FROM rl_release($lease, input_tokens => 5)"))[0],
	't', 'and releases after it');

# in a minute of its own, m1 admits its new rpm, not the old one
$standby1->safe_psql('postgres', "SELECT rl_debug_set_clock('2030-01-01 01:00:05+00')");
is(grants($standby1, 'm1', 10), 3, "m1's new rpm (3) is enforced after promotion");

######################################################################
# A second promotion, after more changes
######################################################################

$standby1->backup('backup2');
my $standby2 = PostgreSQL::Test::Cluster->new('standby2');
$standby2->init_from_backup($standby1, 'backup2', has_streaming => 1);
$standby2->start;
$standby1->wait_for_catchup($standby2);

($out, $err) = run_sql($standby2, $models_sql);
is($out, 'm1=3,m2=5', 'the second standby reads the configuration');
like($err, qr/NOTICE:  .*standby/, 'and says that it is on a standby');
($out, $err) = run_sql($standby2, "SELECT count(*) FROM rl_job_status");
is($out, '2', 'the second standby reads rl_job_status');

# a new model, a changed limit, a dropped model
$standby1->safe_psql('postgres', q{
	SELECT rl_define_model('m3', rpm => 4);
	SELECT rl_define_model('m2', rpm => 2);
	SELECT rl_drop_model('m1');
});
$standby1->wait_for_catchup($standby2);
($out, $err) = run_sql($standby2, $models_sql);
is($out, 'm2=2,m3=4', 'the second standby shows the latest configuration');
($out, $err) = run_sql($standby2, "SELECT rl_heartbeat('w3')");
like($err, qr/ERROR:  25006:/, 'the second standby refuses to change the state');

$standby1->stop;
$standby2->promote;
wait_for_worker($standby2);

($out, $err) = run_sql($standby2, "SELECT granted FROM rl_acquire('m1')");
like($err, qr/model "m1" does not exist/, 'the dropped model is gone after the second promotion');
($out, $err) = run_sql($standby2, "SELECT granted FROM rl_acquire('m3', tokens => 1)");
is($out, 't', 'the new model admits after the second promotion');
is((run_sql($standby2, $models_sql))[0], 'm2=2,m3=4',
	'rl_status shows the latest configuration after the second promotion');
$standby2->safe_psql('postgres', "SELECT rl_debug_set_clock('2030-01-01 02:00:05+00')");
is(grants($standby2, 'm2', 5), 2, "m2's changed rpm (2) is enforced after the second promotion");

$standby2->stop;
done_testing();
