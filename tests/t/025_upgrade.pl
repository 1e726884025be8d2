# Upgrading 1.0 to the current version (1.2, through 1.1).  A 1.0
# installation (in public) with models, job types, per-model waits,
# instances, open leases and usage of the current and of an ended day is
# served by the current library; ALTER EXTENSION UPDATE then moves it into
# the schemas ratelimit and ratelimit_internal and loses
# nothing: configuration, counters, open leases (still releasable, settled
# as before), usage and instances.  The updated database has exactly the
# objects of a fresh installation (same definitions, privileges and
# comments; same pg_dump --schema-only), and its pg_dump restores on
# another server into the same objects, with the configuration and the
# daily usage history, and serves acquires.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

sub new_node
{
	my $name = shift;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', "search_path = 'public, ratelimit'");
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_ratelimit'
ratelimit.database = 'app'
ratelimit.enable_test_clock = on
ratelimit.persist_interval = '200ms'
ratelimit.instance_timeout = '1h'
});
	$node->start;
	$node->safe_psql('postgres', 'CREATE DATABASE app');
	$node->poll_query_until('postgres',
		"SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker' AND datname = 'app')")
	  or die 'the worker did not connect to app';
	return $node;
}

# Every object of the extension with its definition, privileges, initial
# privileges and comment, the schemas and the extension's own record, one
# sorted line each: equal texts mean equal installations.
my $objects_sql = q{
SET search_path = pg_catalog;
WITH members AS (
	SELECT d.classid, d.objid
	FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
	WHERE e.extname = 'pg_ratelimit' AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'),
rels AS (SELECT c.* FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid),
typerels AS (
	SELECT c.* FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
	JOIN pg_class c ON c.oid = t.typrelid)
SELECT line FROM (
	SELECT 'extension ' || extversion || ' in ' || extnamespace::regnamespace
		   || ' relocatable ' || extrelocatable
		   || ' dumps ' || coalesce((SELECT string_agg(c::regclass::text || ' where ' || w, ', ' ORDER BY c::regclass::text)
									  FROM unnest(extconfig, extcondition) u(c, w)), '-') AS line
	FROM pg_extension WHERE extname = 'pg_ratelimit'
	UNION ALL
	SELECT 'schema ' || n.nspname || ' owner ' || n.nspowner::regrole || ' acl ' || coalesce(n.nspacl::text, '-')
		   || ' member ' || EXISTS (SELECT FROM members m WHERE m.classid = 'pg_namespace'::regclass AND m.objid = n.oid)
		   || ' comment ' || coalesce(obj_description(n.oid, 'pg_namespace'), '-')
	FROM pg_namespace n WHERE n.nspname LIKE 'ratelimit%'
	UNION ALL
	SELECT 'member ' || pg_describe_object(m.classid, m.objid, 0) FROM members m
	UNION ALL
	SELECT 'init privileges ' || pg_describe_object(i.classoid, i.objoid, i.objsubid) || ' ' || i.privtype::text
		   || ' ' || i.initprivs::text
	FROM pg_init_privs i
	WHERE EXISTS (SELECT FROM members m WHERE m.classid = i.classoid AND m.objid = i.objoid)
	   OR i.objoid IN (SELECT oid FROM pg_namespace WHERE nspname LIKE 'ratelimit%')
	UNION ALL
	SELECT 'function ' || p.oid::regprocedure || ' owner ' || p.proowner::regrole
		   || ' acl ' || coalesce(p.proacl::text, '-')
		   || ' comment ' || coalesce(obj_description(p.oid, 'pg_proc'), '-') || E'\n'
		   || pg_get_functiondef(p.oid)
	FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
	UNION ALL
	SELECT 'relation ' || c.oid::regclass || ' kind ' || c.relkind::text || ' owner ' || c.relowner::regrole
		   || ' options ' || coalesce(c.reloptions::text, '-') || ' acl ' || coalesce(c.relacl::text, '-')
		   || ' comment ' || coalesce(obj_description(c.oid, 'pg_class'), '-')
		   || CASE c.relkind WHEN 'v' THEN E'\n' || pg_get_viewdef(c.oid) ELSE '' END
	FROM rels c
	UNION ALL
	SELECT 'type ' || t.oid::regtype || ' owner ' || t.typowner::regrole
		   || ' comment ' || coalesce(obj_description(t.oid, 'pg_type'), '-')
	FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
	UNION ALL
	SELECT 'column ' || a.attrelid::regclass || ' #' || a.attnum || ' ' || a.attname || ' '
		   || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
		   || ' default ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '-')
		   || ' comment ' || coalesce(col_description(a.attrelid, a.attnum), '-')
	FROM pg_attribute a
	LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
	WHERE a.attrelid IN (SELECT oid FROM rels UNION ALL SELECT oid FROM typerels)
	  AND a.attnum > 0 AND NOT a.attisdropped
	UNION ALL
	SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
	FROM pg_constraint WHERE conrelid IN (SELECT oid FROM rels)
	UNION ALL
	SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid IN (SELECT oid FROM rels)
	UNION ALL
	SELECT 'trigger ' || pg_get_triggerdef(oid) || ' enabled ' || tgenabled::text
	FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM rels) AND NOT tgisinternal
) lines
ORDER BY line;
};

