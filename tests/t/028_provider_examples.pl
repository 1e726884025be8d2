# The provider clients of the README (Matching your provider), against the
# provider simulator.
#
# examples/provider_loop.py (psycopg and urllib), examples/provider_openai.js
# (the openai SDK) and examples/provider_anthropic.js (@anthropic-ai/sdk) each
# acquire, call the provider, give its headers to rl_observe and release with
# the usage it reported.  On a server like the demo's, with
# tests/provider/simulator.py as the provider (the SDKs find it through
# OPENAI_BASE_URL and ANTHROPIC_BASE_URL), each example:
#
# - makes its calls; rl_status then shows the limits the provider reported
#   (and that they are the configured ones), the usage the limiter settled is
#   the usage the provider counted, and no lease is left open;
# - meets a 429 when another user of the key (this test, calling the
#   provider directly) has used up the key: rl_observe puts the model in a
#   cooldown that refuses every session with limited_by 'provider', and the
#   example waits in the server and makes its call once the cooldown is over.
#   The 429 comes from a key with rpm 1, whose retry-after is a minute; the
#   test moves the simulator's clock and the limiter's test clock past it
#   instead of waiting.
#
# That the README shows them as they are is tests/t/026_examples.pl's to check.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use Test::More;

my $root = $ENV{TESTDIR};
my @examples = (
	[ 'provider_loop.py',      'openai' ],
	[ 'provider_openai.js',    'openai' ],
	[ 'provider_anthropic.js', 'anthropic' ]);

######################################################################
# What runs them

my ($python) = grep { system("$_ -c 'import psycopg' >/dev/null 2>&1") == 0 } ('python3', '/usr/bin/python3');
if (!$python)
{
	BAIL_OUT('python3-psycopg is not installed, and CI must run the examples') if $ENV{CI};
	plan skip_all => 'psycopg 3 is not installed (apt-get install python3-psycopg)';
}
my $have_npm = system('node --version >/dev/null 2>&1 && npm --version >/dev/null 2>&1') == 0;
my ($npm_out, $npm_err) = ('', '');
# from the npm cache when it has the locked versions; the registry otherwise
my $have_node = $have_npm && IPC::Run::run(
	[ 'npm', 'ci', '--prefer-offline', '--no-audit', '--no-fund', '--prefix', "$root/examples" ],
	'>', \$npm_out, '2>', \$npm_err);
if (!$have_node)
{
	my $why = $have_npm ? "npm ci failed in examples/: $npm_err" : 'node and npm are not installed';
	BAIL_OUT("$why, and CI must run the examples") if $ENV{CI};
	diag("the Node examples are skipped: $why");
}

######################################################################
# A server like the demo's, and two providers

my $node = PostgreSQL::Test::Cluster->new('provider_examples');
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

my $user = getpwuid($>);
$ENV{DATABASE_URL} = "postgresql://$user@/ratelimit_demo?host=" . $node->host . '&port=' . $node->port;
delete $ENV{$_} for qw(PGHOST PGPORT PGUSER PGDATABASE PGOPTIONS);

my $http = HTTP::Tiny->new(timeout => 30);
my @simulators;

