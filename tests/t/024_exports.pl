# The shared library exports only what PostgreSQL looks up by name: its magic
# block, _PG_init, the entry points of the launcher and the worker, and each
# C function the extension's SQL scripts name with its pg_finfo_ record.
# Everything else is hidden, so no internal name can collide with another library's
# (GNU readline has an rl_restore_state, for one).  And hidden as it is, the
# library still loads, its worker starts and its functions answer; on
# PostgreSQL 18 it says its name and version.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('exports');
my $pkglibdir = $node->config_data('--pkglibdir');
my $sharedir = $node->config_data('--sharedir');
my $library = "$pkglibdir/pg_ratelimit.so";
ok(-f $library, "the installed library is $library");

# The C symbols the SQL scripts name: AS 'MODULE_PATHNAME', 'symbol', or
# AS 'MODULE_PATHNAME' alone for a symbol named like the SQL function
my @scripts = glob("$sharedir/extension/pg_ratelimit--*.sql");
ok(@scripts > 0, 'the installed extension scripts: ' . join(' ', map { s{.*/}{}r } @scripts));
my %sql_functions;
foreach my $script (@scripts)
{
	my $sql = slurp_file($script);
	$sql =~ s/--[^\n]*//g;
	my $function;
	while ($sql =~ m{
			\bCREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+((?:[\w"@]+\.)?[\w"]+)
			| \bAS\s+'(?:MODULE_PATHNAME|\$libdir/pg_ratelimit)'(?:\s*,\s*'(\w+)')?
		}gix)
	{
		if (defined $1)
		{
			($function = $1) =~ s/.*\.//;
			$function =~ s/"//g;
		}
		else
		{
			my $symbol = $2 // $function;
			die "$script: a C function before any CREATE FUNCTION" unless defined $symbol;
			$sql_functions{$symbol} = 1;
		}
	}
}
cmp_ok(scalar(keys %sql_functions), '>=', 10,
	'the scripts name C functions: ' . join(' ', sort keys %sql_functions));

my %expected = map { $_ => 1 } qw(Pg_magic_func _PG_init rl_launcher_main rl_worker_main),
  map { ($_, "pg_finfo_$_") } keys %sql_functions;

# Every symbol the library defines in its dynamic symbol table, whatever its
# kind: functions, and variables too
my ($stdout, $stderr) = run_command([ 'nm', '-D', '--defined-only', $library ]);
is($stderr, '', 'nm reads the library');
my %exported;
foreach my $line (split /\n/, $stdout)
{
	my ($type, $name) = $line =~ /^\s*[0-9a-fA-F]*\s+(\S)\s+(\S+)$/ or next;
	$exported{$name} = $type;
}

my @unexpected = sort grep { !$expected{$_} } keys %exported;
my @missing = sort grep { !exists $exported{$_} } keys %expected;
is(scalar(@unexpected), 0,
	'nothing else is exported' . (@unexpected
		  ? sprintf(' (%d are, e.g. %s)', scalar(@unexpected),
			join(' ', @unexpected[ 0 .. ($#unexpected < 9 ? $#unexpected : 9) ]))
		  : ''));
is(scalar(@missing), 0,
	'the names PostgreSQL looks up are exported' . (@missing ? " (missing: @missing)" : ''));
foreach my $name (sort keys %expected)
{
	is($exported{$name} // 'not exported', 'T', "$name is an exported function")
	  if $exported{$name} && $exported{$name} ne 'T';
}

# The library loads, CREATE EXTENSION finds every C function, the worker
# (found by name through bgw_function_name) starts and grants, and a call
# answers
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_ratelimit'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_ratelimit');
my $workers = 0;
foreach (1 .. 300)
{
	$workers = $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'");
	last if $workers eq '1';
	usleep(100_000);
}
is($workers, '1', 'the background worker runs');
is($node->safe_psql('postgres', q{
	SELECT rl_define_model('m', rpm => 2);
	SELECT granted FROM rl_acquire('m');
	SELECT granted FROM rl_acquire('m');
	SELECT granted || ' ' || limited_by FROM rl_acquire('m');
}), "\nt\nt\nfalse rpm", 'the functions answer: two requests a minute are granted, the third is not');

# PostgreSQL 18 lists the loaded libraries with the name and version their
# magic block gives: the extension's default version with a patch number
if ($node->pg_version >= 18)
{
	is($node->safe_psql('postgres', q{
		SELECT version = (SELECT default_version || '.0' FROM pg_available_extensions
						  WHERE name = 'pg_ratelimit')
		FROM pg_get_loaded_modules() WHERE module_name = 'pg_ratelimit'}),
		't', 'pg_get_loaded_modules() names pg_ratelimit with its version (PostgreSQL 18+)');
}

$node->stop;
done_testing();