# Equal texts; when they differ, show the lines that are in only one
sub same_text
{
	my ($got, $want, $name) = @_;
	my (%in_got, %in_want);
	$in_got{$_}++ foreach split /\n/, $got;
	$in_want{$_}++ foreach split /\n/, $want;
	ok($got eq $want, $name)
	  or diag("only in the first:\n  "
		  . join("\n  ", grep { !$in_want{$_} } split /\n/, $got)
		  . "\nonly in the second:\n  "
		  . join("\n  ", grep { !$in_got{$_} } split /\n/, $want));
}

# pg_dump without its comments and the random key of \restrict
sub schema_dump
{
	my $node = shift;
	my $dump = `pg_dump --schema-only -d "@{[$node->connstr('app')]}"`;
	die 'pg_dump failed' if $? != 0;
	return join("\n", grep { !/^(--|\\(un)?restrict )/ && $_ ne '' } split /\n/, $dump);
}

# What must survive the update, as text
my %state_sql = (
	# the columns of 1.0 (1.2 adds window_type, checked after the update)
	models => q{SELECT string_agg((m.model, m.rpm, m.tpm, m.rpd, m.tpd, m.max_concurrent, m.price_input,
								   m.price_output, m.price_cached, m.count_cached, m.created_at,
								   m.updated_at)::text, E'\n' ORDER BY model) FROM rl_model m},
	job_types => q{SELECT string_agg(j::text, E'\n' ORDER BY job_type) FROM rl_job_type j},
	waits => q{SELECT string_agg(w::text, E'\n' ORDER BY job_type, model) FROM rl_job_type_wait w},
	status => q{SELECT string_agg(concat_ws(' ', model, rpm, tpm, rpd, tpd, max_concurrent,
											requests_day, tokens_day, in_flight, granted, denied,
											expired, overage_events, overage_tokens, cost_today),
								  E'\n' ORDER BY model) FROM rl_status},
	job_status => q{SELECT string_agg(concat_ws(' ', model, job_type, base_ratio, flexible, in_flight,
												requests_day, tokens_day, granted, denied),
									  E'\n' ORDER BY model, job_type) FROM rl_job_status},
	leases => q{SELECT string_agg(concat_ws(' ', lease_id, model, job_type, instance, tokens, requests,
											acquired_at, expires_at, pid, role, session_bound),
								  E'\n' ORDER BY lease_id) FROM rl_leases},
	usage => q{SELECT string_agg(u::text, E'\n' ORDER BY day, model, job_type) FROM rl_usage u},
	usage_daily => q{SELECT string_agg(u::text, E'\n' ORDER BY day, model, job_type) FROM rl_usage_daily u},
	instances => q{SELECT string_agg(concat_ws(' ', instance, registered_at, last_heartbeat, memory_kb,
											   live, leases, role), E'\n' ORDER BY instance) FROM rl_instances});

sub state
{
	my $node = shift;
	my %state;
	$state{$_} = $node->safe_psql('app', $state_sql{$_}) foreach keys %state_sql;
	return %state;
}

my $old = new_node('old');
sub query { return $old->safe_psql('app', shift); }