# start_simulator(OPTIONS...): its base URL
sub start_simulator
{
	my $out = '';
	my $h = IPC::Run::start([ $python, "$root/tests/provider/simulator.py", '--port', '0', @_ ],
		'>', \$out, '2>', \my $err, IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$h->pump until $out =~ /^([0-9]+)\n/ || !$h->pumpable;
	my ($port) = $out =~ /^([0-9]+)\n/ or die "the simulator did not start: $err";
	push @simulators, $h;
	return "http://127.0.0.1:$port";
}

sub sim_post
{
	my ($url, $path, $body, $headers) = @_;
	my $r = $http->post("$url$path", { content => encode_json($body),
		headers => { 'content-type' => 'application/json', %{ $headers // {} } } });
	return ($r->{status}, $r->{content} =~ /^\{/ ? decode_json($r->{content}) : undef);
}

sub sim_key
{
	my ($url, $key) = @_;
	my $stats = decode_json($http->get("$url/stats")->{content});
	return $stats->{keys}{$key};
}

# the provider's limits, and a model with the same limits
my $provider = start_simulator('--rpm', 60, '--tpm', 20000, '--itpm', 15000, '--otpm', 5000);
# a key with one request a minute, for the 429s
my $tight = start_simulator('--rpm', 1, '--tpm', 100000);

# run_example(NAME, STYLE, URL, KEY, MODEL, JOBS): its IPC::Run harness and output
sub example_command
{
	my ($name, $model, $jobs) = @_;
	return $name =~ /\.py$/
	  ? [ $python, "$root/examples/$name", $model, $jobs ]
	  : [ 'node', "$root/examples/$name", $model, $jobs ];
}

sub set_provider
{
	my ($style, $url, $key) = @_;
	if ($style eq 'openai')
	{
		$ENV{OPENAI_BASE_URL} = "$url/v1";
		$ENV{OPENAI_API_KEY} = $key;
	}
	else
	{
		$ENV{ANTHROPIC_BASE_URL} = $url;
		$ENV{ANTHROPIC_API_KEY} = $key;
	}
}

######################################################################
# The calls go through, and the limiter settles what the provider counted

foreach my $example (@examples)
{
	my ($name, $style) = @$example;
  SKIP:
	{
		skip "node: $name", 12 if $name =~ /\.js$/ && !$have_node;
		my $model = "sim/$name";
		my $key = "key-$name";
		# Anthropic's input and output token limits too
		my $io = $style eq 'anthropic' ? 'itpm => 15000, otpm => 5000,' : '';
		query(qq{SELECT ratelimit.rl_define_model('$model', rpm => 60, tpm => 20000, $io
												  window_type => 'bucket')});
		set_provider($style, $provider, $key);
		my ($out, $err) = ('', '');
		my $ok = IPC::Run::run(example_command($name, $model, 3), '>', \$out, '2>', \$err,
			IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
		ok($ok, "$name exits successfully") or diag("stdout:\n$out\nstderr:\n$err");
		my @calls = $out =~ /^lease [0-9]+: [0-9]+ tokens, the provider has [0-9]+ left$/mg;
		is(scalar(@calls), 3, "$name: three calls, each told what the provider has left")
		  or diag($out);
		like($out, qr/^simulated answer [0-9]+$/m, "$name prints the provider's answers");

		my $sim = sim_key($provider, $key);
		is($sim->{accepted}, 3, "$name: the provider accepted three calls");
		is( query(qq{SELECT provider_rpm || ' ' || provider_tpm || ' ' || provider_limits_differ
					 FROM ratelimit.rl_status WHERE model = '$model'}),
			'60 20000 false', "$name: rl_status shows the limits the provider reported, as configured");
		if ($style eq 'anthropic')
		{
			is( query(qq{SELECT provider_itpm || ' ' || provider_otpm || ' ' || itpm || ' ' || otpm
						 FROM ratelimit.rl_status WHERE model = '$model'}),
				'15000 5000 15000 5000', "$name: and the input and output token limits");
		}
		else
		{
			is(query(qq{SELECT provider_itpm IS NULL AND provider_otpm IS NULL
						FROM ratelimit.rl_status WHERE model = '$model'}),
				't', "$name: OpenAI reports no input and output token limits");
		}
		my ($left) = $out =~ /the provider has ([0-9]+) left\n(?!.*the provider has)/s;
		is(query(qq{SELECT provider_remaining_tokens FROM ratelimit.rl_status WHERE model = '$model'}),
			$left, "$name: rl_status shows the tokens the provider said it had left, last");
		is(query(qq{SELECT provider_observed_at IS NOT NULL AND provider_cooldown_until IS NULL
					AND provider_headers_ignored = 0 FROM ratelimit.rl_status WHERE model = '$model'}),
			't', "$name: every header understood, no cooldown");
		is( query(qq{SELECT requests_total || ' ' || input_tokens_total || ' ' || output_tokens_total
					 FROM ratelimit.rl_stats WHERE model = '$model'}),
			"3 $sim->{used}{input_tokens} $sim->{used}{output_tokens}",
			"$name: the limiter settled the usage the provider counted");
		is(query(qq{SELECT in_flight || ' ' || granted FROM ratelimit.rl_status WHERE model = '$model'}),
			'0 3', "$name: three leases granted, none left open");
		is(query(qq{SELECT count(*) FROM ratelimit.rl_leases WHERE model = '$model'}), '0',
			"$name: rl_leases is empty");
		ok($err !~ /warn|error/i, "$name: nothing on stderr") or diag($err);
	}
}

######################################################################
# A 429: the cooldown holds every session back, the example waits it out

foreach my $example (@examples)
{
	my ($name, $style) = @$example;
  SKIP:
	{
		skip "node: $name", 9 if $name =~ /\.js$/ && !$have_node;
		my $model = "sim/tight/$name";
		my $key = "tight-key-$name";
		query(qq{SELECT ratelimit.rl_define_model('$model', rpm => 1, window_type => 'bucket')});
		# another user of the key takes its one request of the minute
		my ($status) = sim_post($tight, $style eq 'openai' ? '/v1/chat/completions' : '/v1/messages',
			{ model => 'm', max_tokens => 10, messages => [ { role => 'user', content => 'hi' } ] },
			$style eq 'openai' ? { authorization => "Bearer $key" } : { 'x-api-key' => $key });
		is($status, 200, "$name: another user of the key calls the provider");

		set_provider($style, $tight, $key);
		my ($out, $err) = ('', '');
		my $h = IPC::Run::start(example_command($name, $model, 1), '>', \$out, '2>', \$err,
			IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
		$h->pump until $out =~ /^429 from the provider/m || !$h->pumpable;
		like($out, qr/^429 from the provider: every session waits until \S+/m,
			"$name meets a 429 and says until when every session waits");
		# the provider's retry-after is a minute away: the cooldown is on
		is( query(qq{SELECT granted || ' ' || limited_by || ' ' || (retry_after > interval '0')
					 FROM ratelimit.rl_acquire('$model')}),
			'false provider true', "$name: after the 429 another session is refused, limited_by provider");
		is(query(qq{SELECT provider_cooldown_until > ratelimit.rl_clock() FROM ratelimit.rl_status
					WHERE model = '$model'}),
			't', "$name: rl_status shows the cooldown");
		is(query(qq{SELECT count(*) FROM ratelimit.rl_leases WHERE model = '$model'}), '0',
			"$name: the refused call's lease is released while the example waits");

		# a minute later, for the provider and for the limiter
		my ($advanced) = sim_post($tight, '/advance', { seconds => 60 });
		is($advanced, 200, 'the simulator moves a minute on');
		query(q{SELECT ratelimit.rl_debug_set_clock(ratelimit.rl_clock() + interval '61 s')});
		$h->finish;
		is($h->result(0), 0, "$name exits successfully once the cooldown is over")
		  or diag("stdout:\n$out\nstderr:\n$err");
		like($out, qr/^lease [0-9]+: [0-9]+ tokens, the provider has [0-9]+ left$/m,
			"$name: its call went through after the cooldown");
		is( query(qq{SELECT (denied_provider >= 1) || ' ' || requests_total
					 FROM ratelimit.rl_stats WHERE model = '$model'}),
			'true 2', "$name: rl_stats counts the refusal by the provider, and two admissions");
	}
}

$_->kill_kill foreach @simulators;
$node->stop;
done_testing();
