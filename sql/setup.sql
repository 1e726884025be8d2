-- A fresh extension in the existing test database.  Settings and the shape
-- of the API.
SET timezone = 'UTC';
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_ratelimit;
CREATE EXTENSION pg_ratelimit;
RESET client_min_messages;
-- The objects live in the schema ratelimit: the tests (each file is a new
-- session) and the isolation specs that follow find them through the
-- database's search_path, as an application may (README, "Schemas")
DO $$
BEGIN
	EXECUTE format('ALTER DATABASE %I SET search_path = public, ratelimit', current_database());
END
$$;
SET search_path = public, ratelimit;
SHOW ratelimit.database;
SHOW ratelimit.max_models;
SHOW ratelimit.max_job_types;
SHOW ratelimit.max_leases;
SHOW ratelimit.lease_ttl;
SHOW ratelimit.persist_interval;
SHOW ratelimit.min_job_type_slots;

-- the background worker runs, connected to ratelimit.database (it may be
-- restarting after the extension was dropped under it: give it 10 s)
DO $$
BEGIN
	FOR i IN 1..100 LOOP
		EXIT WHEN EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker');
		PERFORM pg_sleep(0.1);
		PERFORM pg_stat_clear_snapshot();
	END LOOP;
END
$$;
SELECT backend_type, datname FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker';

-- Flexible ratios move every ratelimit.ratio_interval (5 s by default) and
-- after every 10 releases on a model.  The outputs of the files that follow
-- (shares.sql above all) hold only if ratios move when a file makes them (10
-- releases): the test server gets an interval of an hour, set here, before
-- the files that depend on it run, so that the worker has it by then.  It
-- stays in postgresql.auto.conf: make installcheck needs a server for tests.
ALTER SYSTEM SET ratelimit.ratio_interval = '1h';
SELECT pg_reload_conf();

-- the prefix is reserved: a misspelt setting is refused
SET ratelimit.no_such_setting = 1;

-- Array types and tables' row types are members of their own from
-- PostgreSQL 18 on; they come with the objects listed, and are left out
CREATE FUNCTION pg_temp.implicit_type(classid oid, objid oid) RETURNS boolean
LANGUAGE sql STABLE AS $$
	SELECT classid = 'pg_type'::regclass AND (
		EXISTS (SELECT FROM pg_type e WHERE e.typarray = objid) OR
		EXISTS (SELECT FROM pg_type t JOIN pg_class r ON r.oid = t.typrelid
				WHERE t.oid = objid AND r.relkind <> 'c'))
$$;

-- every object is named rl_*
SELECT count(*) AS objects_not_named_rl
FROM pg_depend d
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_ratelimit'
LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
WHERE d.deptype = 'e' AND NOT pg_temp.implicit_type(d.classid, d.objid)
  AND coalesce(p.proname, c.relname, t.typname) NOT LIKE 'rl\_%';

-- the schema layout (README, "Schemas"): every object and where it lives;
-- nothing in public
SELECT n.nspname AS schema,
	   CASE d.classid
		   WHEN 'pg_proc'::regclass THEN 'function'
		   WHEN 'pg_type'::regclass THEN 'type'
		   WHEN 'pg_namespace'::regclass THEN 'schema'
		   ELSE CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' END
	   END AS kind,
	   coalesce(p.proname, c.relname, t.typname, s.nspname) AS name
FROM pg_depend d
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_ratelimit'
LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
LEFT JOIN pg_namespace s ON d.classid = 'pg_namespace'::regclass AND s.oid = d.objid
JOIN pg_namespace n ON n.oid = coalesce(p.pronamespace, c.relnamespace, t.typnamespace, s.oid)
WHERE d.deptype = 'e' AND NOT pg_temp.implicit_type(d.classid, d.objid)
ORDER BY 1, 2, 3;
-- the extension is recorded in ratelimit, which is not a member (pg_dump
-- creates it ahead of CREATE EXTENSION ... WITH SCHEMA ratelimit); PUBLIC
-- may look into ratelimit but not into ratelimit_internal
SELECT extversion, extnamespace::regnamespace AS schema, extrelocatable FROM pg_extension
WHERE extname = 'pg_ratelimit';
SELECT nspname,
	   EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
			   AND d.objid = n.oid AND d.deptype = 'e') AS member,
	   has_schema_privilege('public', n.oid, 'USAGE') AS public_usage
FROM pg_namespace n WHERE nspname LIKE 'ratelimit%' ORDER BY nspname;
-- every object says what it is for (the Description column of psql's lists)
SELECT count(*) AS without_comment
FROM pg_depend d
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_ratelimit'
WHERE d.deptype = 'e' AND NOT pg_temp.implicit_type(d.classid, d.objid)
  AND obj_description(d.objid, d.classid::regclass::text::name) IS NULL;

SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = 'rl_grant'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = 'rl_settlement'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname FROM pg_attribute WHERE attrelid = 'rl_leases'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname FROM pg_attribute WHERE attrelid = 'rl_status'::regclass AND attnum > 0 ORDER BY attnum;

-- tests run on a fixed clock: 2030-01-01 00:00:05 UTC
SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');
SELECT rl_clock() - '2030-01-01 00:00:05+00' < '10 seconds' AS clock_is_set;