# 1.0, created as 1.0 was: in public
query(q{CREATE EXTENSION pg_ratelimit VERSION '1.0'});
is(query(q{SELECT extversion || ' ' || extnamespace::regnamespace FROM pg_extension
		   WHERE extname = 'pg_ratelimit'}),
	'1.0 public', 'version 1.0 is installed in public');
my $log_offset = -s $old->logfile;

# An ended day of usage (2030-01-01), then the current one
query(q{
	SELECT rl_debug_set_clock('2030-01-01 10:00:05+00');
	SELECT rl_define_model('gpt', rpm => 100, tpm => 100000, rpd => 1000, tpd => 1000000,
						   max_concurrent => 10, price_input => 2, price_output => 8,
						   price_cached => 1);
	SELECT rl_define_model('mini', rpm => 50, count_cached => false);
	SELECT rl_define_job_type('chat', est_tokens => 500, ratio => 0.5, flexible => false,
							  max_wait => '2 seconds');
	SELECT rl_define_job_type('batch', est_tokens => 2000, est_memory_kb => 1000);
	SELECT rl_set_max_wait('batch', 'gpt', '5 seconds');
});
query(q{
	SELECT rl_release((rl_acquire('gpt', 'chat')).lease_id, input_tokens => 400, output_tokens => 200);
	SELECT rl_release((rl_acquire('gpt', 'batch')).lease_id, input_tokens => 1000, output_tokens => 500,
					  cached_tokens => 100);
	SELECT rl_release((rl_acquire('mini', tokens => 10)).lease_id, input_tokens => 10);
	SELECT rl_debug_set_clock('2030-01-02 10:00:05+00');
});
$old->poll_query_until('app', q{SELECT count(*) = 4 FROM rl_usage_daily})
  or die 'the worker did not save the ended day';

# The current day: instances, usage, open leases, a denial
query(q{
	SELECT rl_heartbeat('w1', memory_kb => 100000);
	SELECT rl_heartbeat('w2');
	SELECT rl_release((rl_acquire('gpt', 'chat', instance => 'w2')).lease_id,
					  input_tokens => 300, output_tokens => 300);
	CREATE TEMP TABLE held AS SELECT 'chat' AS what, lease_id
		FROM rl_acquire('gpt', 'chat', instance => 'w1', ttl => '1 hour');
	INSERT INTO held SELECT 'batch', lease_id
		FROM rl_acquire('gpt', 'batch', instance => 'w1', ttl => '1 hour');
	INSERT INTO held SELECT 'mini', lease_id FROM rl_acquire('mini', tokens => 50, ttl => '1 hour');
	SELECT rl_define_model('tiny', rpd => 1);
});
query(q{SELECT granted FROM rl_acquire('tiny'); SELECT granted FROM rl_acquire('tiny')});
my %lease = split /[|\n]/, query(q{
	SELECT job_type, lease_id FROM rl_leases WHERE job_type IS NOT NULL
	UNION ALL SELECT model, lease_id FROM rl_leases WHERE job_type IS NULL});

# The current library serves the 1.0 schema: the worker saves it all, without
# an error
$old->poll_query_until('app', q{
	SELECT (SELECT count(*) FROM rl_lease_state) = 4
	   AND (SELECT count(*) FROM rl_instance_state) = 2
	   AND (SELECT granted FROM rl_counter WHERE model = 'gpt') = 5
	   AND (SELECT denied FROM rl_counter WHERE model = 'tiny') = 1
	   AND (SELECT usage_requests FROM rl_counter WHERE model = 'gpt') = 3})
  or die 'the worker did not save the state';
my $log = slurp_file($old->logfile, $log_offset);
unlike($log, qr/ERROR|WARNING|FATAL/, 'the worker saves the 1.0 schema without errors')
  or diag($log);
is(query(q{SELECT count(*) FROM rl_usage WHERE day = '2030-01-01'}), '3',
	'1.0: the ended day is in rl_usage (per job type, and what had none)');

my %before = state($old);

# The update, while the worker saves every 200 ms; its transaction stays
# open a second longer, so that worker rounds start while it runs and wait
# for it
$log_offset = -s $old->logfile;
query('BEGIN; ALTER EXTENSION pg_ratelimit UPDATE; SELECT pg_sleep(1); COMMIT;');
is(query(q{SELECT extversion || ' ' || extnamespace::regnamespace FROM pg_extension
		   WHERE extname = 'pg_ratelimit'}),
	'1.2 ratelimit', 'updated to 1.2, in ratelimit');
