# Clients that go away.  A client killed while its rl_acquire waits: its
# backend stops waiting within about a second (it checks the socket, whatever
# client_connection_check_interval says) and takes nothing, so the capacity
# freed later goes to whoever asks next.  Session-bound leases
# (session_bound => true) are released as soon as the backend that took them
# exits: a client that disconnects, a client killed outright,
# pg_terminate_backend, a FATAL error, a server restart; a lease without the
# option outlives its session, as documented.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('exits');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.persist_interval = '200ms'
client_connection_check_interval = 0
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('one', max_concurrent => 1);
	SELECT rl_define_model('s', max_concurrent => 10);
});

sub open_leases
{
	my $model = shift;
	return query("SELECT count(*) || '/' || (SELECT in_flight FROM rl_status WHERE model = '$model')"
		  . " FROM rl_leases WHERE model = '$model'");
}

# A session that holds a lease and stays connected
sub holder
{
	my ($call) = @_;
	my $session = $node->background_psql('postgres', on_error_stop => 0);
	my $lease = $session->query_safe("SELECT lease_id FROM $call");
	return ($session, $lease);
}

# The backend pid of a live session
sub session_pid
{
	my $session = shift;
	return $session->query_safe('SELECT pg_backend_pid()');
}

######################################################################
# A waiter whose client dies
######################################################################

my ($holding, $held) = holder("rl_acquire('one')");
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
my $waiter_pid = session_pid($waiter);
$waiter->query_until(qr/started/,
	"\\echo started\nSELECT rl_acquire('one', max_wait => '10 min');\n");
$node->poll_query_until('postgres', "SELECT waiting = 1 FROM rl_status WHERE model = 'one'")
  or die 'the waiter did not queue';

# kill the client outright: no goodbye on the socket
$waiter->{run}->signal('KILL');
eval { $waiter->{run}->finish };

# with the holder's lease still open, the waiting backend must notice
# (before the fix it waited its whole ten minutes, then took the slot)
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $waiter_pid")
  or die 'the backend of a dead client kept waiting';
pass('the backend of a killed waiting client stops waiting');
is(query("SELECT waiting FROM rl_status WHERE model = 'one'"), '0', 'and leaves the queue');
like(slurp_file($node->logfile), qr/connection to client lost/, 'the log says why');

# the slot it waited for goes to the next caller, not to a ghost
is($holding->query_safe("SELECT released FROM rl_release($held)"), 't', 'the holder releases');
is(open_leases('one'), '0/0', 'nobody holds the slot');
is(query("SELECT granted FROM rl_acquire('one', ttl => '1s')"), 't', 'the next caller gets it');
$holding->quit;

######################################################################
# Session-bound leases
######################################################################

# a client that disconnects normally (psql -c ends its session)
query("SELECT rl_acquire('s', session_bound => true)");
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM rl_leases WHERE model = 's'")
  or die 'a session-bound lease outlived a client that disconnected';
is(open_leases('s'), '0/0', 'disconnect: the session-bound lease is released');
like(query("SELECT granted || ' ' || denied FROM rl_status WHERE model = 's'"), qr/^1 0$/,
	'it was granted once and never refused');

# without the option, the lease outlives its session
my $plain = query("SELECT lease_id FROM rl_acquire('s')");
is(open_leases('s'), '1/1', 'a plain lease outlives the session that took it');
query("SELECT rl_release($plain)");

# a client killed outright while its session is idle
my ($killed, $killed_lease) = holder("rl_acquire('s', session_bound => true)");
is(open_leases('s'), '1/1', 'a session-bound lease is open while its session lives');
$killed->{run}->signal('KILL');
eval { $killed->{run}->finish };
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM rl_leases WHERE model = 's'")
  or die 'a session-bound lease outlived a killed client';
is(open_leases('s'), '0/0', 'client killed: the session-bound lease is released');

# pg_terminate_backend
my ($terminated, $terminated_lease) = holder("rl_acquire('s', session_bound => true)");
my $terminated_pid = session_pid($terminated);
query("SELECT pg_terminate_backend($terminated_pid)");
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM rl_leases WHERE model = 's'")
  or die 'a session-bound lease outlived pg_terminate_backend';
is(open_leases('s'), '0/0', 'pg_terminate_backend: the session-bound lease is released');
eval { $terminated->quit };

# a FATAL error ends the session (here idle_session_timeout)
my ($timed_out, $timed_out_lease) =
  holder("rl_acquire('s', session_bound => true), set_config('idle_session_timeout', '200ms', false)");
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM rl_leases WHERE model = 's'")
  or die 'a session-bound lease outlived a FATAL error';
is(open_leases('s'), '0/0', 'FATAL: the session-bound lease is released');
like(slurp_file($node->logfile), qr/terminating connection due to idle-session timeout/,
	'that session ended with a FATAL error');
eval { $timed_out->quit };

# only its own: a session-bound lease released by another session of the
# role goes once, and the exit of its session releases nothing more
my ($owner, $owned) = holder("rl_acquire('s', session_bound => true)");
my $owner_pid = session_pid($owner);
my $other = query("SELECT lease_id FROM rl_acquire('s', session_bound => false)");
is(query("SELECT released FROM rl_release($owned)"), 't', 'another session may release it');
$owner->quit;
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $owner_pid")
  or die 'the owner did not exit';
is(open_leases('s'), '1/1', "its session's exit leaves the other lease alone");
query("SELECT rl_release($other)");

# a clean restart ends every session: session-bound leases do not come back,
# plain ones do
my ($restarted, $restarted_lease) = holder("rl_acquire('s', session_bound => true)");
my $kept = query("SELECT lease_id FROM rl_acquire('s', ttl => '1 hour')");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM rl_lease_state WHERE model = 's'")
  or die 'the plain lease was not saved';
# restarted with a lower ceiling, which the restored lease is cut to
$node->append_conf('postgresql.conf', "ratelimit.max_lease_ttl = '5min'");
$node->restart;
eval { $restarted->quit };
is(query("SELECT expires_at <= now() + interval '5 min' FROM rl_leases WHERE lease_id = $kept"), 't',
	'a restored lease is cut to ratelimit.max_lease_ttl');
is(query("SELECT string_agg(lease_id::text, ',') FROM rl_leases WHERE model = 's'"), $kept,
	'after a restart only the plain lease is open');
is(open_leases('s'), '1/1', 'and only it counts');

$node->stop;
done_testing();
