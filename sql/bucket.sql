-- Bucket models (window_type => 'bucket'): each rate limit L is a bucket of
-- capacity L that refills continuously, L per minute (or per day); a request
-- is admitted only when every bucket holds it.  Usage (used) is what the
-- bucket lacks to be full.  The test clock keeps running from each time it
-- is set (the statements between take some milliseconds): times are set
-- with a margin, and retry_after is shown as a range.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-01-01 00:00:30+00');

CREATE FUNCTION regress_bucket_error(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- window_type is fixed or bucket, and a failed call changes nothing
SELECT regress_bucket_error($$SELECT rl_define_model('bkt/bad', rpm => 60, window_type => 'sliding')$$);
SELECT count(*) FROM rl_model WHERE model = 'bkt/bad';
-- "window" is a reserved word in SQL: the argument is window_type
SELECT rl_define_model('bkt/m', rpm => 60, tpm => 6000, window_type => 'bucket');
SELECT model, rpm, tpm, window_type FROM rl_model WHERE model = 'bkt/m';

-- A full bucket admits its capacity at once, then nothing
SELECT count(*) FILTER (WHERE (rl_acquire('bkt/m', tokens => 10)).granted) AS granted
FROM generate_series(1, 61);
-- rpm 60 refills one request a second: retry_after is a second (less the
-- time since the bucket emptied), not the 30 s to the end of the minute
SELECT granted, limited_by, retry_after BETWEEN '0.7 s' AND '1 s' AS about_a_second
FROM rl_acquire('bkt/m', tokens => 10);
-- used is what each bucket lacks; resets_at, when it will be full again
-- (tpm refills 100 tokens a second: a few have, since)
SELECT dimension, limit_value, used, remaining, slots, date_trunc('second', resets_at) AS full_at
FROM rl_capacity('bkt/m', tokens => 10) WHERE dimension IN ('rpm', 'total');
SELECT dimension, limit_value, used BETWEEN 550 AND 600 AS about_600, slots
FROM rl_capacity('bkt/m', tokens => 10) WHERE dimension = 'tpm';

-- Half a second later half a request has refilled: still refused, about
-- half a second to go
SELECT rl_debug_set_clock('2030-01-01 00:00:30.5+00');
SELECT granted, limited_by, retry_after BETWEEN '0.45 s' AND '0.8 s' AS about_half_a_second
FROM rl_acquire('bkt/m', tokens => 10);
-- a second and a half after the bucket emptied: exactly one
SELECT rl_debug_set_clock('2030-01-01 00:00:31.5+00');
SELECT count(*) FILTER (WHERE (rl_acquire('bkt/m', tokens => 10)).granted) AS granted
FROM generate_series(1, 3);

-- The minute boundary gives nothing extra: an emptied bucket, 10.5 s later
-- and in a new minute, has refilled 10 requests (a fixed window would admit
-- 60 at 00:01:00)
SELECT rl_define_model('bkt/edge', rpm => 60, window_type => 'bucket');
SELECT rl_debug_set_clock('2030-01-01 00:00:50+00');
SELECT count(*) FILTER (WHERE (rl_acquire('bkt/edge')).granted) AS granted
FROM generate_series(1, 61);
SELECT rl_debug_set_clock('2030-01-01 00:01:00.5+00');
SELECT count(*) FILTER (WHERE (rl_acquire('bkt/edge')).granted) AS granted
FROM generate_series(1, 61);
SELECT requests_minute FROM rl_status WHERE model = 'bkt/edge';
-- after a quiet minute the bucket is full again, not fuller
SELECT rl_debug_set_clock('2030-01-01 00:03:00+00');
SELECT requests_minute, tokens_minute FROM rl_status WHERE model = 'bkt/m';
SELECT count(*) FILTER (WHERE (rl_acquire('bkt/m', tokens => 10)).granted) AS granted
FROM generate_series(1, 61);

-- Tokens: refunds return to the bucket (never above full), overages are
-- taken from it (it may go below empty: nothing is admitted until it refills)
SELECT rl_define_model('bkt/t', tpm => 600, window_type => 'bucket');
SELECT lease_id AS l1 FROM rl_acquire('bkt/t', tokens => 500) \gset
SELECT tokens_refunded FROM rl_release(:l1, input_tokens => 100);
SELECT used, remaining FROM rl_capacity('bkt/t', tokens => 100) WHERE dimension = 'tpm';
SELECT lease_id AS l2 FROM rl_acquire('bkt/t', tokens => 100) \gset
SELECT overage FROM rl_release(:l2, input_tokens => 900);
-- 1000 used of 600: a request of 100 fits when 500 have refilled, at 10 a second
SELECT used, remaining FROM rl_capacity('bkt/t', tokens => 100) WHERE dimension = 'tpm';
SELECT granted, limited_by, retry_after BETWEEN '49.7 s' AND '50 s' AS fifty_seconds
FROM rl_acquire('bkt/t', tokens => 100);
SELECT rl_debug_set_clock('2030-01-01 00:03:49.5+00');
SELECT granted FROM rl_acquire('bkt/t', tokens => 100);
SELECT rl_debug_set_clock('2030-01-01 00:03:50.5+00');
SELECT granted FROM rl_acquire('bkt/t', tokens => 100);
-- a refund never makes the bucket fuller than full
SELECT lease_id AS l3 FROM rl_acquire('bkt/t', tokens => 0) \gset
SELECT rl_debug_set_clock('2030-01-01 00:10:00+00');
SELECT tokens_refunded FROM rl_release(:l3, input_tokens => 0);
SELECT used, remaining FROM rl_capacity('bkt/t', tokens => 100) WHERE dimension = 'tpm';

-- Day limits refill over a day: rpd 86400 is one request a second
SELECT rl_define_model('bkt/d', rpd => 86400, window_type => 'bucket');
SELECT count(*) FILTER (WHERE (rl_acquire('bkt/d')).granted) AS granted
FROM generate_series(1, 3);
SELECT used, date_trunc('second', resets_at) AS full_at
FROM rl_capacity('bkt/d') WHERE dimension = 'rpd';
SELECT rl_debug_set_clock('2030-01-01 00:10:02.5+00');
SELECT used, date_trunc('second', resets_at) AS full_at
FROM rl_capacity('bkt/d') WHERE dimension = 'rpd';

-- Concurrency is not a rate: only releases free it, as on a fixed model
SELECT rl_define_model('bkt/c', rpm => 600, max_concurrent => 1, window_type => 'bucket');
SELECT lease_id AS c1 FROM rl_acquire('bkt/c') \gset
SELECT granted, limited_by, retry_after FROM rl_acquire('bkt/c');
SELECT released FROM rl_release(:c1);
SELECT granted FROM rl_acquire('bkt/c');

-- A job type's share of a bucket model is a bucket of its own: ratio 0.5 of
-- rpm 60 holds 30 requests and refills one every two seconds
SELECT rl_define_model('bkt/s', rpm => 60, window_type => 'bucket');
SELECT rl_define_job_type('bkt/half', ratio => 0.5, flexible => false);
SELECT count(*) FILTER (WHERE (rl_acquire('bkt/s', 'bkt/half')).granted) AS granted
FROM generate_series(1, 31);
SELECT granted, limited_by, retry_after BETWEEN '1.7 s' AND '2 s' AS two_seconds
FROM rl_acquire('bkt/s', 'bkt/half');
SELECT rpm_share, requests_minute FROM rl_job_status WHERE model = 'bkt/s' AND job_type = 'bkt/half';
SELECT rl_debug_set_clock('2030-01-01 00:10:07+00');
SELECT rpm_share, requests_minute FROM rl_job_status WHERE model = 'bkt/s' AND job_type = 'bkt/half';
SELECT count(*) FILTER (WHERE (rl_acquire('bkt/s', 'bkt/half')).granted) AS granted
FROM generate_series(1, 3);
-- requests without a job type still find the model's other half
SELECT count(*) FILTER (WHERE (rl_acquire('bkt/s')).granted) AS granted
FROM generate_series(1, 30);

-- rl_alter_model changes the window type alone; the usage carries over
SELECT rl_define_model('bkt/switch', rpm => 60);
SELECT count(*) FILTER (WHERE (rl_acquire('bkt/switch')).granted) AS granted
FROM generate_series(1, 60);
SELECT rl_alter_model('bkt/switch', window_type => 'bucket');
SELECT rpm, window_type FROM rl_model WHERE model = 'bkt/switch';
SELECT granted, limited_by, retry_after BETWEEN '0.7 s' AND '1 s' AS about_a_second
FROM rl_acquire('bkt/switch');
SELECT rl_alter_model('bkt/switch', window_type => 'fixed');
SELECT window_type FROM rl_model WHERE model = 'bkt/switch';
SELECT regress_bucket_error($$SELECT rl_alter_model('bkt/switch', window_type => 'Bucket')$$);

-- A job type whose share rounds to nothing still starts its
-- min_job_type_slots (1) a minute: retry_after is the next minute, and what
-- such jobs take leaves its bucket one job below empty at most
SELECT rl_define_model('bkt/tiny', rpm => 50, window_type => 'bucket');
SELECT rl_define_job_type('bkt/tiny', ratio => 0.01, flexible => false);
SELECT rl_debug_set_clock('2030-01-01 00:20:30+00');
SELECT granted FROM rl_acquire('bkt/tiny', 'bkt/tiny');
SELECT granted, limited_by, retry_after BETWEEN '29 s' AND '30 s' AS next_minute
FROM rl_acquire('bkt/tiny', 'bkt/tiny');
SELECT rl_debug_set_clock('2030-01-01 00:21:00.5+00');
SELECT granted FROM rl_acquire('bkt/tiny', 'bkt/tiny');
SELECT rpm_share, requests_minute FROM rl_job_status WHERE model = 'bkt/tiny' AND job_type = 'bkt/tiny';
-- a larger share is usable at once
SELECT rl_alter_job_type('bkt/tiny', ratio => 0.4);
SELECT count(*) FILTER (WHERE (rl_acquire('bkt/tiny', 'bkt/tiny')).granted) AS granted
FROM generate_series(1, 25);
SELECT rl_drop_job_type('bkt/tiny');

-- Per-instance allocations split a bucket model's limits like a fixed
-- model's: two live instances get half of rpm 60 each, its refill included
SELECT rl_define_model('bkt/alloc', rpm => 60, tpm => 6000, window_type => 'bucket');
SELECT rl_heartbeat('bkt-w1'), rl_heartbeat('bkt-w2');
SELECT model, job_type, instances, pool_slots, slots, limited_by
FROM rl_allocation('bkt-w1') WHERE model = 'bkt/alloc' AND job_type IS NULL;
SELECT rl_unregister('bkt-w1'), rl_unregister('bkt-w2');

SELECT rl_drop_model(model) FROM rl_model WHERE model LIKE 'bkt/%';
SELECT rl_drop_job_type('bkt/half');
DROP FUNCTION regress_bucket_error(text);
SELECT rl_debug_set_clock(NULL);
