# contrib/prometheus/queries.yaml through the Prometheus PostgreSQL exporter
# (Debian's prometheus-postgres-exporter): every metric the file declares is
# served, with its type and labels, by a role with no privilege but CONNECT
# and USAGE on the schema; values follow what the test did (grants, denials
# of each limit, a waiter, cost); the queries run without error; and every
# metric the Grafana dashboard (contrib/grafana/pg_ratelimit.json) uses is
# one the exporter serves.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(usleep);
use Test::More;

# scripts/test.sh installs the exporter when run as root; CI runs it as
# root, so there a missing exporter is a failure, not a skip
my ($exporter) = grep { -x $_ }
  map { my $d = $_; map { "$d/$_" } 'prometheus-postgres-exporter', 'postgres_exporter' }
  (split(/:/, $ENV{PATH}), '/usr/bin');
if (!$exporter)
{
	BAIL_OUT('prometheus-postgres-exporter is not installed, and CI must run this test')
	  if $ENV{CI};
	plan skip_all => 'prometheus-postgres-exporter is not installed (apt-get install '
	  . 'prometheus-postgres-exporter, or run scripts/test.sh as root)';
}

my $queries_file = '../../contrib/prometheus/queries.yaml';
my $dashboard_file = '../../contrib/grafana/pg_ratelimit.json';
# run from the top of the tree (prove) or from tests/t
foreach my $f (\$queries_file, \$dashboard_file)
{
	(my $top = $$f) =~ s{^\.\./\.\./}{};
	$$f = -e $top ? $top : $$f;
	-e $$f or die "$$f not found";
}

my $node = PostgreSQL::Test::Cluster->new('prometheus');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$node->append_conf('postgresql.conf', "ratelimit.enable_test_clock = on");
# the instance stays live however slow the machine
$node->append_conf('postgresql.conf', "ratelimit.instance_timeout = '1h'");
$node->start;

# the test's own sessions find the functions before and after the move into
# the schema ratelimit; the exporter's queries name the schema themselves
sub query
{
	return $node->safe_psql('postgres', 'SET search_path = public, ratelimit; ' . shift);
}

# the extension in the schema ratelimit, as a restored dump creates it: so
# with the 1.0 layout (objects where the extension is created) and with the
# 1.1 one (the extension moves into ratelimit)
$node->safe_psql('postgres', q{
	CREATE SCHEMA ratelimit;
	CREATE EXTENSION pg_ratelimit SCHEMA ratelimit;
	CREATE ROLE prometheus LOGIN;
	GRANT USAGE ON SCHEMA ratelimit TO prometheus;
});
query(q{
	SELECT rl_debug_set_clock('2030-01-01 00:00:00+00');
	SELECT rl_define_model('chat', rpm => 4, tpm => 1000, rpd => 100, tpd => 100000,
						   max_concurrent => 3, price_input => 2, price_output => 8);
	SELECT rl_define_model('embed', max_concurrent => 1);
	SELECT rl_define_model('unlimited');
	SELECT rl_define_job_type('batch', est_tokens => 100, ratio => 0.25, flexible => false);
});

# chat: two grants released with tokens (cost), one lease kept open
my $l1 = query("SELECT lease_id FROM rl_acquire('chat', tokens => 200)");
my $l2 = query("SELECT lease_id FROM rl_acquire('chat', 'batch', tokens => 100)");
query("SELECT rl_release($l1, input_tokens => 150, output_tokens => 50)");
query("SELECT rl_release($l2, input_tokens => 100, output_tokens => 0)");
query("SELECT rl_acquire('chat', tokens => 100)");
# denied by tpm (600 more do not fit in what is left of 1000), then by the
# batch job type's share of rpm (a quarter of 4)
is(query("SELECT granted::text || ' ' || limited_by FROM rl_acquire('chat', tokens => 800)"),
	'false tpm', 'chat: a denial by tpm');
is(query("SELECT granted::text || ' ' || limited_by FROM rl_acquire('chat', 'batch')"),
	'false job_type', 'chat: a denial by the job type share');
# a fourth request fills rpm; the next is denied by rpm
query("SELECT rl_acquire('chat', tokens => 10)");
is(query("SELECT granted::text || ' ' || limited_by FROM rl_acquire('chat', tokens => 10)"),
	'false rpm', 'chat: a denial by rpm');

