# The README's clients, as a newcomer runs them.
#
# The README shows the client programs verbatim: each block marked
# <!-- example: FILE --> is the whole file, each block marked
# <!-- excerpt: FILE --> a run of its lines.  Then, on a server like the
# demo's (database ratelimit_demo, the test clock on), Getting started runs
# in psql and prints what the README shows, and every example runs with the
# connection string scripts/demo.sh --keep prints and does its job: the
# Python ones with psycopg 3, the Node ones with pg installed by npm from
# examples/package-lock.json, and the libpq client.  The listening clients
# are denied, wake on the notification of a window reset (the test clock
# moves to the next minute) and are granted; the Node one makes 20 calls on
# one connection without collecting notification listeners.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;

my $root = $ENV{TESTDIR};
my $readme = slurp_file("$root/README.md");

######################################################################
# The README shows the files as they are

my %shown;
while ($readme =~ /^<!-- (example|excerpt): (\S+) -->\n```[a-z]*\n(.*?)^```$/msg)
{
	my ($kind, $file, $block) = ($1, $2, $3);
	my $text = -f "$root/$file" ? slurp_file("$root/$file") : undef;
	ok(defined $text, "$file exists");
	next unless defined $text;
	if ($kind eq 'example')
	{
		is($block, $text, "the README shows $file as it is");
	}
	else
	{
		ok(index("\n$text", "\n$block") >= 0, "the README shows lines of $file as they are")
		  or diag("not in $file:\n$block");
	}
	$shown{$file}++;
}
foreach my $file (
	'examples/wait_in_server.py', 'examples/listen.py',
	'examples/wait_in_server.js', 'examples/listen.js',
	'examples/pgbouncer_psycopg.py', 'tests/clients/rl_listen.c',
	'examples/provider_loop.py', 'examples/provider_openai.js',
	'examples/provider_anthropic.js')
{
	ok($shown{$file}, "the README shows $file");
}

######################################################################
# A server like the demo's

my $node = PostgreSQL::Test::Cluster->new('examples');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.database = 'ratelimit_demo'
ratelimit.enable_test_clock = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE ratelimit_demo');
$node->safe_psql('ratelimit_demo', 'CREATE EXTENSION pg_ratelimit');

sub query { return $node->safe_psql('ratelimit_demo', shift); }

# what scripts/demo.sh --keep prints
my $user = getpwuid($>);
$ENV{DATABASE_URL} = "postgresql://$user@/ratelimit_demo?host=" . $node->host . '&port=' . $node->port;
delete $ENV{$_} for qw(PGHOST PGPORT PGUSER PGDATABASE PGOPTIONS);

######################################################################
# Getting started, pasted into psql

