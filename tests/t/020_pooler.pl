# Behind PgBouncer in transaction pooling (default_pool_size = 2): waiters
# hold the pool's server connections, so a release sent through the same pool
# queues behind them and runs only after a waiter has timed out; releases sent
# through a pool of their own free capacity at once and both waiters are
# granted.  Then examples/pgbouncer_psycopg.py (psycopg 3,
# prepare_threshold=None) runs its jobs through the two pools.
#
# The order of events is read from a sequence, never from timings: an acquire
# takes its number after rl_acquire returned, a release before it releases.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Time::HiRes qw(usleep);
use Test::More;

# scripts/test.sh installs pgbouncer (and python3-psycopg) when run as root;
# CI runs it as root, so there a missing pgbouncer is a failure, not a skip
my ($pgbouncer) = grep { -x $_ }
  ((map { "$_/pgbouncer" } split(/:/, $ENV{PATH})), '/usr/sbin/pgbouncer');
if (!$pgbouncer)
{
	BAIL_OUT('pgbouncer is not installed, and CI must run this test') if $ENV{CI};
	plan skip_all => 'pgbouncer is not installed (apt-get install pgbouncer, '
	  . 'or run scripts/test.sh as root)';
}

my $node = PostgreSQL::Test::Cluster->new('pooler');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

query(q{
	CREATE EXTENSION pg_ratelimit;
	CREATE SEQUENCE ev;
	SELECT rl_define_model('same_pool', max_concurrent => 1);
	SELECT rl_define_model('own_pool', max_concurrent => 2);
	SELECT rl_define_model('example', max_concurrent => 1);
	-- releases the leases of a model; the event number and the model's
	-- waiters are taken before the first release
	CREATE FUNCTION release_leases(m text, ids bigint[]) RETURNS text LANGUAGE plpgsql AS $$
	DECLARE
		started bigint := nextval('ev');
		waiters bigint := (SELECT waiting FROM rl_status WHERE model = m);
		all_released boolean := true;
		id bigint;
	BEGIN
		FOREACH id IN ARRAY ids LOOP
			all_released := all_released AND (SELECT released FROM rl_release(id));
		END LOOP;
		RETURN all_released || ' ' || started || ' ' || waiters;
	END
	$$;
});

# pgbouncer: two entries for the same database, each with its own pool
my $bdir = PostgreSQL::Test::Utils::tempdir_short();
my $bport = PostgreSQL::Test::Cluster::get_free_port();
my $user = query('SELECT current_user');
my $server = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres';
PostgreSQL::Test::Utils::append_to_file("$bdir/users.txt", qq{"$user" ""\n});
PostgreSQL::Test::Utils::append_to_file("$bdir/pgbouncer.ini", qq{
[databases]
app = $server
app_release = $server pool_size=1
app_session = $server pool_mode=session pool_size=1

[pgbouncer]
pool_mode = transaction
default_pool_size = 2
listen_addr =
listen_port = $bport
unix_socket_dir = $bdir
auth_type = trust
auth_file = $bdir/users.txt
admin_users = $user
logfile = $bdir/pgbouncer.log
pidfile = $bdir/pgbouncer.pid
});
my $bouncer = IPC::Run::start([ $pgbouncer, "$bdir/pgbouncer.ini" ],
	'>', "$bdir/pgbouncer.out", '2>&1');