# embed: its one slot held, a second call denied by concurrency, then a
# third waits (shown while it waits) and is granted when the slot is freed
my $e1 = query("SELECT lease_id FROM rl_acquire('embed')");
is(query("SELECT granted::text || ' ' || limited_by FROM rl_acquire('embed')"),
	'false concurrency', 'embed: a denial by concurrency');
is(query("SELECT granted::text || ' ' || limited_by FROM rl_acquire('embed', max_wait => '10ms')"),
	'false concurrency', 'embed: a wait that timed out');
my $waiter = $node->background_psql('postgres', on_error_stop => 1);
$waiter->query_safe('SET search_path = public, ratelimit');
$waiter->query_until(qr/started/, q{\echo started
SELECT granted FROM rl_acquire('embed', max_wait => '5 min');
});
$node->poll_query_until('postgres',
	"SELECT waiting = 1 FROM ratelimit.rl_status WHERE model = 'embed'")
  or die 'the waiter did not queue';

# an instance holding a lease
query(q{
	SELECT rl_heartbeat('worker-1', memory_kb => 1024);
	SELECT rl_acquire('unlimited', instance => 'worker-1');
});

######################################################################
# The exporter

my $edir = PostgreSQL::Test::Utils::tempdir_short();
my $eport = PostgreSQL::Test::Cluster::get_free_port();
my $dsn = 'host=' . $node->host . ' port=' . $node->port
  . ' dbname=postgres user=prometheus sslmode=disable';
my $exporter_h = IPC::Run::start(
	[
		$exporter, "--extend.query-path=$queries_file",
		"--web.listen-address=127.0.0.1:$eport",
		# only the queries of the file: nothing else to fail or to slow the test
		'--disable-default-metrics', '--disable-settings-metrics',
		'--no-collector.database', '--no-collector.bgwriter'
	],
	'>', "$edir/exporter.log", '2>&1',
	init => sub { $ENV{DATA_SOURCE_NAME} = $dsn; });

my $http = HTTP::Tiny->new(timeout => $PostgreSQL::Test::Utils::timeout_default);

# One scrape, parsed: {name}{type}, {name}{help}, {name}{samples} =
# [ { labels => {...}, value => ... } ]
sub scrape
{
	my $res;
	foreach (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
	{
		$res = $http->get("http://127.0.0.1:$eport/metrics");
		last if $res->{success};
		usleep(100_000);
	}
	$res->{success}
	  or BAIL_OUT("the exporter does not answer: $res->{status} $res->{content}\n"
		  . slurp_file("$edir/exporter.log"));
	my %m;
	foreach my $line (split /\n/, $res->{content})
	{
		if ($line =~ /^# (TYPE|HELP) (\w+) (.*)$/)
		{
			$m{$2}{ lc $1 } = $3;
		}
		elsif ($line =~ /^(\w+)(?:\{(.*)\})? (\S+)$/)
		{
			my ($name, $labels, $value) = ($1, $2 // '', $3);
			my %l = $labels =~ /(\w+)="((?:[^"\\]|\\.)*)"/g;
			push @{ $m{$name}{samples} }, { labels => \%l, value => $value };
		}
	}
	return \%m;
}