my ($started) = $readme =~ /^## Getting started\n.*?^```sql\n(.*?)^```$/ms;
ok(defined $started, 'Getting started has an SQL block');
my ($out, $err) = ('', '');
my $ok = IPC::Run::run([ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', $ENV{DATABASE_URL} ],
	'<', \$started, '>', \$out, '2>', \$err);
ok($ok, 'Getting started runs in psql without an error') or diag($err);
is($err, '', 'and without a warning');
# the output it shows (comment lines "--  ...") is what psql printed, but
# for the lease id
my $lease_id = qr/\b[0-9]{12,}\b/;
my %printed = map { s/$lease_id/LEASE/gr =~ s/^\s+|\s+$//gr => 1 } split /\n/, $out;
my @shown_output = $started =~ /^--  (.*)$/mg;
ok(@shown_output >= 5, 'Getting started shows its output');
foreach my $line (@shown_output)
{
	my $want = $line =~ s/$lease_id/LEASE/gr =~ s/^\s+|\s+$//gr;
	ok($printed{$want}, "psql printed: $line") or diag("psql printed:\n$out");
}
is(query(q{SELECT count(*) FROM ratelimit.rl_leases}), '0',
	'Getting started leaves no lease open');

######################################################################
# The clients

# run_client(NAME, COMMAND...): run to the end; its stdout
sub run_client
{
	my ($name, @cmd) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(\@cmd, '>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	ok($ok, "$name exits successfully") or diag("stdout:\n$out\nstderr:\n$err");
	return ($out, $err);
}

# A model that denies at once: its minute is used up.  The client must be
# denied, wait, and wake on the window_reset notification when the clock
# reaches the next minute; then its JOBS calls fit that minute.
my $minute = 0;
sub run_listener
{
	my ($name, $model, $jobs, @cmd) = @_;
	$minute++;
	query(qq{
		SELECT ratelimit.rl_debug_set_clock('2030-01-01 00:00:00+00'::timestamptz
											 + interval '$minute min' - interval '55 s');
		SELECT ratelimit.rl_define_model('$model', rpm => $jobs);
		SELECT ratelimit.rl_release(lease_id)
		FROM ratelimit.rl_acquire('$model', requests => $jobs);
	});
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$h->pump until $out =~ /waiting for a notification/ || !$h->pumpable;
	like($out, qr/^denied by rpm, waiting for a notification$/m, "$name is denied and waits");
	query(qq{SELECT ratelimit.rl_debug_set_clock('2030-01-01 00:00:00+00'::timestamptz
												  + interval '$minute min')});
	$h->finish;
	is($h->result(0), 0, "$name exits successfully") or diag("stdout:\n$out\nstderr:\n$err");
	my @denied = $out =~ /^denied/mg;
	is(scalar(@denied), 1, "$name woke on the notification and was not denied again");
	is(query(qq{SELECT granted || ' ' || in_flight FROM ratelimit.rl_status WHERE model = '$model'}),
		($jobs + 1) . ' 0', "$name was granted every call and released every lease");
	return ($out, $err);
}

SKIP:
{
	my ($python) = grep {
		system("$_ -c 'import psycopg' >/dev/null 2>&1") == 0
	} ('python3', '/usr/bin/python3');
	if (!$python)
	{
		BAIL_OUT('python3-psycopg is not installed, and CI must run the examples') if $ENV{CI};
		skip 'psycopg 3 is not installed (apt-get install python3-psycopg)', 7;
	}
	my ($out) = run_client('wait_in_server.py', $python, "$root/examples/wait_in_server.py");
	my @released = $out =~ /^lease [0-9]+: released True, 150 tokens refunded, cost 0\.0036\b/mg;
	is(scalar(@released), 3, 'wait_in_server.py: three calls granted and released');

	($out) = run_listener('listen.py', 'examples/listen.py', 20,
		$python, "$root/examples/listen.py", 'examples/listen.py', '20');
	@released = $out =~ /^lease [0-9]+: released True$/mg;
	is(scalar(@released), 20, 'listen.py: 20 calls granted and released');
}

SKIP:
{
	my $have_npm = system('node --version >/dev/null 2>&1 && npm --version >/dev/null 2>&1') == 0;
	my ($npm_out, $npm_err) = ('', '');
	# from the npm cache when it has the locked versions; the registry otherwise
	my $installed = $have_npm && IPC::Run::run(
		[ 'npm', 'ci', '--prefer-offline', '--no-audit', '--no-fund', '--prefix', "$root/examples" ],
		'>', \$npm_out, '2>', \$npm_err);
	if (!$installed)
	{
		my $why = $have_npm ? "npm ci failed in examples/: $npm_err" : 'node and npm are not installed';
		BAIL_OUT("$why, and CI must run the examples") if $ENV{CI};
		skip $why, 8;
	}
	my ($out, $err) = run_client('wait_in_server.js', 'node', "$root/examples/wait_in_server.js");
	my @released = $out =~ /^lease [0-9]+: released true, 150 tokens refunded, cost 0\.0036\b/mg;
	is(scalar(@released), 3, 'wait_in_server.js: three calls granted and released');

	($out, $err) = run_listener('listen.js', 'examples/listen.js', 20,
		'node', "$root/examples/listen.js", 'examples/listen.js', '20');
	@released = $out =~ /^lease [0-9]+: released true$/mg;
	is(scalar(@released), 20, 'listen.js: 20 calls granted and released');
	unlike($err, qr/MaxListenersExceededWarning/, 'listen.js: no listener leak over 20 calls');
}

my ($out_c) = run_listener('rl_listen', 'examples/rl_listen', 1,
	"$root/tests/clients/rl_listen", $ENV{DATABASE_URL}, 'examples/rl_listen', '60');
like($out_c, qr/^released: t$/m, 'rl_listen: granted and released');

$node->stop;
done_testing();