is(query(q{
	SELECT count(*) FROM (
		SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace
		UNION ALL SELECT oid FROM pg_proc WHERE pronamespace = 'public'::regnamespace
		UNION ALL SELECT oid FROM pg_type WHERE typnamespace = 'public'::regnamespace) o}),
	'0', 'nothing is left in public');
is(query(q{SELECT string_agg(DISTINCT window_type, ',') FROM ratelimit.rl_model}), 'fixed',
	'every model counts in fixed windows, as before');
is(query(q{
	SELECT string_agg(DISTINCT pronamespace::regnamespace::text, ',')
	FROM pg_proc WHERE proname LIKE '%\_internal' OR proname LIKE 'rl\_internal\_%'
		OR proname = 'rl_config_trigger'}),
	'ratelimit_internal', 'the internal helpers are in ratelimit_internal');
my %after = state($old);
foreach my $what (sort keys %before)
{
	is($after{$what}, $before{$what}, "the update keeps $what");
}

# Open leases release as before, settled with their estimates
is(query(qq{SELECT concat_ws(' ', released, model, tokens_estimated, tokens_actual, tokens_refunded,
							 overage, cost)
			FROM ratelimit.rl_release($lease{chat}, input_tokens => 300, output_tokens => 100)}),
	't gpt 500 400 100 0 0.0014', 'an open lease releases with a refund');
is(query(qq{SELECT concat_ws(' ', released, model, tokens_estimated, tokens_actual, tokens_refunded,
							 overage, cost)
			FROM ratelimit.rl_release($lease{batch}, input_tokens => 2000, output_tokens => 400,
									  cached_tokens => 100)}),
	't gpt 2000 2500 0 500 0.0073', 'another with an overage');
is(query(qq{SELECT released FROM ratelimit.rl_release($lease{mini})}), 't',
	'a third without usage');
is(query(qq{SELECT released FROM ratelimit.rl_release($lease{chat})}), 'f',
	'a released lease is not released twice');
is(query(q{SELECT concat_ws(' ', in_flight, tokens_day, overage_tokens) FROM ratelimit.rl_status
		   WHERE model = 'gpt'}),
	'0 3500 700', 'the counters moved as the settlements said (3100 - 100 + 500; 200 + 500)');
is(query(q{SELECT concat_ws(' ', granted, limited_by) FROM ratelimit.rl_acquire('tiny')}),
	'f rpd', 'the day\'s requests still count');
query(q{SELECT ratelimit.rl_alter_model('tiny', clear => '{rpd}')});
is(query(q{SELECT granted FROM ratelimit.rl_acquire('tiny')}), 't',
	'the 1.2 functions work: a limit removed with rl_alter_model');

# The worker saves the updated schema, without an error
$old->poll_query_until('app', q{
	SELECT (SELECT count(*) FROM ratelimit.rl_lease_state) = 2
	   AND (SELECT overage_tokens FROM ratelimit.rl_counter WHERE model = 'gpt') = 700})
  or die 'the worker did not save after the update';
$log = slurp_file($old->logfile, $log_offset);
unlike($log, qr/ERROR|WARNING|FATAL/, 'the worker saves the 1.2 schema without errors')
  or diag($log);

# A role given nothing reads the views (their functions in
# ratelimit_internal run with EXECUTE granted to PUBLIC)
query(q{CREATE ROLE reader LOGIN});
my ($ret, $stdout, $stderr) = $old->psql('app', q{
	SELECT (SELECT count(*) FROM ratelimit.rl_status) || ' '
		   || (SELECT count(*) FROM ratelimit.rl_job_status) || ' '
		   || (SELECT count(*) FROM ratelimit.rl_leases) || ' '
		   || (SELECT count(*) FROM ratelimit.rl_instances) || ' '
		   || (SELECT count(*) FROM ratelimit.rl_usage) || ' '
		   || (SELECT count(*) FROM ratelimit.rl_allocation('w1'))},
	extra_params => [ '-U', 'reader' ]);
is($ret, 0, 'a role given nothing reads the views') or diag($stderr);
is($stdout, '3 6 2 2 7 9', 'and sees their rows');
($ret, $stdout, $stderr) = $old->psql('app', q{SELECT ratelimit.rl_acquire('gpt')},
	extra_params => [ '-U', 'reader' ]);
