-- What leaves with a dropped model: its open leases go from the lease table
-- a batch at a time (here more than one batch), each giving back its role's
-- count, while other models' leases and counters stay as they were.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-01-02 00:00:05+00');
SELECT rl_define_model('ledger/drop', max_concurrent => 3000);
SELECT rl_define_model('ledger/keep', rpm => 100, max_concurrent => 10);
CREATE ROLE regress_rl_ledger;
GRANT EXECUTE ON FUNCTION rl_acquire TO regress_rl_ledger;

-- leases are counted against the login role (SET SESSION AUTHORIZATION
-- stands in for logging in); tokens => 0 * i makes each row a call
SET SESSION AUTHORIZATION regress_rl_ledger;
SELECT count(*) FILTER (WHERE g.granted) AS granted
FROM generate_series(1, 2500) AS i, LATERAL rl_acquire('ledger/drop', tokens => 0 * i) AS g;
SELECT granted FROM rl_acquire('ledger/keep');
RESET SESSION AUTHORIZATION;
SELECT model, count(*) AS open_leases FROM rl_leases
WHERE model LIKE 'ledger/%' GROUP BY model ORDER BY model;

SELECT rl_drop_model('ledger/drop');
SELECT model, count(*) AS open_leases FROM rl_leases
WHERE model LIKE 'ledger/%' GROUP BY model ORDER BY model;
SELECT model, requests_minute, in_flight, granted FROM rl_status WHERE model LIKE 'ledger/%';

-- the 2500 leases gave their counts back: with a cap of 3 this role, which
-- holds one lease now, is granted two more and refused the next
SET ratelimit.max_leases_per_role = 3;
SET SESSION AUTHORIZATION regress_rl_ledger;
SELECT granted FROM rl_acquire('ledger/keep');
SELECT granted FROM rl_acquire('ledger/keep');
\set VERBOSITY terse
SELECT granted FROM rl_acquire('ledger/keep');
\set VERBOSITY default
RESET SESSION AUTHORIZATION;
RESET ratelimit.max_leases_per_role;

-- a re-created model of the same name starts from zero, with no leases
SELECT rl_define_model('ledger/drop', max_concurrent => 3000);
SELECT model, in_flight, granted FROM rl_status WHERE model = 'ledger/drop';
SELECT count(*) AS open_leases FROM rl_leases WHERE model = 'ledger/drop';

SELECT rl_drop_model('ledger/drop');
SELECT rl_drop_model('ledger/keep');
REVOKE EXECUTE ON FUNCTION rl_acquire FROM regress_rl_ledger;
DROP ROLE regress_rl_ledger;
SELECT rl_debug_set_clock(NULL);
