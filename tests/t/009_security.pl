# Security: the SQL the extension runs for itself cannot be hijacked by
# objects an ordinary role plants.  The attacker owns the database the
# limiter lives in (in PostgreSQL 15 the owner can create in public),
# puts public ahead of pg_catalog in the database's search_path, plants
# operators (*(numeric,integer), =(oid,oid), =(text,text), ...) and now()
# in public, each noting that it ran and making the attacker superuser
# when run by one, overloads of the extension's own helper functions in
# public (the schema of a 1.0 installation), and look-alike rl_* tables
# (other limits, counters and a test clock offset of a century) with an
# =(oid,oid) that points the extension's schema at them in a schema of its
# own.  Through the update of a 1.0 installation (in public) to 1.2 (in
# ratelimit, where the attacker cannot create), a job type defined by a
# superuser, a clean restart (the worker loads the state), a crash restart,
# and restarts without a worker after which the attacker, then an ordinary
# role without any privilege on the internal tables, calls first: no
# planted function runs, the attacker never becomes superuser, the first
# call succeeds and the limiter keeps its own limits, counters and clock.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(usleep);
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('security');
$node->init;
$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.persist_interval = '200ms'
ratelimit.instance_timeout = '1h'
restart_after_crash = on
});
$node->start;

sub query { return $node->safe_psql('app', shift); }

# Run SQL in a session with the database's own search_path, as a role;
# returns (exit code, stdout, stderr)
sub victim
{
	my ($role, $sql) = @_;
	local $ENV{PGOPTIONS} = '';
	my ($ret, $stdout, $stderr) = $node->psql('app', $sql, extra_params => [ '-U', $role ]);
	return ($ret, $stdout, $stderr);
}