like($stderr, qr/permission denied for function rl_acquire/, 'but may not acquire');
query(q{DROP ROLE reader});

# A fresh installation has exactly the same objects
my $new = new_node('new');
$new->safe_psql('app', 'CREATE EXTENSION pg_ratelimit');
my $updated_objects = $old->safe_psql('app', $objects_sql);
same_text($updated_objects, $new->safe_psql('app', $objects_sql),
	'an updated and a fresh 1.2 installation have the same objects');
like($updated_objects, qr/^function ratelimit_internal\.rl_status_internal\(\) owner \S+ acl -/m,
	'(the objects are listed)');
same_text(schema_dump($old), schema_dump($new),
	'an updated and a fresh 1.2 installation dump the same schema');

# The dump of the updated database restores on the other server, into a
# fresh database of the same name
my $dump_file = $old->basedir . '/app.sql';
system('pg_dump', '-f', $dump_file, '-d', $old->connstr('app')) == 0
  or die 'pg_dump failed';
$new->safe_psql('postgres', 'DROP DATABASE app WITH (FORCE)');
$new->safe_psql('postgres', 'CREATE DATABASE app');
($ret, $stdout, $stderr) = $new->psql('app', "\\i $dump_file");
is($ret, 0, 'the dump restores without an error') or diag($stderr);
is($new->safe_psql('app', q{SELECT extversion || ' ' || extnamespace::regnamespace FROM pg_extension
							WHERE extname = 'pg_ratelimit'}),
	'1.2 ratelimit', 'the restored extension is 1.2, in ratelimit');
same_text($new->safe_psql('app', $objects_sql), $updated_objects,
	'the restored database has the same objects');
my %restored = state($new);
foreach my $what (qw(models job_types waits usage_daily))
{
	is($restored{$what}, $old->safe_psql('app', $state_sql{$what}), "the restore has the $what");
}
is($new->safe_psql('app', q{SELECT string_agg(concat_ws(' ', model, job_type, requests, cost), ','
											   ORDER BY model, job_type) FROM rl_usage}),
	'gpt batch 1 0.0061,gpt chat 1 0.0024,mini 1 0',
	'rl_usage shows the restored history');
$new->poll_query_until('app', q{SELECT count(*) = 3 FROM rl_status})
  or die 'the restored configuration did not reach the limiter';
is($new->safe_psql('app', q{SELECT rpm || ' ' || max_concurrent FROM rl_status WHERE model = 'gpt'}),
	'100 10', 'the limiter has the restored limits');
is($new->safe_psql('app', q{SELECT granted FROM ratelimit.rl_acquire('gpt', 'chat')}), 't',
	'the restored database serves rl_acquire');

# 1.0 installations made as the README of 1.0 advised, in a schema
# ratelimit of one's own, or in another schema: the update ends with the
# same objects (the schema ratelimit keeps what its owner gave it)
my $fresh_objects = $new->safe_psql('app', $objects_sql);
sub without_schema_line { return join("\n", grep { !/^schema ratelimit / } split /\n/, shift); }
foreach my $schema ('ratelimit', 'limits')
{
	query(qq{
		DROP EXTENSION pg_ratelimit;
		DROP SCHEMA ratelimit;
		CREATE SCHEMA $schema;
		GRANT USAGE ON SCHEMA $schema TO PUBLIC;
		CREATE EXTENSION pg_ratelimit VERSION '1.0' SCHEMA $schema;
	});
	query(qq{SELECT $schema.rl_define_model('kept', rpm => 7)});
	query('ALTER EXTENSION pg_ratelimit UPDATE');
	same_text(without_schema_line(query($objects_sql)), without_schema_line($fresh_objects),
		"1.0 in the schema $schema, updated, has the objects of a fresh 1.2");
	is(query(q{SELECT rpm FROM ratelimit.rl_status WHERE model = 'kept'}), '7',
		"1.0 in the schema $schema, updated, keeps its configuration");
	is(query(q{SELECT coalesce(obj_description('ratelimit'::regnamespace, 'pg_namespace'), '-')}),
		'-', "the update leaves the owner's schema ratelimit as it was")
	  if $schema eq 'ratelimit';
	query('DROP SCHEMA limits') if $schema eq 'limits';    # empty: no CASCADE
}

