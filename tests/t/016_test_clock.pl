# The test clock and the calendar.  The test clock works only on a server
# started with ratelimit.enable_test_clock, and a test clock saved by an
# earlier run is ignored without it; pause points need it too.  The worker
# does not spin whatever the clock says (before 2000-01-01, on that day, at
# either end of the timestamp range), and the day 2000-01-01 admits like
# any other.  A clock that is behind the saved windows at a restart (the
# system clock stepped back while the server was down) keeps the saved day.
# A waiter held at the before_sleep pause point sleeps only once its test
# lets it go.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(usleep);
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('test_clock');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.persist_interval = '200ms'
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

# Restart with the test clock on or off; wait for the worker
sub restart_with_test_clock
{
	my $on = shift;
	$node->append_conf('postgresql.conf', "ratelimit.enable_test_clock = $on");
	$node->restart;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'")
	  or die 'no pg_ratelimit worker';
}

query('CREATE EXTENSION pg_ratelimit');

# Off by default: the clock cannot be set, and is real time
is(query('SHOW ratelimit.enable_test_clock'), 'off', 'the test clock is off by default');
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT rl_debug_set_clock('2030-01-01 00:00:05+00')");
isnt($ret, 0, 'rl_debug_set_clock is refused without ratelimit.enable_test_clock');
like($stderr, qr/ERROR:  55000: the pg_ratelimit test clock is not enabled/, 'with 55000');
like($stderr, qr/HINT:  .*set ratelimit\.enable_test_clock = on and restart the server/,
	'and a hint that names the setting');
