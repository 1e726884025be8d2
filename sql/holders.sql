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
-- usually with ALTER ROLE ... SET
SHOW ratelimit.max_leases_per_role;
SET ratelimit.max_leases_per_role = 2;
SET ROLE regress_rl_app;
SELECT lease_id AS c1 FROM rl_acquire('hold/m') \gset
SELECT lease_id AS c2 FROM rl_acquire('hold/m') \gset
SELECT * FROM rl_acquire('hold/m');
SELECT * FROM rl_acquire_any(ARRAY['hold/m']);
-- refused calls changed nothing; a release makes room
SELECT in_flight, granted, denied FROM rl_status WHERE model = 'hold/m';
SELECT released FROM rl_release(:c1);
SELECT lease_id AS c3 FROM rl_acquire('hold/m') \gset
-- a request the limits refuse gives its place back
SELECT released FROM rl_release(:c2);
RESET ROLE;
SELECT lease_id AS o1 FROM rl_acquire('hold/m') \gset
SELECT lease_id AS o2 FROM rl_acquire('hold/m') \gset
SET ROLE regress_rl_app;
SELECT granted, limited_by FROM rl_acquire('hold/m');
RESET ROLE;
SELECT released FROM rl_release(:o1);
SET ROLE regress_rl_app;
SELECT granted FROM rl_acquire('hold/m');
SELECT * FROM rl_acquire('hold/m');
RESET ROLE;
-- each role has its own count
SELECT role, count(*) FROM rl_leases WHERE model = 'hold/m' GROUP BY role ORDER BY role;
SELECT (rl_release(lease_id)).released FROM rl_leases WHERE model = 'hold/m' ORDER BY lease_id;
RESET ratelimit.max_leases_per_role;

-- session-bound leases are listed as such and released like any other
SELECT lease_id AS s1 FROM rl_acquire('hold/m', session_bound => true) \gset
SELECT lease_id AS s2 FROM rl_acquire_any(ARRAY['hold/m'], session_bound => true) \gset
SELECT lease_id = :s1 AS first, session_bound, pid = pg_backend_pid() AS mine
FROM rl_leases WHERE model = 'hold/m' ORDER BY lease_id;
SELECT released FROM rl_release(:s1);
SELECT released FROM rl_release(:s2);
SELECT in_flight FROM rl_status WHERE model = 'hold/m';

REVOKE EXECUTE ON FUNCTION rl_acquire, rl_acquire_any, rl_release, rl_heartbeat, rl_unregister
	FROM regress_rl_app;
DROP ROLE regress_rl_app;
SELECT rl_drop_model('hold/m');
