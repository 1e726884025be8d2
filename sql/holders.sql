-- Who may hold leases, for how long and how many: privileges, the ttl
-- ceiling, the per-role cap and session-bound leases.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');
SELECT rl_define_model('hold/m', rpm => 100, max_concurrent => 3);
CREATE ROLE regress_rl_app;

-- taking capacity is not for PUBLIC: a role needs EXECUTE
SET ROLE regress_rl_app;
\set VERBOSITY terse
SELECT granted FROM rl_acquire('hold/m');
SELECT granted FROM rl_acquire_any(ARRAY['hold/m']);
SELECT rl_release(1);
SELECT rl_heartbeat('hold-instance');
SELECT rl_unregister('hold-instance');
\set VERBOSITY default
-- reading the state stays open
SELECT count(*) >= 0 AS readable FROM rl_status;
SELECT count(*) AS limits FROM rl_capacity('hold/m');
RESET ROLE;
SELECT count(*) AS open_leases FROM rl_leases;
GRANT EXECUTE ON FUNCTION rl_acquire, rl_acquire_any, rl_release, rl_heartbeat, rl_unregister
	TO regress_rl_app;
SET ROLE regress_rl_app;
SELECT lease_id AS l1 FROM rl_acquire('hold/m') \gset
SELECT released FROM rl_release(:l1);
RESET ROLE;

-- ttl: at most ratelimit.max_lease_ttl (1 hour by default)
SHOW ratelimit.max_lease_ttl;
SELECT granted, lease_id IS NOT NULL AS has_lease FROM rl_acquire('hold/m', ttl => '1 hour') \gset
SELECT expires_at - acquired_at AS ttl FROM rl_leases WHERE model = 'hold/m';
SELECT released FROM rl_release((SELECT lease_id FROM rl_leases WHERE model = 'hold/m'));
SELECT * FROM rl_acquire('hold/m', ttl => '1 hour 1 second');
SELECT * FROM rl_acquire('hold/m', ttl => '292000 years');
SELECT * FROM rl_acquire_any(ARRAY['hold/m'], ttl => '2 hours');
SELECT count(*) AS open_leases, (SELECT in_flight FROM rl_status WHERE model = 'hold/m')
FROM rl_leases;
-- a longer default ttl is cut to the ceiling
SET ratelimit.lease_ttl = '1d';
SELECT lease_id AS l2 FROM rl_acquire('hold/m') \gset
SELECT expires_at - acquired_at AS ttl FROM rl_leases WHERE lease_id = :l2;
SELECT released FROM rl_release(:l2);
RESET ratelimit.lease_ttl;
-- the ceiling is for the administrator to set
SET ROLE regress_rl_app;
SET ratelimit.max_lease_ttl = '1d';
SET ratelimit.max_leases_per_role = 0;
RESET ROLE;

-- the per-role cap (0, no cap, by default); an administrator sets it,
-- usually with ALTER ROLE ... SET.  It counts the leases of the login role
-- (here SET SESSION AUTHORIZATION stands in for logging in).
SHOW ratelimit.max_leases_per_role;
SET ratelimit.max_leases_per_role = 2;
SET SESSION AUTHORIZATION regress_rl_app;
SELECT lease_id AS c1 FROM rl_acquire('hold/m') \gset
SELECT lease_id AS c2 FROM rl_acquire('hold/m') \gset
SELECT * FROM rl_acquire('hold/m');
SELECT * FROM rl_acquire_any(ARRAY['hold/m']);
-- refused calls changed nothing; a release makes room
SELECT in_flight, granted, denied FROM rl_status WHERE model = 'hold/m';
SELECT released FROM rl_release(:c1);
SELECT lease_id AS c3 FROM rl_acquire('hold/m') \gset
SELECT released FROM rl_release(:c2);
-- a request the limits refuse gives its place back
RESET SESSION AUTHORIZATION;
SELECT lease_id AS o1 FROM rl_acquire('hold/m') \gset
SELECT lease_id AS o2 FROM rl_acquire('hold/m') \gset
SET SESSION AUTHORIZATION regress_rl_app;
SELECT granted, limited_by FROM rl_acquire('hold/m');
RESET SESSION AUTHORIZATION;
SELECT released FROM rl_release(:o1);
SET SESSION AUTHORIZATION regress_rl_app;
SELECT granted FROM rl_acquire('hold/m');
SELECT * FROM rl_acquire('hold/m');
-- so does a call that fails, also inside an exception block, or is cancelled
SELECT (rl_release(lease_id)).released FROM rl_leases WHERE model = 'hold/m' AND role = 'regress_rl_app';
SELECT * FROM rl_acquire('hold/no such model');
DO $$
BEGIN
	PERFORM rl_acquire('hold/no such model');