# The value of metric $name whose labels include %want (undef: none)
sub value
{
	my ($m, $name, %want) = @_;
  SAMPLE:
	foreach my $s (@{ $m->{$name}{samples} // [] })
	{
		foreach my $k (keys %want)
		{
			next SAMPLE unless ($s->{labels}{$k} // '') eq $want{$k};
		}
		return $s->{value};
	}
	return undef;
}

my $m = scrape();
is(value($m, 'pg_exporter_user_queries_load_error'), '0', 'the exporter loaded queries.yaml');
is(value($m, 'pg_exporter_last_scrape_error'), '0', 'every query ran without error');

# What queries.yaml declares: query name => { labels => [...], metrics =>
# { column => usage } }
my %declared;
{
	my ($q, $col);
	foreach my $line (split /\n/, slurp_file($queries_file))
	{
		next if $line =~ /^\s*#/;
		if ($line =~ /^(\w+):\s*$/) { $q = $1; $declared{$q} = { labels => [], metrics => {} }; }
		elsif ($line =~ /^\s+- (\w+):\s*$/) { $col = $1; }
		elsif ($line =~ /^\s+usage:\s*"?(\w+)"?/)
		{
			if ($1 eq 'LABEL') { push @{ $declared{$q}{labels} }, $col; }
			else { $declared{$q}{metrics}{$col} = $1; }
		}
	}
}
ok(scalar(keys %declared) >= 5, 'queries.yaml declares its queries')
  or diag explain \%declared;

my %served;
foreach my $q (sort keys %declared)
{
	my @labels = sort(@{ $declared{$q}{labels} }, 'server');
	foreach my $col (sort keys %{ $declared{$q}{metrics} })
	{
		my $name = "${q}_$col";
		$served{$name} = 1;
		my $samples = $m->{$name}{samples} // [];
		ok(@$samples > 0, "$name is served") or next;
		is($m->{$name}{type}, lc $declared{$q}{metrics}{$col}, "$name is a " . lc $declared{$q}{metrics}{$col});
		my @bad = grep { join(',', sort keys %{ $_->{labels} }) ne join(',', @labels) } @$samples;
		ok(!@bad, "$name has the labels " . join(', ', @labels))
		  or diag explain \@bad;
		my @nan = grep { $_->{value} !~ /^-?[0-9.e+-]+$/ } @$samples;
		ok(!@nan, "$name has numbers only") or diag explain \@nan;
	}
}
ok($served{$_}, "$_ is declared in queries.yaml")
  foreach grep { /^pg_ratelimit_/ } sort keys %$m;

# the values follow what the test did
is(value($m, 'pg_ratelimit_model_granted_total', model => 'chat'), '4', 'chat: 4 grants');
is(value($m, 'pg_ratelimit_model_denied_total', model => 'chat'), '3', 'chat: 3 refused calls');
is(value($m, 'pg_ratelimit_model_in_flight', model => 'chat'), '2', 'chat: 2 leases open');
is(value($m, 'pg_ratelimit_model_requests_total', model => 'chat'), '4', 'chat: 4 requests');
is(value($m, 'pg_ratelimit_model_input_tokens_total', model => 'chat'), '250', 'chat: input tokens');
is(value($m, 'pg_ratelimit_model_output_tokens_total', model => 'chat'), '50', 'chat: output tokens');
# 250 input tokens at 2 and 50 output tokens at 8 per million
cmp_ok(value($m, 'pg_ratelimit_model_cost_total', model => 'chat'), '==', 0.0009, 'chat: cost');
cmp_ok(value($m, 'pg_ratelimit_model_cost_today', model => 'chat'), '==', 0.0009, 'chat: cost today');
foreach my $limit (qw(rpm tpm job_type))
{
	is(value($m, 'pg_ratelimit_denials_total', model => 'chat', limit => $limit), '1',
		"chat: one denial by $limit");
}
foreach my $limit (qw(rpd tpd concurrency memory))
{
	is(value($m, 'pg_ratelimit_denials_total', model => 'chat', limit => $limit), '0',
		"chat: no denial by $limit");
}
is(value($m, 'pg_ratelimit_model_denied_total', model => 'embed'), '2', 'embed: 2 refused calls');
is(value($m, 'pg_ratelimit_denials_total', model => 'embed', limit => 'concurrency'), '2',
	'embed: both by concurrency');
is(value($m, 'pg_ratelimit_waits_total', model => 'embed', outcome => 'timed_out'), '1',
	'embed: one wait timed out');
ok(value($m, 'pg_ratelimit_waits_seconds_total', model => 'embed', outcome => 'timed_out') > 0,
	'embed: the seconds it waited');
is(value($m, 'pg_ratelimit_waits_total', model => 'embed', outcome => 'granted'), '0',
	'embed: no wait granted yet');
is(value($m, 'pg_ratelimit_model_waiting', model => 'embed'), '1', 'embed: one waiter');
is(value($m, 'pg_ratelimit_model_waiting', model => 'chat'), '0', 'chat: no waiter');
is(value($m, 'pg_ratelimit_model_limit_value', model => 'chat', limit => 'rpm'), '4', 'chat: rpm limit');
is(value($m, 'pg_ratelimit_model_limit_value', model => 'chat', limit => 'tpm'), '1000', 'chat: tpm limit');
# the day's windows (the minute's may have rolled over by now on a slow machine)
is(value($m, 'pg_ratelimit_model_limit_value', model => 'chat', limit => 'rpd'), '100', 'chat: rpd limit');
is(value($m, 'pg_ratelimit_model_limit_used', model => 'chat', limit => 'rpd'), '4', 'chat: rpd used');
is(value($m, 'pg_ratelimit_model_limit_used', model => 'chat', limit => 'tpd'), '410',
	'chat: tpd used (releases settle the tokens)');
is(value($m, 'pg_ratelimit_model_limit_used', model => 'chat', limit => 'concurrency'), '2',
	'chat: concurrency used');
is(value($m, 'pg_ratelimit_model_limit_value', model => 'unlimited', limit => 'rpm'), undef,
	'no row for a limit the model does not have');
is(value($m, 'pg_ratelimit_job_type_granted_total', model => 'chat', job_type => 'batch'), '1',
	'batch on chat: one grant');
is(value($m, 'pg_ratelimit_job_type_denied_total', model => 'chat', job_type => 'batch'), '1',
	'batch on chat: one refused call');
is(value($m, 'pg_ratelimit_job_type_limit_share', model => 'chat', job_type => 'batch', limit => 'rpm'),
	'1', 'batch on chat: its share of rpm');
is(value($m, 'pg_ratelimit_instances_live'), '1', 'one live instance');
is(value($m, 'pg_ratelimit_instances_leases'), '1', 'the instance holds one lease');
is(value($m, 'pg_ratelimit_worker_healthy'), '1', 'the worker is healthy');
is(value($m, 'pg_ratelimit_worker_running'), '1', 'the worker is running');
ok(value($m, 'pg_ratelimit_worker_persist_rounds_total') > 0, 'the worker saved the state');
ok(value($m, 'pg_ratelimit_worker_last_persist_age_seconds') >= 0, 'the age of the last save');
is(value($m, 'pg_ratelimit_worker_last_error_timestamp_seconds'), '0', 'the worker logged no error');

# the waiter is granted once the slot is freed
query("SELECT rl_release($e1)");
$waiter->query_until(qr/^t$/m, '');
$waiter->quit;
$m = scrape();
is(value($m, 'pg_ratelimit_model_waiting', model => 'embed'), '0', 'embed: the waiter left');
is(value($m, 'pg_ratelimit_model_granted_total', model => 'embed'), '2', 'embed: the waiter was granted');
is(value($m, 'pg_ratelimit_waits_total', model => 'embed', outcome => 'granted'), '1',
	'embed: one wait granted');
ok(value($m, 'pg_ratelimit_waits_seconds_total', model => 'embed', outcome => 'granted') > 0,
	'embed: the seconds the granted wait took');

######################################################################
# The dashboard

my $dashboard = decode_json(slurp_file($dashboard_file));
ok(ref $dashboard eq 'HASH' && ref $dashboard->{panels} eq 'ARRAY', 'the dashboard is JSON with panels');
my %used;
my @exprs;
my $walk;
$walk = sub {
	my $p = shift;
	push @exprs, map { $_->{expr} // () } @{ $p->{targets} // [] };
	$walk->($_) foreach @{ $p->{panels} // [] };
};
$walk->($_) foreach @{ $dashboard->{panels} };
push @exprs, map { ref $_->{query} eq 'HASH' ? $_->{query}{query} // () : $_->{query} // () }
  @{ $dashboard->{templating}{list} // [] };
$used{$_} = 1 foreach map { /\b(pg_ratelimit_[a-z_]+)/g } @exprs;
ok(scalar(keys %used) >= 10, 'the dashboard uses the metrics') or diag explain \@exprs;
ok($m->{$_}{samples}, "the dashboard's $_ is served") foreach sort keys %used;

$exporter_h->kill_kill;
my $log = slurp_file("$edir/exporter.log");
unlike($log, qr/level=(error|warn)|Error running query/i, 'the exporter logged no error')
  or diag $log;

$node->stop;
done_testing();
