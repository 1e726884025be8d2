# The memory of a waiting backend stays flat however often it wakes.  A
# request of a job type waits for its share of a busy model while another
# session acquires and releases on that model tens of thousands of times,
# each release waking the waiter.  pg_log_backend_memory_contexts() writes
# the waiter's memory contexts (what pg_backend_memory_contexts shows for
# one's own backend) to the log after 5000 releases and after 40000 more:
# the total must not grow (before, it grew with every wake-up).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('memory');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.ratio_interval = '1h'
});
$node->start;

sub query { return $node->safe_psql('postgres', shift); }

# 'batch' may have 2 of the 4 slots; both are taken, so a third batch job
# waits while 'chat' jobs come and go
query(q{
	CREATE EXTENSION pg_ratelimit;
	SELECT rl_define_model('busy', max_concurrent => 4);
	SELECT rl_define_job_type('batch', ratio => 0.5, flexible => false);
	SELECT rl_define_job_type('chat', ratio => 0.5, flexible => false);
	SELECT rl_acquire('busy', job_type => 'batch', ttl => '1 hour');
	SELECT rl_acquire('busy', job_type => 'batch', ttl => '1 hour');
});

my $waiter = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $waiter->query_safe('SELECT pg_backend_pid()');
$waiter->query_until(qr/started/,
	"\\echo started\nSELECT granted FROM rl_acquire('busy', job_type => 'batch', max_wait => '10 min');\n");
$node->poll_query_until('postgres', "SELECT waiting = 1 FROM rl_status WHERE model = 'busy'")
  or die 'the batch job did not wait';

# acquire and release chat jobs n times, in one statement: every release
# wakes the waiter
sub churn
{
	my $n = shift;
	query(qq{
		DO \$\$
		BEGIN
			FOR i IN 1..$n LOOP
				PERFORM rl_release((rl_acquire('busy', job_type => 'chat')).lease_id);
			END LOOP;
		END
		\$\$;
	});
}

# the waiter's memory in use, as its contexts were written to the log
sub waiter_memory
{
	my $offset = -s $node->logfile;
	query("SELECT pg_log_backend_memory_contexts($pid)");
	foreach (1 .. 300)
	{
		return $1
		  if substr(slurp_file($node->logfile), $offset) =~
		  /logging memory contexts of PID $pid.*?Grand total: (\d+) bytes/s;
		usleep(100_000);
	}
	die 'the waiter did not log its memory contexts';
}

churn(5000);
my $before = waiter_memory();
churn(40000);
my $after = waiter_memory();
is(query("SELECT waiting FROM rl_status WHERE model = 'busy'"), '1', 'the batch job still waits');
cmp_ok($after - $before, '<', 64 * 1024,
	"the waiter's memory did not grow over 40000 releases ($before -> $after bytes)");
note("waiter memory: $before bytes after 5000 releases, $after after 45000");

query("SELECT pg_cancel_backend($pid)");
$waiter->quit;
$node->stop;
done_testing();