EXCEPTION WHEN undefined_object THEN
	RAISE NOTICE 'caught: %', SQLERRM;
END
$$;
RESET SESSION AUTHORIZATION;
SELECT rl_define_model('hold/one', max_concurrent => 1);
SELECT lease_id AS one FROM rl_acquire('hold/one') \gset
SET SESSION AUTHORIZATION regress_rl_app;
SET statement_timeout = '200ms';
SELECT * FROM rl_acquire('hold/one', max_wait => '1 min');
RESET statement_timeout;
SELECT count(*) AS granted_up_to_the_cap
FROM (SELECT rl_acquire('hold/m') FROM generate_series(1, 2)) g;
SELECT * FROM rl_acquire('hold/m');
-- SET ROLE to another role changes nothing: the login role is counted
RESET SESSION AUTHORIZATION;
SELECT released FROM rl_release(:one);
SET ROLE regress_rl_app;
SELECT granted FROM rl_acquire('hold/one');
RESET ROLE;
-- each role has its own count
SELECT model, role, count(*) FROM rl_leases WHERE model LIKE 'hold/%'
GROUP BY model, role ORDER BY model, role;
SELECT (rl_release(lease_id)).released FROM rl_leases WHERE model LIKE 'hold/%' ORDER BY lease_id;
SELECT rl_drop_model('hold/one');
RESET ratelimit.max_leases_per_role;

-- session-bound leases are listed as such and released like any other
SELECT lease_id AS s1 FROM rl_acquire('hold/m', session_bound => true) \gset
SELECT lease_id AS s2 FROM rl_acquire_any(ARRAY['hold/m'], session_bound => true) \gset
SELECT lease_id = :s1 AS first, session_bound, pid = pg_backend_pid() AS mine
FROM rl_leases WHERE model = 'hold/m' ORDER BY lease_id;
SELECT released FROM rl_release(:s1);
SELECT released FROM rl_release(:s2);
SELECT in_flight FROM rl_status WHERE model = 'hold/m';

-- an instance belongs to the role that registered it (and its members)
CREATE ROLE regress_rl_other;
GRANT EXECUTE ON FUNCTION rl_acquire, rl_acquire_any, rl_release, rl_heartbeat, rl_unregister
	TO regress_rl_other;
SET ROLE regress_rl_app;
SELECT rl_heartbeat('hold/app-1') > 0 AS registered;
SELECT lease_id AS i1 FROM rl_acquire('hold/m', instance => 'hold/app-1') \gset
SET ROLE regress_rl_other;
SELECT rl_heartbeat('hold/app-1', memory_kb => 0);
SELECT rl_unregister('hold/app-1');
SELECT * FROM rl_acquire('hold/m', instance => 'hold/app-1');
-- an instance name nobody registered is anyone's to use; registering it
-- later and leaving ends none of the leases taken before
SELECT granted FROM rl_acquire('hold/m', instance => 'hold/unregistered');
RESET ROLE;
SELECT rl_heartbeat('hold/unregistered') > 0 AS registered;
SELECT rl_unregister('hold/unregistered');
SELECT count(*) AS leases_kept FROM rl_leases WHERE instance = 'hold/unregistered';
SELECT instance, memory_kb, role FROM rl_instances WHERE instance LIKE 'hold/%';
SELECT count(*) AS app_leases FROM rl_leases WHERE instance = 'hold/app-1';
-- a member of the registering role may act on it
GRANT regress_rl_app TO regress_rl_other;
SET ROLE regress_rl_other;
SELECT rl_heartbeat('hold/app-1', memory_kb => 1000) > 0 AS refreshed;
SELECT rl_unregister('hold/app-1');
RESET ROLE;
SELECT count(*) AS instances FROM rl_instances WHERE instance = 'hold/app-1';
SELECT count(*) AS app_leases FROM rl_leases WHERE instance = 'hold/app-1';
SELECT (rl_release(lease_id)).released FROM rl_leases WHERE model = 'hold/m';
REVOKE EXECUTE ON FUNCTION rl_acquire, rl_acquire_any, rl_release, rl_heartbeat, rl_unregister
	FROM regress_rl_app, regress_rl_other;
DROP ROLE regress_rl_other;
DROP ROLE regress_rl_app;
SELECT rl_drop_model('hold/m');
