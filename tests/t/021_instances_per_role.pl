# ratelimit.max_instances_per_role: a role at its cap cannot register one
# more instance (53400, with a hint), other roles are not affected, an
# instance that leaves makes room, refreshing is not registering, the cap
# follows a reload, and the role of each instance survives a restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('instances_per_role');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.max_instances_per_role = 2
# no instance goes stale while the test runs
ratelimit.instance_timeout = '1h'
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

# run SQL as a role: (stdout, stderr) of psql with verbose errors
sub as_role
{
	my ($role, $sql) = @_;
	my ($stdout, $stderr);
	$node->psql('postgres', $sql, stdout => \$stdout, stderr => \$stderr,
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=verbose' ]);
	return ($stdout, $stderr);
}

query(q{
	CREATE EXTENSION pg_ratelimit;
	CREATE ROLE app1 LOGIN;
	CREATE ROLE app2 LOGIN;
	GRANT EXECUTE ON FUNCTION rl_heartbeat(text, bigint), rl_unregister(text) TO app1, app2;
});
is(query('SHOW ratelimit.max_instances_per_role'), '2', 'the cap is set');
my $superuser = query('SELECT current_user');

my ($out, $err) = as_role('app1', q{SELECT rl_heartbeat('a1'); SELECT rl_heartbeat('a2');});
is($err, '', 'app1 registers two instances');
($out, $err) = as_role('app1', q{SELECT rl_heartbeat('a3')});
like($err, qr/53400: role "app1" has too many pg_ratelimit instances/,
	'a third one is refused with 53400');
like($err, qr/ratelimit\.max_instances_per_role is 2/, 'the detail names the setting');
like($err, qr/HINT:  Unregister instances that are gone/, 'with a hint');
is(query(q{SELECT count(*) FROM rl_instances WHERE instance = 'a3'}), '0',
	'the refused instance is not registered');

($out, $err) = as_role('app1', q{SELECT rl_heartbeat('a1', 1000)});
is($err, '', 'a role at its cap still refreshes its instances');

($out, $err) = as_role('app2', q{SELECT rl_heartbeat('b1'); SELECT rl_heartbeat('b2');});
is($err, '', 'another role is not affected');
is(query(q{SELECT rl_heartbeat('s1')}), '5', 'nor is a superuser');

# an instance is its registering role's: another role may not refresh it
($out, $err) = as_role('app2', q{SELECT rl_heartbeat('a2')});
like($err, qr/permission denied for pg_ratelimit instance "a2"/,
	'app2 may not refresh an instance of app1');
is(query(q{SELECT string_agg(instance || ':' || role, ' ' ORDER BY instance) FROM rl_instances}),
	"a1:app1 a2:app1 b1:app2 b2:app2 s1:$superuser",
	'rl_instances shows the role that registered each instance');

# an instance that leaves makes room
($out, $err) = as_role('app1', q{SELECT rl_unregister('a2'); SELECT rl_heartbeat('a3');});
is($err, '', 'after unregistering a2, app1 registers a3');
($out, $err) = as_role('app1', q{SELECT rl_heartbeat('a4')});
like($err, qr/53400/, 'and is at its cap again');

# 0 means no cap; the setting follows a reload
$node->append_conf('postgresql.conf', 'ratelimit.max_instances_per_role = 0');
$node->reload;
foreach (1 .. 100)
{
	last if query('SHOW ratelimit.max_instances_per_role') eq '0';
	usleep(100_000);
}
($out, $err) = as_role('app1', q{SELECT rl_heartbeat('a4'); SELECT rl_heartbeat('a5');});
is($err, '', 'with no cap app1 registers more');

# the role of each instance is saved and restored: after a restart with a
# cap of 3, app1 (4 instances) is over it, app2 (2) has room for one
$node->append_conf('postgresql.conf', 'ratelimit.max_instances_per_role = 3');
$node->restart;
is(query(q{SELECT string_agg(instance || ':' || role, ' ' ORDER BY instance) FROM rl_instances}),
	"a1:app1 a3:app1 a4:app1 a5:app1 b1:app2 b2:app2 s1:$superuser",
	'instances and their roles survive a restart');
($out, $err) = as_role('app1', q{SELECT rl_heartbeat('a6')});
like($err, qr/53400/, 'the restored instances count against their role');
($out, $err) = as_role('app2', q{SELECT rl_heartbeat('b3')});
is($err, '', 'app2 has room for one more');
($out, $err) = as_role('app2', q{SELECT rl_heartbeat('b4')});
like($err, qr/53400/, 'and then none');

$node->stop;
done_testing();
