-- A fresh extension in the existing test database.  Settings and the shape
-- of the API.
SET timezone = 'UTC';
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_ratelimit;
CREATE EXTENSION pg_ratelimit;
RESET client_min_messages;
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

-- every object is named rl_*
SELECT count(*) AS objects_not_named_rl
FROM pg_depend d
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_ratelimit'
LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
WHERE d.deptype = 'e'
  AND coalesce(p.proname, c.relname, t.typname) NOT LIKE 'rl\_%';

SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = 'rl_grant'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = 'rl_settlement'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname FROM pg_attribute WHERE attrelid = 'rl_leases'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname FROM pg_attribute WHERE attrelid = 'rl_status'::regclass AND attnum > 0 ORDER BY attnum;

-- tests run on a fixed clock: 2030-01-01 00:00:05 UTC
SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');
SELECT rl_clock() - '2030-01-01 00:00:05+00' < '10 seconds' AS clock_is_set;
