# NOTIFY rl_capacity: sent by the worker when a window that denied resets
# and when capacity frees on a model that denied; valid JSON whatever the
# model's name; coalesced; a libpq client LISTENs, retries and gets in.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;

my $client = "$ENV{TESTDIR}/tests/clients/rl_listen";
-x $client or BAIL_OUT("build $client first (make tests/clients/rl_listen)");

my $node = PostgreSQL::Test::Cluster->new('notify');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$node->append_conf('postgresql.conf', "ratelimit.enable_test_clock = on");
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

my $model = 'openai/"gpt\\4o" ünïcode';
my $model_sql = $model =~ s/'/''/gr;
query(qq{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('$model_sql', rpm => 1);
	SELECT rl_define_model('quiet', rpm => 100);
	SELECT rl_define_model('conc', max_concurrent => 1);
	SELECT rl_debug_set_clock('2030-01-01 00:00:30+00');
	SELECT granted FROM rl_acquire('$model_sql');
});

# a listener in psql, to read the payloads
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN rl_capacity');

# payloads received so far, as [model, reason, at] checked by the server's
# own JSON parser
sub received
{
	my $out = $listener->query_safe('SELECT 1');
	my @payloads = $out =~ /with payload "(.*)" received from server process/g;
	my @parsed;
	foreach my $payload (@payloads)
	{
		my $literal = $payload =~ s/'/''/gr;
		push @parsed, [ split /\|/, query(
			"SELECT j->>'model', j->>'reason', j->>'at' FROM (SELECT '$literal'::json AS j) s") ];
	}
	return @parsed;
}

# the client is denied and waits on its socket
my ($out, $err) = ('', '');
my $timer = IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default);
my $h = IPC::Run::start([ $client, $node->connstr('postgres'), $model, '60' ],
	'>', \$out, '2>', \$err, $timer);
$h->pump until $out =~ /waiting for a notification/;
like($out, qr/denied by rpm, waiting for a notification/, 'the client was denied and waits');

# the window resets: one notification, and the client gets in
query("SELECT rl_debug_set_clock('2030-01-01 00:00:59.8+00')");
$h->finish;
is($h->result(0), 0, 'the client exits successfully');
like($out, qr/acquired [0-9.]+ ms after the reset \(notified after [0-9.]+ ms\)/,
	'the client acquired after the notification');
like($out, qr/released: t/, 'and released its lease');
note($out);

my @got = received();
is(scalar(@got), 1, 'one notification');
is($got[0][0], $model, 'its model survives JSON escaping');
is($got[0][1], 'window_reset', 'reason window_reset');
is($got[0][2], '2030-01-01T00:01:00+00:00', 'at is the boundary');

# a model that never denied sends nothing
query(q{
	SELECT rl_release(lease_id) FROM rl_acquire('quiet') g;
	SELECT rl_debug_set_clock('2030-01-01 00:01:59.9+00');
});
sleep(1);
is(scalar(received()), 0, 'no notification for a model that never denied');

# capacity freed by releases after a denial: coalesced into one notification
query(q{
	CREATE TABLE held AS SELECT lease_id FROM rl_acquire('conc');
	SELECT granted FROM rl_acquire('conc');
	SELECT rl_release(lease_id) FROM held;
	INSERT INTO held SELECT lease_id FROM rl_acquire('conc');
	SELECT rl_release(max(lease_id)) FROM held;
});
sleep(1);
@got = received();
is(scalar(@got), 1, 'releases after one denial make one notification');
is($got[0][0] . ' ' . $got[0][1], 'conc release', 'reason release');

# a model that denies and releases all the time does not storm: its release
# notices are at least 50 ms apart
query(q{
	DELETE FROM held;
	INSERT INTO held SELECT lease_id FROM rl_acquire('conc');
});
sleep(1);
received();
my $started = time();
query(q{
	DO $$
	DECLARE
		id bigint;
	BEGIN
		FOR i IN 1..2000 LOOP
			PERFORM rl_acquire('conc');				-- denied
			SELECT lease_id INTO id FROM held;
			PERFORM rl_release(id);					-- frees the slot
			UPDATE held SET lease_id = (SELECT lease_id FROM rl_acquire('conc'));
		END LOOP;
	END
	$$;
});
my $elapsed = time() - $started + 1;
sleep(1);
my $storm = scalar(received());
ok($storm >= 1, "the churn was notified ($storm notifications)");
ok($storm <= $elapsed * 20 + 2, "at most 20 a second ($storm in about $elapsed s)");
query("SELECT rl_release(lease_id) FROM held; DELETE FROM held");

# a release with no denial since the last notification sends nothing
sleep(1);
received();
query(q{
	INSERT INTO held SELECT lease_id FROM rl_acquire('conc');
	SELECT rl_release(lease_id) FROM held;
});
sleep(1);
is(scalar(received()), 0, 'no denial since the last notification: nothing sent');

# a configuration change after a denial notifies too
query(q{
	DELETE FROM held;
	INSERT INTO held SELECT lease_id FROM rl_acquire('conc');
	SELECT granted FROM rl_acquire('conc');
	SELECT rl_define_model('conc', max_concurrent => 2);
});
sleep(1);
@got = received();
is(join(' ', map { $_->[0] . ' ' . $_->[1] } @got), 'conc config', 'reason config');

$listener->quit;
$node->stop;
done_testing();