# A schema ratelimit where a role other than a superuser could have put
# something (made ahead of the administrator by a role with CREATE on the
# database, or opened to it): that role could drop or replace what the
# extension keeps there, or shadow what sessions call, so neither the
# install nor the update uses it, and both change nothing
query(q{
	DROP EXTENSION pg_ratelimit;
	DROP SCHEMA ratelimit;
	CREATE ROLE squatter;
	CREATE SCHEMA ratelimit AUTHORIZATION squatter;
});
($ret, $stdout, $stderr) = $old->psql('app', 'CREATE EXTENSION pg_ratelimit',
	on_error_stop => 0, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/ERROR:  42501: schema "ratelimit" is not safe for pg_ratelimit: it is owned by role "squatter", which is not a superuser/,
	'CREATE EXTENSION refuses a schema ratelimit owned by a role that is not a superuser (42501)');
is(query(q{SELECT count(*) FROM pg_extension WHERE extname = 'pg_ratelimit'}), '0',
	'and installs nothing');
query(q{CREATE EXTENSION pg_ratelimit VERSION '1.0'});
($ret, $stdout, $stderr) = $old->psql('app', 'ALTER EXTENSION pg_ratelimit UPDATE');
like($stderr, qr/it is owned by role "squatter"/, 'ALTER EXTENSION UPDATE refuses it too');
is(query(q{SELECT extversion || ' ' || extnamespace::regnamespace FROM pg_extension WHERE extname = 'pg_ratelimit'}),
	'1.0 public', 'and leaves 1.0 where it was');

# given to a superuser, what the squatter made in it is still theirs
query(q{
	CREATE FUNCTION ratelimit.lower(varchar) RETURNS text LANGUAGE sql AS 'SELECT $1';
	ALTER FUNCTION ratelimit.lower(varchar) OWNER TO squatter;
	ALTER SCHEMA ratelimit OWNER TO CURRENT_USER;
});
($ret, $stdout, $stderr) = $old->psql('app', 'ALTER EXTENSION pg_ratelimit UPDATE');
like($stderr, qr/role "squatter" owns objects in it/, 'an object a squatter owns in it is refused');
query(q{DROP FUNCTION ratelimit.lower(varchar); GRANT CREATE ON SCHEMA ratelimit TO squatter});
($ret, $stdout, $stderr) = $old->psql('app', 'ALTER EXTENSION pg_ratelimit UPDATE');
like($stderr, qr/role "squatter" may create objects in it/, 'and so is CREATE granted on it');
query(q{REVOKE CREATE ON SCHEMA ratelimit FROM squatter; ALTER EXTENSION pg_ratelimit UPDATE});
is(query(q{SELECT extversion FROM pg_extension WHERE extname = 'pg_ratelimit'}), '1.2',
	'once only superusers can have put anything in it, the update runs');

# 1.1 to 1.2: rl_define_model, rl_alter_model, rl_acquire, rl_acquire_any
# and rl_capacity get new arguments, so they are new functions; the grants
# made on the old ones carry over, are dumped as the administrator's, and
# the grantees can define bucket models and acquire with output estimates
my $old_define = 'ratelimit.rl_define_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean)';
my $old_alter = 'ratelimit.rl_alter_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text[])';
my $new_define = 'ratelimit.rl_define_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text, bigint, bigint)';
my $old_acquire = 'ratelimit.rl_acquire(text, text, bigint, integer, interval, text, interval, boolean)';
my $new_acquire = 'ratelimit.rl_acquire(text, text, bigint, integer, interval, text, interval, boolean, bigint)';
my $new_capacity = 'ratelimit.rl_capacity(text, text, bigint, integer, bigint)';
query(qq{
	DROP EXTENSION pg_ratelimit;
	CREATE EXTENSION pg_ratelimit VERSION '1.1';
	SELECT ratelimit.rl_define_model('kept', rpm => 7);
	CREATE ROLE model_admin LOGIN;
	GRANT USAGE ON SCHEMA ratelimit TO model_admin;   -- this schema was made by hand above
	GRANT EXECUTE ON FUNCTION $old_define, $old_alter TO model_admin WITH GRANT OPTION;
	GRANT EXECUTE ON FUNCTION $old_acquire TO model_admin;
	-- a role whose name needs quoting, a grant on a function PUBLIC may call,
	-- a view an operator took from PUBLIC, and a view built on it
	CREATE ROLE "App Role";
	GRANT EXECUTE ON FUNCTION $old_acquire TO "App Role";
	CREATE ROLE monitoring;
	GRANT EXECUTE ON FUNCTION ratelimit.rl_capacity(text, text, bigint, integer) TO monitoring;
	REVOKE SELECT ON ratelimit.rl_stats FROM PUBLIC;
	GRANT SELECT ON ratelimit.rl_stats TO monitoring;
	CREATE VIEW public.my_denials AS SELECT model, denied FROM ratelimit.rl_stats;
	ALTER EXTENSION pg_ratelimit UPDATE;
});
is(query(q{SELECT extversion FROM pg_extension WHERE extname = 'pg_ratelimit'}), '1.2',
	'1.1 is updated to 1.2');