($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT rl_debug_set_clock(NULL)");
isnt($ret, 0, 'returning to real time is refused too');
ok(query("SELECT abs(extract(epoch FROM rl_clock() - clock_timestamp())) < 5"),
	'the clock is real time');
($ret, $stdout, $stderr) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSET ratelimit.debug_pause = 'before_admission'");
isnt($ret, 0, 'pause points are refused without ratelimit.enable_test_clock');
like($stderr, qr/ERROR:  55000: pause points need ratelimit.enable_test_clock/, 'with 55000');
is(query("SET ratelimit.debug_pause = ''; SHOW ratelimit.debug_pause"), '',
	'an empty list is accepted');

# On: the test clock is saved and restored; off again, the saved one (and
# the windows saved under it) are ignored
restart_with_test_clock('on');
query(q{
	SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');
	SELECT rl_define_model('saved', rpm => 5, rpd => 10);
	SELECT granted FROM rl_acquire('saved');
});
$node->poll_query_until('postgres',
	"SELECT clock_offset_us > 0 FROM rl_saved_clock WHERE EXISTS "
	  . "(SELECT FROM rl_counter WHERE model = 'saved' AND requests_day = 1)")
  or die 'the worker did not save';
$node->restart;
ok(query("SELECT rl_clock() BETWEEN '2030-01-01 00:00:05+00' AND '2030-01-01 00:00:50+00'"),
	'with the setting, the test clock carries on after a restart');
restart_with_test_clock('off');
ok(query("SELECT abs(extract(epoch FROM rl_clock() - clock_timestamp())) < 5"),
	'without it, a saved test clock is ignored at the restart');
is(query("SELECT requests_minute || ' ' || requests_day || ' ' || (day_resets_at < '2030-01-01') "
	  . "FROM rl_status WHERE model = 'saved'"),
	'0 0 true', 'and so are the windows saved under it');
query("SELECT rl_drop_model('saved')");

# No spinning at any clock value.  A healthy worker commits about once per
# persist_interval (200 ms here); before the fix a clock before 2000-01-01
# made it commit about 900 times a second.  Each clock value admits on a
# model with every kind of window limit.
restart_with_test_clock('on');
my $commits_sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'";
my $i = 0;
foreach my $clock ('1999-12-31 23:59:30+00', '2000-01-01 12:00:00+00',
	'1970-01-01 00:00:00+00', '4713-11-25 00:00:00+00 BC', '294276-12-31 23:00:00+00')
{
	$i++;
	query(qq{
		SELECT rl_debug_set_clock('$clock');
		SELECT rl_define_model('at$i', rpm => 5, tpm => 100, rpd => 10, tpd => 1000,
							   max_concurrent => 2);
	});
	is(query("SELECT granted FROM rl_acquire('at$i', tokens => 10)"), 't', "admits at $clock");
	my $before = query($commits_sql);
	sleep(3);
	my $commits = query($commits_sql) - $before;
	cmp_ok($commits, '<', 100, "the worker does not spin at $clock ($commits commits in 3 s)");
}
query('DELETE FROM rl_model');

# A clock behind the saved windows at a restart: the system clock stepped
# back while the server was down, simulated by moving the saved test clock
# an hour back behind the worker's back.  The saved day (its limits and
# usage) stays current until the clock reaches its end.
query(q{
	SELECT rl_debug_set_clock('2030-02-02 00:00:30+00');
	SELECT rl_define_model('back', rpd => 2, price_input => 1);
});
query("SELECT cost FROM rl_release((rl_acquire('back')).lease_id, input_tokens => 1000000)");
is(query("SELECT granted FROM rl_acquire('back')"), 't', 'two requests on 2030-02-02');
$node->poll_query_until('postgres',
	"SELECT requests_day = 2 AND usage_requests = 2 FROM rl_counter WHERE model = 'back'")
  or die 'the worker did not save';
$node->poll_query_until('postgres',
	"SELECT abs(clock_offset_us - extract(epoch FROM rl_clock() - clock_timestamp()) * 1e6) < 5e6 "
	  . "FROM rl_saved_clock")
  or die 'the worker did not save the clock';
query("UPDATE rl_saved_clock SET clock_offset_us = clock_offset_us - 3600 * 1000000::bigint");
$node->restart;
ok(query("SELECT rl_clock() BETWEEN '2030-02-01 23:00:30+00' AND '2030-02-01 23:01:30+00'"),
	'after the restart the clock is an hour behind the saved day');
is(query("SELECT granted || ' ' || limited_by FROM rl_acquire('back')"), 'false rpd',
	'the saved day is still current: its requests count');
is(query("SELECT requests_day || ' ' || cost_today || ' ' || (day_resets_at = '2030-02-03 00:00+00') "
	  . "FROM rl_status WHERE model = 'back'"),
	'2 1 true', 'rl_status shows the saved day');
query("SELECT rl_debug_set_clock('2030-02-03 00:00:05+00')");
is(query("SELECT granted FROM rl_acquire('back')"), 't', 'the next day starts afresh');
$node->poll_query_until('postgres', "SELECT EXISTS (SELECT FROM rl_usage_daily WHERE model = 'back')")
  or die 'the worker did not save the ended day';
is(query("SELECT string_agg(to_char(day, 'YYYY-MM-DD') || ' ' || requests || ' ' || cost, ',') "
	  . "FROM rl_usage_daily WHERE model = 'back'"),
	'2030-02-02 2 1', 'the saved day is saved whole, and no day before it');

# before_sleep: a waiter that failed its attempt stops before it sleeps
# while a test holds pg_advisory_lock(7411, 2); a release meanwhile is not
# lost (a lost one would sleep until statement_timeout ends the call), and
# it is admitted once let go
query(q{
	SELECT rl_define_model('pause', max_concurrent => 1);
	CREATE TABLE paused (granted boolean);
});
my $lease = query("SELECT lease_id FROM rl_acquire('pause')");
my $holder = $node->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(7411, 2)');
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->query_until(qr/started/, qq{\\echo started
SET ratelimit.debug_pause = 'before_sleep';
SET statement_timeout = '30s';
INSERT INTO paused SELECT granted FROM rl_acquire('pause', max_wait => '10 min');
});
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = 7411 "
	  . "AND objid = 2 AND objsubid = 2 AND mode = 'ShareLock' AND NOT granted")
  or die 'the waiter did not stop at before_sleep';
is(query("SELECT released FROM rl_release($lease)"), 't', 'released while the waiter is held');
is(query('SELECT count(*) FROM paused'), '0', 'the held waiter has not returned');
$holder->query_safe('SELECT pg_advisory_unlock(7411, 2)');
$node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM paused')
  or die 'the waiter did not return';
is(query('SELECT granted FROM paused'), 't', 'let go, it is admitted');
$waiter->quit;
$holder->quit;

$node->stop;
done_testing();
