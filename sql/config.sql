-- Configuration: tables are the source of truth, changes apply at commit.
SET timezone = 'UTC';
SELECT rl_define_model('cfg/a', rpm => 10, tpm => 1000, max_concurrent => 5);
SELECT model, rpm, tpm, rpd, tpd, max_concurrent, price_input, count_cached FROM rl_model;
SELECT model, rpm, tpm, rpd, tpd, max_concurrent FROM rl_status WHERE model = 'cfg/a';

-- a rolled back definition never takes effect
BEGIN;
SELECT rl_define_model('cfg/rolled_back', rpm => 1);
ROLLBACK;
SELECT count(*) FROM rl_status WHERE model = 'cfg/rolled_back';
SELECT * FROM rl_acquire('cfg/rolled_back');

-- nor does one rolled back to a savepoint
BEGIN;
SAVEPOINT s;
SELECT rl_define_model('cfg/savepoint', rpm => 1);
ROLLBACK TO SAVEPOINT s;
SELECT rl_define_model('cfg/a', rpm => 20, tpm => 1000, max_concurrent => 5);
-- not visible to the limiter before commit
SELECT rpm FROM rl_status WHERE model = 'cfg/a';
COMMIT;
SELECT model, rpm FROM rl_status WHERE model LIKE 'cfg/%';

-- redefining keeps the current usage
SELECT granted FROM rl_acquire('cfg/a', tokens => 100);
SELECT rl_define_model('cfg/a', rpm => 30, tpm => 2000);
SELECT rpm, tpm, max_concurrent, requests_minute, tokens_minute, in_flight
FROM rl_status WHERE model = 'cfg/a';

-- removing a limit: NULL means not limited
SELECT rl_define_model('cfg/a', tpm => 2000);
SELECT rpm, tpm FROM rl_status WHERE model = 'cfg/a';

-- dropping a model removes its counters and open leases
SELECT lease_id AS dropped_lease FROM rl_acquire('cfg/a', tokens => 5) \gset
SELECT count(*) AS open_leases FROM rl_leases WHERE model = 'cfg/a';
SELECT rl_drop_model('cfg/a');
SELECT count(*) AS open_leases FROM rl_leases WHERE model = 'cfg/a';
SELECT released, model FROM rl_release(:dropped_lease, 1, 1);
-- defined again, it starts from zero
SELECT rl_define_model('cfg/a', rpm => 10);
SELECT requests_minute, tokens_minute, in_flight, granted FROM rl_status WHERE model = 'cfg/a';
SELECT rl_drop_model('cfg/a');

-- direct DML on the tables takes effect at commit too
INSERT INTO rl_model (model, rpm) VALUES ('cfg/dml', 7);
SELECT rpm FROM rl_status WHERE model = 'cfg/dml';
UPDATE rl_model SET rpm = 8 WHERE model = 'cfg/dml';
SELECT rpm FROM rl_status WHERE model = 'cfg/dml';
DELETE FROM rl_model WHERE model = 'cfg/dml';
SELECT count(*) FROM rl_status WHERE model = 'cfg/dml';
-- and the table's constraints back up the functions' checks
\set VERBOSITY terse
INSERT INTO rl_model (model, rpm) VALUES ('cfg/dml', 0);
\set VERBOSITY default

-- job types: estimates, ratios, waits
SELECT rl_define_job_type('cfg/summarize', est_tokens => 1500, est_requests => 1,
						  ratio => 0.5, flexible => false, max_wait => '0');
SELECT rl_define_job_type('cfg/chat', est_tokens => 300, ratio => 0.3);
SELECT rl_define_job_type('cfg/embed', est_tokens => 50, est_requests => 2);
SELECT job_type, est_tokens, est_requests, est_memory_kb, ratio, flexible, max_wait
FROM rl_job_type ORDER BY job_type;
-- ratios may not sum past 1; the error names the sum, nothing changes
SELECT rl_define_job_type('cfg/greedy', ratio => 0.3);
SELECT count(*) FROM rl_job_type WHERE job_type = 'cfg/greedy';
-- redefining a job type replaces its ratio (0.5 + 0.5 = 1 is fine)
SELECT rl_define_job_type('cfg/chat', est_tokens => 300, ratio => 0.5);

-- per-model waits
SELECT rl_define_model('cfg/b', rpm => 100);
SELECT rl_set_max_wait('cfg/chat', 'cfg/b', '0');
SELECT job_type, model, max_wait FROM rl_job_type_wait;
SELECT rl_set_max_wait('cfg/chat', 'cfg/b', NULL);
SELECT count(*) FROM rl_job_type_wait;
SELECT rl_set_max_wait('cfg/nope', 'cfg/b', '0');
SELECT rl_set_max_wait('cfg/chat', 'cfg/nope', '0');
SELECT rl_set_max_wait('cfg/chat', 'cfg/b', '-1 second');

-- dropping a job type
SELECT rl_drop_job_type('cfg/embed');
SELECT rl_drop_job_type('cfg/embed');
SELECT * FROM rl_acquire('cfg/b', job_type => 'cfg/embed');

-- unknown models
SELECT rl_drop_model('cfg/nope');

-- shared memory is sized by ratelimit.max_models: the 101st model is refused
-- at commit, with nothing changed
SELECT count(*) AS models_before FROM rl_model;
DO $$
BEGIN
	FOR i IN 1..100 LOOP
		PERFORM rl_define_model('cfg/many/' || i, rpm => 1);
	END LOOP;
END
$$;
SELECT count(*) AS models_after FROM rl_model;
SELECT count(*) AS models_in_shared_memory FROM rl_status;

-- configuration functions are for administrators only
CREATE ROLE regress_rl_app;
SET ROLE regress_rl_app;
SELECT rl_define_model('cfg/by_app', rpm => 1);
SELECT rl_drop_model('cfg/b');
SELECT rl_define_job_type('cfg/by_app');
SELECT rl_set_max_wait('cfg/chat', 'cfg/b', '0');
SELECT rl_drop_job_type('cfg/chat');
-- anyone may read the configuration; taking capacity needs a GRANT (holders)
SELECT count(*) > 0 AS can_read FROM rl_model;
SELECT granted FROM rl_acquire('cfg/b');
RESET ROLE;
-- granting EXECUTE is all an administrator role needs
GRANT EXECUTE ON FUNCTION rl_define_model TO regress_rl_app;
SET ROLE regress_rl_app;
SELECT rl_define_model('cfg/by_app', rpm => 1);
RESET ROLE;
SELECT model, rpm FROM rl_status WHERE model = 'cfg/by_app';

-- clean up for the next tests
SELECT rl_drop_model(model) FROM rl_model WHERE model LIKE 'cfg/%';
DELETE FROM rl_job_type;
DROP OWNED BY regress_rl_app;
DROP ROLE regress_rl_app;
SELECT count(*) FROM rl_status;