is(query(q{SELECT rpm || ' ' || window_type FROM ratelimit.rl_model WHERE model = 'kept'}), '7 fixed',
	'its models keep their limits and count in fixed windows');
is(query(qq{SELECT has_function_privilege('model_admin', '$new_define', 'EXECUTE WITH GRANT OPTION')
			  AND NOT has_function_privilege('squatter', '$new_define', 'EXECUTE')}), 't',
	'the grant on rl_define_model carried over, grant option included, and nothing more');
is(query(qq{SELECT has_function_privilege('model_admin', '$new_acquire', 'EXECUTE')
			  AND NOT has_function_privilege('squatter', '$new_acquire', 'EXECUTE')
			  AND has_function_privilege('squatter', '$new_capacity', 'EXECUTE')}), 't',
	'so did the grant on rl_acquire; rl_capacity stays callable by every role, rl_acquire not');
is(query(qq{SELECT has_function_privilege('App Role', '$new_acquire', 'EXECUTE')
			  AND has_function_privilege('monitoring', '$new_capacity', 'EXECUTE')}), 't',
	'a grant to a role whose name needs quoting carries over, and one on rl_capacity');
is(query(q{SELECT has_table_privilege('monitoring', 'ratelimit.rl_stats', 'SELECT')
			  AND NOT has_table_privilege('squatter', 'ratelimit.rl_stats', 'SELECT')
			  AND has_table_privilege('squatter', 'ratelimit.rl_job_status', 'SELECT')}), 't',
	'rl_stats keeps the privileges an operator gave it, rl_job_status its own');
is(query(q{SELECT count(*) FROM public.my_denials}), '1', 'a view built on rl_stats still works');
is(query(q{SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
		   WHERE attrelid = 'ratelimit.rl_stats'::regclass AND attnum > 21}),
	'expired,overage_events,overage_tokens,since,denied_itpm,denied_otpm,denied_provider',
	'rl_stats gets its new columns at its end');
is(query(q{SELECT count(*) FROM pg_proc
		   WHERE proname IN ('rl_define_model', 'rl_alter_model', 'rl_acquire', 'rl_acquire_any',
							 'rl_capacity')}), '5',
	'the old functions are gone');
like(`pg_dump -d '@{[ $old->connstr('app') ]}' --schema-only`,
	qr/GRANT ALL ON FUNCTION ratelimit\.rl_define_model\(.*window_type text, itpm bigint, otpm bigint\) TO model_admin WITH GRANT OPTION;/,
	'pg_dump writes the carried grant as the administrator\'s');
is($old->safe_psql('app', q{SELECT ratelimit.rl_define_model('b', rpm => 6, window_type => 'bucket');
							  SELECT window_type FROM ratelimit.rl_model WHERE model = 'b'},
		extra_params => [ '-U', 'model_admin' ]),
	"\nbucket", 'the grantee defines a bucket model');
is($old->safe_psql('app', q{SELECT ratelimit.rl_define_model('io', otpm => 100);
							  SELECT granted FROM ratelimit.rl_acquire('io', tokens => 55, output_tokens => 50)},
		extra_params => [ '-U', 'model_admin' ]),
	"\nt", 'and acquires with an output estimate');

$old->stop;
$new->stop;
done_testing();
