-- Bad input: an ERROR with a fitting SQLSTATE, and nothing changed.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');
SELECT rl_define_model('err/m', rpm => 10, tpm => 1000, rpd => 100, tpd => 5000, max_concurrent => 2);
SELECT rl_define_job_type('err/jt', est_tokens => 10);

-- runs a statement and shows the SQLSTATE and message it fails with
CREATE FUNCTION regress_error(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- NULL and empty names (22004, 22023), too long (42622)
SELECT regress_error($$SELECT * FROM rl_acquire(NULL)$$);
SELECT regress_error($$SELECT * FROM rl_acquire('')$$);
SELECT regress_error($$SELECT * FROM rl_acquire(repeat('x', 128))$$);
SELECT regress_error($$SELECT * FROM rl_acquire('err/m', job_type => '')$$);
SELECT regress_error($$SELECT * FROM rl_acquire('err/m', instance => '')$$);
SELECT regress_error($$SELECT * FROM rl_acquire_any(NULL)$$);
SELECT regress_error($$SELECT * FROM rl_acquire_any('{}')$$);
SELECT regress_error($$SELECT * FROM rl_acquire_any(ARRAY['err/m', NULL])$$);
SELECT regress_error($$SELECT * FROM rl_acquire_any('{{err/m},{err/m}}')$$);
SELECT regress_error($$SELECT * FROM rl_capacity(NULL)$$);
SELECT regress_error($$SELECT rl_define_model(NULL)$$);
SELECT regress_error($$SELECT rl_define_model('')$$);
SELECT regress_error($$SELECT rl_define_model(repeat('x', 128))$$);
SELECT regress_error($$SELECT rl_define_job_type(NULL)$$);
SELECT regress_error($$SELECT rl_drop_model(NULL)$$);
SELECT regress_error($$SELECT rl_drop_job_type('')$$);

-- unknown model or job type (42704)
SELECT regress_error($$SELECT * FROM rl_acquire('err/nope')$$);
SELECT regress_error($$SELECT * FROM rl_acquire('err/m', job_type => 'err/nope')$$);
SELECT regress_error($$SELECT * FROM rl_acquire_any(ARRAY['err/m', 'err/nope'])$$);
SELECT regress_error($$SELECT * FROM rl_capacity('err/nope')$$);
SELECT regress_error($$SELECT * FROM rl_capacity('err/m', job_type => 'err/nope')$$);

-- negative amounts (22023)
SELECT regress_error($$SELECT * FROM rl_acquire('err/m', tokens => -1)$$);
SELECT regress_error($$SELECT * FROM rl_acquire('err/m', requests => -1)$$);
SELECT regress_error($$SELECT * FROM rl_capacity('err/m', tokens => -1)$$);
SELECT regress_error($$SELECT * FROM rl_release(1, input_tokens => -1)$$);
SELECT regress_error($$SELECT * FROM rl_release(1, output_tokens => -1)$$);
SELECT regress_error($$SELECT * FROM rl_release(1, cached_tokens => -1)$$);
SELECT regress_error($$SELECT * FROM rl_release(1, requests => -1)$$);
SELECT regress_error($$SELECT rl_define_model('err/bad', rpm => 0)$$);
SELECT regress_error($$SELECT rl_define_model('err/bad', tpm => -5)$$);
SELECT regress_error($$SELECT rl_define_model('err/bad', max_concurrent => 0)$$);
SELECT regress_error($$SELECT rl_define_model('err/bad', price_input => -1)$$);
SELECT regress_error($$SELECT rl_define_model('err/bad', price_output => 'NaN')$$);
-- prices must be finite (22023), also when redefining a model
SELECT regress_error($$SELECT rl_define_model('err/bad', price_input => 'Infinity')$$);
SELECT regress_error($$SELECT rl_define_model('err/bad', price_cached => '-Infinity')$$);
SELECT regress_error($$SELECT rl_define_model('err/m', rpm => 10, tpm => 1000, rpd => 100, tpd => 5000, max_concurrent => 2, price_output => 'Infinity')$$);
-- and in the table (23514), inserted or updated directly
SELECT regress_error($$INSERT INTO rl_model (model, price_input) VALUES ('err/bad', 'Infinity')$$);
SELECT regress_error($$INSERT INTO rl_model (model, price_cached) VALUES ('err/bad', 'NaN')$$);
SELECT regress_error($$UPDATE rl_model SET price_output = 'Infinity' WHERE model = 'err/m'$$);
-- a row that bypassed the table's check is refused when the commit loads it
-- (22023), and the whole transaction is undone
BEGIN;
ALTER TABLE rl_model DROP CONSTRAINT rl_model_price_input_check;
UPDATE rl_model SET price_input = 'Infinity' WHERE model = 'err/m';
COMMIT;
SELECT price_input, price_output, price_cached FROM rl_model WHERE model = 'err/m';
SELECT count(*) AS price_checks FROM pg_constraint
WHERE conrelid = 'rl_model'::regclass AND conname LIKE 'rl_model_price_%_check';
SELECT regress_error($$SELECT rl_define_job_type('err/bad', est_tokens => -1)$$);
SELECT regress_error($$SELECT rl_define_job_type('err/bad', est_requests => -1)$$);
SELECT regress_error($$SELECT rl_define_job_type('err/bad', est_memory_kb => -1)$$);
SELECT regress_error($$SELECT rl_define_job_type('err/bad', ratio => 1.5)$$);
SELECT regress_error($$SELECT rl_define_job_type('err/bad', ratio => -0.1)$$);
SELECT regress_error($$SELECT rl_define_job_type('err/bad', ratio => 'NaN')$$);
SELECT regress_error($$SELECT rl_define_job_type('err/bad', max_wait => '-1 second')$$);

-- overflowing amounts (22003)
SELECT lease_id AS l FROM rl_acquire('err/m', tokens => 1) \gset
SELECT regress_error(format($$SELECT * FROM rl_release(%s, input_tokens => 9223372036854775807, output_tokens => 1)$$, :l));
-- the lease survived the failed call
SELECT count(*) FROM rl_leases WHERE lease_id = :l;
SELECT released FROM rl_release(:l);

-- a request larger than a limit can never fit (22023), and is not a denial
SELECT regress_error($$SELECT * FROM rl_acquire('err/m', tokens => 1001)$$);
SELECT regress_error($$SELECT * FROM rl_acquire('err/m', tokens => 10, requests => 11)$$);
SELECT rl_define_model('err/day', tpd => 50);
SELECT regress_error($$SELECT * FROM rl_acquire('err/day', tokens => 51)$$);

-- bad ttl and max_wait (22023)
SELECT regress_error($$SELECT * FROM rl_acquire('err/m', ttl => '0')$$);
SELECT regress_error($$SELECT * FROM rl_acquire('err/m', ttl => '-1 minute')$$);
SELECT regress_error($$SELECT * FROM rl_acquire('err/m', max_wait => '-1 second')$$);
-- a waiting rl_acquire_any takes at most 16 models (54000): refused before
-- it tries any, so it counts no denial, whether max_wait is given or comes
-- from the job type
SELECT rl_define_model('err/full', rpd => 1);
SELECT granted FROM rl_acquire('err/full');
SELECT count(*) FROM (SELECT rl_define_model(format('err/w%s', i), rpd => 1)
					  FROM generate_series(1, 17) i) s;
SELECT count(*) FILTER (WHERE g.granted) AS granted
FROM generate_series(1, 17) i, LATERAL rl_acquire(format('err/w%s', i)) g;
SELECT rl_define_job_type('err/patient', max_wait => '1 second');
SELECT regress_error($$SELECT * FROM rl_acquire_any(ARRAY(SELECT format('err/w%s', i) FROM generate_series(1, 17) i), max_wait => '1 second')$$);
SELECT regress_error($$SELECT * FROM rl_acquire_any(ARRAY(SELECT format('err/w%s', i) FROM generate_series(1, 17) i), 'err/patient')$$);
SELECT sum(denied) AS denied FROM rl_status WHERE model LIKE 'err/w%';
-- without waiting, any number of models is fine
SELECT granted FROM rl_acquire_any(ARRAY(SELECT format('err/w%s', i) FROM generate_series(1, 17) i));
SELECT sum(denied) AS denied FROM rl_status WHERE model LIKE 'err/w%';
-- repeated names count once: 17 copies of one model is one model to wait on
SELECT granted FROM rl_acquire_any(array_fill('err/full'::text, ARRAY[17]), max_wait => '10 milliseconds');
SELECT denied FROM rl_status WHERE model = 'err/full';
SELECT rl_drop_job_type('err/patient');
DELETE FROM rl_model WHERE model LIKE 'err/w%';

-- a NULL lease (22004)
SELECT regress_error($$SELECT * FROM rl_release(NULL)$$);

-- instances: NULL (22004), empty (22023) or too long (42622) names,
-- negative memory (22023), an allocation for an instance that is not
-- registered (42704)
SELECT regress_error($$SELECT rl_heartbeat(NULL)$$);
SELECT regress_error($$SELECT rl_heartbeat('')$$);
SELECT regress_error($$SELECT rl_heartbeat(repeat('x', 128))$$);
SELECT regress_error($$SELECT rl_heartbeat('err/i', memory_kb => -1)$$);
SELECT regress_error($$SELECT rl_unregister(NULL)$$);
SELECT regress_error($$SELECT rl_unregister('')$$);
SELECT regress_error($$SELECT * FROM rl_allocation(NULL)$$);
SELECT regress_error($$SELECT * FROM rl_allocation('')$$);
SELECT regress_error($$SELECT * FROM rl_allocation('err/nobody')$$);
SELECT instance FROM rl_instances;

-- none of the failed calls changed anything
SELECT requests_minute, tokens_minute, in_flight, granted, denied
FROM rl_status WHERE model = 'err/m';
SELECT model FROM rl_model ORDER BY model;
SELECT job_type FROM rl_job_type ORDER BY job_type;

-- a transaction that changed the configuration cannot be prepared
BEGIN;
SELECT rl_define_model('err/prepared', rpm => 1);
PREPARE TRANSACTION 'rl';
SELECT count(*) FROM rl_model WHERE model = 'err/prepared';

DELETE FROM rl_model;
DELETE FROM rl_job_type;
DROP FUNCTION regress_error;
SELECT rl_debug_set_clock(NULL);