my $ready = 0;
foreach (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
{
	last if ($ready = -S "$bdir/.s.PGSQL.$bport");
	usleep(100_000);
}
$ready or BAIL_OUT('pgbouncer did not start: '
	  . slurp_file("$bdir/pgbouncer.out") . slurp_file("$bdir/pgbouncer.log"));

sub dsn { return "host=$bdir port=$bport dbname=" . shift; }

# A client of pgbouncer that runs $sql and exits; finish() returns its output
sub client
{
	my ($db, $sql) = @_;
	my %c = (out => '', err => '');
	$c{h} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', dsn($db), '-c', $sql ],
		'>', \$c{out}, '2>', \$c{err},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	return \%c;
}

sub finish
{
	my $c = shift;
	$c->{h}->finish or die "client failed: $c->{err}";
	my @lines = split /\n/, $c->{out};
	return $lines[-1];
}

# pgbouncer's SHOW POOLS row of a database, as a hash
sub pool
{
	my $db = shift;
	my $out = `psql -XAq -d "@{[ dsn('pgbouncer') ]}" -c "SHOW POOLS"`;
	my ($head, @rows) = split /\n/, $out;
	my @names = split /\|/, $head;
	foreach my $row (@rows)
	{
		my %r;
		@r{@names} = split /\|/, $row;
		return \%r if defined $r{database} && $r{database} eq $db;
	}
	return {};
}

sub poll_pool
{
	my ($db, $test) = @_;
	foreach (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
	{
		return 1 if $test->(pool($db));
		usleep(100_000);
	}
	return 0;
}

sub waiting
{
	my ($model, $n) = @_;
	$node->poll_query_until('postgres',
		"SELECT waiting = $n FROM rl_status WHERE model = '$model'")
	  or die "$model: $n waiters expected";
}

# acquire through pgbouncer; the event number is taken after the call returned
sub acquire_sql
{
	my ($model, $max_wait) = @_;
	return "SELECT granted || ' ' || coalesce(limited_by, '-') || ' ' || nextval('ev')"
	  . " FROM rl_acquire('$model', max_wait => '$max_wait')";
}

sub release_sql
{
	my ($model, $ids) = @_;
	return "SELECT release_leases('$model', ARRAY[$ids]::bigint[])";
}

######################################################################
# The same pool: the release waits behind the waiters
#
# The slot of 'same_pool' is held.  Waiter 1 waits with a long max_wait.
# Waiter 2 first blocks on a lock the test holds, so that its max_wait starts
# only once the release is queued.  Both hold the pool's two server
# connections; the release sent through the pool waits for one of them.

my $held = finish(client('app',
	"SELECT lease_id FROM rl_acquire('same_pool', max_wait => '1 min')"));
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(1)');

my $w1 = client('app', acquire_sql('same_pool', '1 min'));
waiting('same_pool', 1);
my $w2 = client('app', 'SELECT pg_advisory_xact_lock_shared(1); '
	  . acquire_sql('same_pool', '1 second'));
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
  or die 'waiter 2 did not reach the gate';
is(pool('app')->{sv_active}, '2', 'same pool: both server connections are taken');

my $release = client('app', release_sql('same_pool', $held));
ok(poll_pool('app', sub { (shift->{cl_waiting} // '') eq '1' }),
	'same pool: the release waits in pgbouncer for a server connection');
is(query("SELECT in_flight FROM rl_status WHERE model = 'same_pool'"), '1',
	'same pool: the slot is still held');

# waiter 2's max_wait starts; nothing can free the slot before it runs out
$gate->query_safe('SELECT pg_advisory_unlock(1)');
my ($g2, $limited2, $ev2) = split / /, finish($w2);
my ($released, $ev_release, $waiters) = split / /, finish($release);
my ($g1, $limited1, $ev1) = split / /, finish($w1);
is("$g2 $limited2", 'false concurrency', 'same pool: waiter 2 timed out, denied by concurrency');
is($released, 'true', 'same pool: the release went through in the end');
ok($ev2 < $ev_release,
	"same pool: the release started only after waiter 2 had timed out (events $ev2, $ev_release)");
is($waiters, '1', 'same pool: with one waiter left');
is($g1, 'true', 'same pool: waiter 1 got the slot that the release freed');
ok($ev_release < $ev1, "same pool: after the release (events $ev_release, $ev1)");
$gate->quit;
query("SELECT rl_release(lease_id) FROM rl_leases WHERE model = 'same_pool'");

######################################################################
# A pool of its own for releases: both waiters are granted at once

my $leases = finish(client('app', q{
	SELECT string_agg(lease_id::text, ',') FROM (
		SELECT lease_id FROM rl_acquire('own_pool', max_wait => '1 min')
		UNION ALL
		SELECT lease_id FROM rl_acquire('own_pool', max_wait => '1 min')) s}));
$w1 = client('app', acquire_sql('own_pool', '1 min'));
waiting('own_pool', 1);
$w2 = client('app', acquire_sql('own_pool', '1 min'));
waiting('own_pool', 2);
is(pool('app')->{sv_active}, '2', 'own pool: the waiters hold both server connections of app');

($released, $ev_release, $waiters) =
  split / /, finish(client('app_release', release_sql('own_pool', $leases)));
is("$released $waiters", 'true 2', 'own pool: the releases ran while both waiters waited');
($g1, undef, $ev1) = split / /, finish($w1);
($g2, undef, $ev2) = split / /, finish($w2);
is("$g1 $g2", 'true true', 'own pool: both waiters were granted');
ok($ev_release < $ev1 && $ev_release < $ev2,
	"own pool: after the releases started (events $ev_release, $ev1, $ev2)");
query("SELECT rl_release(lease_id) FROM rl_leases WHERE model = 'own_pool'");

######################################################################
# A session-bound lease through a pool in session mode lives as long as
# the pooler's server connection: a client that leaves hands it back to
# the pool (the lease stays open), and when the pooler closes that
# connection the lease is released at once.

query("SELECT rl_define_model('session_pool', max_concurrent => 5)");
finish(client('app_session', "SELECT lease_id FROM rl_acquire('session_pool', session_bound => true)"));
is(query("SELECT count(*) FROM rl_leases WHERE model = 'session_pool' AND session_bound"), '1',
	'session pool: the lease outlives the client, on the server connection kept in the pool');
system("psql -XAtq -d \"@{[ dsn('pgbouncer') ]}\" -c 'KILL app_session' >/dev/null") == 0
  or die 'pgbouncer refused KILL';
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM rl_leases WHERE model = 'session_pool'")
  or die 'the lease outlived its server connection';
is(query("SELECT in_flight FROM rl_status WHERE model = 'session_pool'"), '0',
	'session pool: closing the server connection releases the session-bound lease');

######################################################################
# The psycopg example: 4 workers over app's 2 server connections, one slot.
# Without prepare_threshold=None it fails: app_release has one server
# connection, and the second worker whose psycopg prepares its release there
# finds "_pg3_0" already exists.

SKIP:
{
	my ($python) = grep {
		system("$_ -c 'import psycopg' >/dev/null 2>&1") == 0
	} ('python3', '/usr/bin/python3');
	if (!$python)
	{
		BAIL_OUT('python3-psycopg is not installed, and CI must run the example') if $ENV{CI};
		skip 'psycopg 3 is not installed (apt-get install python3-psycopg)', 3;
	}
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(
		[ $python, "$ENV{TESTDIR}/examples/pgbouncer_psycopg.py",
		  dsn('app'), dsn('app_release'), 'example', '4', '10' ],
		'>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	note($err) if $err ne '';
	ok($ok, 'the psycopg example exits successfully');
	like($out, qr/^40 of 40 jobs granted and released$/m, 'every job was granted and released');
	is(query("SELECT granted || ' ' || in_flight FROM rl_status WHERE model = 'example'"),
		'40 0', 'the example took 40 leases and left none open');
}

$bouncer->signal('TERM');
$bouncer->finish;
$node->stop;
done_testing();