# The pid of a worker other than $old_pid that has finished a round (so it
# loaded the state); survives the server restarting under us.
sub wait_for_worker_round
{
	my ($old_pid) = @_;
	foreach (1 .. 600)
	{
		# during a crash restart psql may exit before it reads its query,
		# and IPC::Run then dies of a broken pipe: try again
		my ($ret, $stdout) = eval { $node->psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker' AND state = 'idle'") };
		return $stdout if defined $ret && $ret == 0 && $stdout ne '' && $stdout ne $old_pid;
		usleep(100_000);
	}
	die 'no pg_ratelimit worker finished a round';
}

$node->safe_psql('postgres', q{
	CREATE ROLE attacker LOGIN;
	CREATE ROLE app_user LOGIN;
	CREATE DATABASE app OWNER attacker;
});
$node->append_conf('postgresql.conf', "ratelimit.database = 'app'");
$node->restart;
my $worker = wait_for_worker_round('');

# The administrator set the limiter up as the README of 1.0 said: the
# extension in public, a model, an instance and some traffic (3 granted, one
# lease open).
query(q{
	CREATE EXTENSION pg_ratelimit VERSION '1.0';
	SELECT rl_define_model('gpt', rpm => 60, tpm => 100000, max_concurrent => 5);
	SELECT rl_heartbeat('w1');
	SELECT rl_release((rl_acquire('gpt', tokens => 100, instance => 'w1')).lease_id);
	SELECT rl_release((rl_acquire('gpt', tokens => 100, instance => 'w1')).lease_id);
	SELECT (rl_acquire('gpt', tokens => 100, instance => 'w1')).granted;
});

# From now on the test's own queries put pg_catalog first, so that they
# never call what the attacker plants; the sessions under attack clear this
# and get the database's search_path (victim() above).
$ENV{PGOPTIONS} = '-c search_path=pg_catalog,ratelimit,public';

# Then the attacker plants, as the owner of the database and without any
# other privilege.
my ($planted, undef, $plant_err) = victim('attacker', q{
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;

-- what ran, as whom, where: a table for the details and a sequence, which
-- counts even in a transaction that rolls back
CREATE TABLE evil.log (op text, who text, super boolean, pid integer,
					   backend_type text, query text);
GRANT INSERT ON evil.log TO PUBLIC;
CREATE SEQUENCE evil.hits;
GRANT USAGE ON SEQUENCE evil.hits TO PUBLIC;

CREATE FUNCTION evil.note(op text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	super boolean := (SELECT r.rolsuper FROM pg_catalog.pg_roles r
					  WHERE r.rolname OPERATOR(pg_catalog.=) current_user);
BEGIN
	PERFORM pg_catalog.nextval('evil.hits');
	INSERT INTO evil.log
	SELECT op, current_user, super, pg_catalog.pg_backend_pid(), a.backend_type,
		   pg_catalog.current_query()
	FROM pg_catalog.pg_stat_activity a
	WHERE a.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid();
	IF super THEN
		EXECUTE 'ALTER ROLE attacker SUPERUSER';
	END IF;
END
$$;

-- look-alike tables: other limits, counters, instances and a clock a
-- century ahead
CREATE TABLE evil.rl_model (
	model text, rpm bigint, tpm bigint, rpd bigint, tpd bigint, max_concurrent integer,
	price_input numeric NOT NULL DEFAULT 0, price_output numeric NOT NULL DEFAULT 0,
	price_cached numeric NOT NULL DEFAULT 0, count_cached boolean NOT NULL DEFAULT true,
	created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE evil.rl_job_type (
	job_type text, est_tokens bigint NOT NULL DEFAULT 0, est_requests integer NOT NULL DEFAULT 1,
	est_memory_kb bigint NOT NULL DEFAULT 0, ratio float8, flexible boolean NOT NULL DEFAULT true,
	max_wait interval,
	created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE evil.rl_job_type_wait (job_type text, model text, max_wait interval NOT NULL);
CREATE TABLE evil.rl_counter (
	model text, minute_start timestamptz NOT NULL, requests_minute bigint NOT NULL,
	tokens_minute bigint NOT NULL, day_start timestamptz NOT NULL, requests_day bigint NOT NULL,
	tokens_day bigint NOT NULL, granted bigint NOT NULL, denied bigint NOT NULL,
	expired bigint NOT NULL, overage_events bigint NOT NULL, overage_tokens bigint NOT NULL,
	usage_day date, usage_requests bigint NOT NULL DEFAULT 0, usage_input bigint NOT NULL DEFAULT 0,
	usage_output bigint NOT NULL DEFAULT 0, usage_cached bigint NOT NULL DEFAULT 0,
	usage_cost numeric NOT NULL DEFAULT 0, usage_overage_events bigint NOT NULL DEFAULT 0,
	usage_overage_tokens bigint NOT NULL DEFAULT 0, saved_at timestamptz NOT NULL);
CREATE TABLE evil.rl_share_counter (
	model text NOT NULL, job_type text NOT NULL, base_ratio float8 NOT NULL, ratio float8 NOT NULL,
	minute_start timestamptz NOT NULL, requests_minute bigint NOT NULL,
	tokens_minute bigint NOT NULL, jobs_minute bigint NOT NULL, day_start timestamptz NOT NULL,
	requests_day bigint NOT NULL, tokens_day bigint NOT NULL, jobs_day bigint NOT NULL,
	granted bigint NOT NULL, denied bigint NOT NULL, usage_day date,
	usage_requests bigint NOT NULL DEFAULT 0, usage_input bigint NOT NULL DEFAULT 0,
	usage_output bigint NOT NULL DEFAULT 0, usage_cached bigint NOT NULL DEFAULT 0,
	usage_cost numeric NOT NULL DEFAULT 0, usage_overage_events bigint NOT NULL DEFAULT 0,
	usage_overage_tokens bigint NOT NULL DEFAULT 0, saved_at timestamptz NOT NULL);
CREATE TABLE evil.rl_lease_state (
	lease_id bigint, model text NOT NULL, job_type text, instance text, tokens bigint NOT NULL,
	requests integer NOT NULL, minute_start timestamptz NOT NULL, day_start timestamptz NOT NULL,
	acquired_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, pid integer NOT NULL,
	role_oid oid NOT NULL);
CREATE TABLE evil.rl_usage_daily (
	day date NOT NULL, model text NOT NULL, job_type text NOT NULL, requests bigint NOT NULL,
	input_tokens bigint NOT NULL, output_tokens bigint NOT NULL, cached_tokens bigint NOT NULL,
	cost numeric NOT NULL, overage_events bigint NOT NULL, overage_tokens bigint NOT NULL);
CREATE TABLE evil.rl_instance_state (
	instance text, memory_kb bigint, registered_at timestamptz NOT NULL,
	last_heartbeat timestamptz NOT NULL, role_oid oid);
CREATE TABLE evil.rl_saved_clock (
	id integer, clock_offset_us bigint NOT NULL, saved_at timestamptz NOT NULL);

INSERT INTO evil.rl_model (model, rpm, tpm, max_concurrent)
VALUES ('gpt', 999999, 999999999, 999), ('evil-model', 999999, 999999999, 999);
INSERT INTO evil.rl_job_type (job_type, ratio) VALUES ('evil-job', 1);
INSERT INTO evil.rl_counter
SELECT 'gpt', date_trunc('minute', now()), 0, 0, date_trunc('day', now()), 0, 0,
	   424242, 0, 0, 0, 0, NULL, 0, 0, 0, 0, 0, 0, 0, now();
INSERT INTO evil.rl_instance_state VALUES ('evil-instance', NULL, now(), now());
INSERT INTO evil.rl_saved_clock VALUES (1, 100::bigint * 365 * 86400 * 1000000, now());

-- in its own schema, an =(oid,oid) that says the extension's schema
-- (public in 1.0, ratelimit in 1.1) is this one
CREATE FUNCTION evil.oideq(oid, oid) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
	ext oid := coalesce(pg_catalog.to_regnamespace('ratelimit'), 'public'::regnamespace);
	mine oid := 'evil'::regnamespace;
BEGIN
	PERFORM evil.note('evil.=(oid,oid)');
	IF ($1 OPERATOR(pg_catalog.=) ext AND $2 OPERATOR(pg_catalog.=) mine) OR
	   ($1 OPERATOR(pg_catalog.=) mine AND $2 OPERATOR(pg_catalog.=) ext) THEN
		RETURN true;
	END IF;
	IF $1 OPERATOR(pg_catalog.=) ext AND $2 OPERATOR(pg_catalog.=) ext THEN
		RETURN false;
	END IF;
	RETURN $1 OPERATOR(pg_catalog.=) $2;
END
$$;
CREATE OPERATOR evil.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = evil.oideq);

-- in public: the operators of the extension's queries, right answers but
-- noting that they ran (and escalating when a superuser runs them)
CREATE FUNCTION public.evil_mul(numeric, integer) RETURNS numeric LANGUAGE plpgsql AS $$
BEGIN
	PERFORM evil.note('*(numeric,integer)');
	RETURN $1 OPERATOR(pg_catalog.*) $2::numeric;
END $$;
CREATE OPERATOR public.* (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = public.evil_mul);

CREATE FUNCTION public.evil_oideq(oid, oid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.note('=(oid,oid)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = public.evil_oideq);

CREATE FUNCTION public.evil_nameeq(name, name) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.note('=(name,name)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = name, FUNCTION = public.evil_nameeq);

CREATE FUNCTION public.evil_texteq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.note('=(text,text)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.evil_texteq);

CREATE FUNCTION public.evil_textne(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.note('<>(text,text)'); RETURN $1 OPERATOR(pg_catalog.<>) $2; END $$;
CREATE OPERATOR public.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = public.evil_textne);

CREATE FUNCTION public.evil_int8ne(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.note('<>(bigint,bigint)'); RETURN $1 OPERATOR(pg_catalog.<>) $2; END $$;
CREATE OPERATOR public.<> (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.evil_int8ne);

CREATE FUNCTION public.evil_int84eq(bigint, integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.note('=(bigint,integer)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = public.evil_int84eq);

CREATE FUNCTION public.evil_tstzeq(timestamptz, timestamptz) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.note('=(timestamptz,timestamptz)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.evil_tstzeq);

CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.note('now()'); RETURN pg_catalog.now(); END $$;

-- overloads, in the extension's schema of 1.0, of the helpers the
-- SECURITY DEFINER configuration functions call, closer to the types of
-- their bigint and integer arguments than its numeric (1.1 calls them in
-- ratelimit_internal, where nobody else can create)
CREATE FUNCTION public.rl_internal_check_amount(bigint, text, boolean) RETURNS void
LANGUAGE plpgsql AS $$ BEGIN PERFORM evil.note('rl_internal_check_amount(bigint)'); END $$;
CREATE FUNCTION public.rl_internal_check_amount(integer, text, boolean) RETURNS void
LANGUAGE plpgsql AS $$ BEGIN PERFORM evil.note('rl_internal_check_amount(integer)'); END $$;
CREATE FUNCTION public.rl_internal_check_name(text, character varying) RETURNS void
LANGUAGE plpgsql AS $$ BEGIN PERFORM evil.note('rl_internal_check_name(varchar)'); END $$;

-- and public ahead of pg_catalog for every session, superusers' and the
-- worker's included
ALTER DATABASE app SET search_path = public, pg_catalog;
});
$planted == 0 or die "planting failed: $plant_err";
is(query("SELECT count(*) FROM pg_operator WHERE oprnamespace = 'public'::regnamespace"),
	'8', 'the attacker planted its operators in public');

# What the limiter must keep: its own models, job types and instances, and
# its own clock
my $state_sql = q{
	SELECT (SELECT string_agg(model || ' ' || coalesce(rpm::text, '-') || ' '
							  || coalesce(tpm::text, '-') || ' ' || granted || ' ' || in_flight,
							  ',' ORDER BY model) FROM rl_status)
		   || ' | ' || coalesce((SELECT string_agg(DISTINCT job_type, ',') FROM rl_job_status), '')
		   || ' | ' || coalesce((SELECT string_agg(instance, ',' ORDER BY instance) FROM rl_instances), '')
};
my $clock_sql =
  q{SELECT rl_clock() BETWEEN now() - interval '1 hour' AND now() + interval '1 hour'};

# After each step: nothing planted ran, the attacker is not superuser, the
# state is the limiter's own.  Then undo what the attacker got, so that the
# next step is judged on its own.
sub check_step
{
	my ($step, $job_types) = @_;

	is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'attacker'"),
		'f', "$step: the attacker is not superuser");
	my $hits = query(q{SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM evil.hits});
	is($hits, '0', "$step: no planted function ran");
	diag("$hits calls of planted functions; those whose transaction committed:\n"
		  . query(q{SELECT string_agg(format('%s as %s (superuser: %s) in %s: %s', op, who, super,
								backend_type, query), E'\n') FROM evil.log}))
	  if $hits ne '0';
	is(query($state_sql), "gpt 60 100000 3 1 | $job_types | w1",
		"$step: the limiter has its own limits, counters and instances");
	is(query($clock_sql), 't', "$step: the limiter's clock is its own");

	$node->safe_psql('postgres', 'ALTER ROLE attacker NOSUPERUSER');
	query(q{TRUNCATE evil.log; SELECT setval('evil.hits', 1, false)});
}

# The saved state is complete, its high-water marks down to what is in use
# (so that a crash restores it exactly): a restart has it to load
sub wait_for_saved_state
{
	my ($with_job_type) = @_;
	my $shares = $with_job_type
	  ? q{EXISTS (SELECT FROM rl_share_counter WHERE job_type = 'chat')}
	  : 'true';
	$node->poll_query_until('app', qq{
		SELECT (SELECT granted FROM rl_counter WHERE model = 'gpt') = 3
		   AND (SELECT count(*) FROM rl_lease_state) = 1
		   AND (SELECT count(*) FROM rl_instance_state) = 1
		   AND EXISTS (SELECT FROM rl_saved_clock WHERE clock_offset_us = 0)
		   AND (SELECT in_flight FROM rl_mark WHERE model = 'gpt') = 1
		   AND $shares})
	  or die 'the worker did not save the state';
}

wait_for_saved_state(0);
check_step('after planting', '');

# 0. A superuser updates the extension to 1.2 (through 1.1), in a session with the
# database's search_path: the update script runs as that superuser with
# public (the extension's schema so far) first, and calls nothing planted.
# Everything leaves public, for schemas where only superusers create.
my $superuser = $node->safe_psql('postgres', 'SELECT current_user');
my ($ret, $stdout, $stderr) = victim($superuser, 'ALTER EXTENSION pg_ratelimit UPDATE');
is($ret, 0, 'a superuser updates the extension to 1.2') or diag($stderr);
is(query(q{SELECT extversion || ' ' || extnamespace::regnamespace FROM pg_extension
		   WHERE extname = 'pg_ratelimit'}),
	'1.2 ratelimit', 'the extension is now 1.2, in ratelimit');
check_step('updated to 1.2', '');
wait_for_saved_state(0);

# The attacker, owner of the database, can plant nothing in the new schemas
# nor call the internal helpers
($ret, $stdout, $stderr) = victim('attacker', q{
	CREATE FUNCTION ratelimit.rl_clock(integer) RETURNS timestamptz
	LANGUAGE sql AS 'SELECT pg_catalog.now()'});
like($stderr, qr/permission denied for schema ratelimit/,
	'the attacker cannot create in ratelimit');
($ret, $stdout, $stderr) = victim('attacker', q{
	CREATE FUNCTION ratelimit_internal.rl_internal_check_amount(bigint, text, boolean)
	RETURNS void LANGUAGE sql AS ''});
like($stderr, qr/permission denied for schema ratelimit_internal/,
	'the attacker cannot create in ratelimit_internal');
($ret, $stdout, $stderr) =
  victim('attacker', q{SELECT ratelimit_internal.rl_internal_resync()});
like($stderr, qr/permission denied for schema ratelimit_internal/,
	'the attacker cannot call the internal helpers');

# 1. A superuser changes the configuration: the commit hands it to shared
# memory, in the superuser's session with the database's search_path
# (calling the function by its qualified name, as the README says).
($ret, $stdout, $stderr) =
  victim($superuser, q{SELECT ratelimit.rl_define_job_type('chat', max_wait => '2 seconds')});
is($ret, 0, 'a superuser defines a job type') or diag($stderr);
check_step('job type defined', 'chat');

# 1b. The same with a model, whose limits are bigint and integer arguments
($ret, $stdout, $stderr) = victim($superuser,
	q{SELECT ratelimit.rl_define_model('gpt', rpm => 60, tpm => 100000, max_concurrent => 5)});
is($ret, 0, 'a superuser redefines a model') or diag($stderr);
check_step('model redefined', 'chat');
wait_for_saved_state(1);

# 2. A clean restart: the worker, connected as a superuser, loads the state.
$node->restart;
$worker = wait_for_worker_round('');
check_step('clean restart', 'chat');
wait_for_saved_state(1);

# 3. A crash restart: the new worker loads the state again.
my $doomed = $node->background_psql('postgres');
my $doomed_pid = $doomed->query_safe('SELECT pg_backend_pid()');
kill 'KILL', $doomed_pid;
$worker = wait_for_worker_round($worker);
eval { $doomed->quit; };
like(slurp_file($node->logfile), qr/terminated by signal 9/, 'it was a crash restart');
check_step('crash restart', 'chat');
wait_for_saved_state(1);

# 4. Without a worker (no background worker can register), nobody loads the
# state before the first caller after a start: the attacker, in its own
# schema first, then pg_catalog.
$node->append_conf('postgresql.conf', 'max_worker_processes = 0');
$node->restart;
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'"),
	'0', 'no worker runs');
$node->safe_psql('postgres', 'ALTER ROLE attacker NOSUPERUSER');
query(q{TRUNCATE evil.log; SELECT setval('evil.hits', 1, false)});
($ret, $stdout, $stderr) =
  victim('attacker', q{SET search_path = evil, pg_catalog; SELECT ratelimit.rl_clock()});
is($ret, 0, 'the attacker calls rl_clock() first after a start') or diag($stderr);
unlike($stderr, qr/permission denied/, 'it needs no privilege on the internal tables');
check_step('attacker first after a start', 'chat');

# 5. The same with an ordinary role that planted nothing: it needs no
# privilege on the internal tables either.
wait_for_saved_state(1);
$node->restart;
($ret, $stdout, $stderr) = victim('app_user', q{SELECT rpm FROM ratelimit.rl_status});
is($ret, 0, 'an ordinary role reads rl_status first after a start') or diag($stderr);
unlike($stderr, qr/permission denied/, 'it needs no privilege on the internal tables');
is($stdout, '60', 'it sees the configured limit');
check_step('ordinary role first after a start', 'chat');

$node->stop;
done_testing();
