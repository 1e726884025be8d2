-- rl_usage: the worker saves usage and cost per UTC day, model and job type.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-03-01 12:00:00+00');
SELECT rl_define_model('usage/m', price_input => 1, price_output => 4, price_cached => 0.5);
SELECT rl_define_model('usage/idle', rpm => 10);

SELECT lease_id AS l1 FROM rl_acquire('usage/m', tokens => 500) \gset
SELECT lease_id AS l2 FROM rl_acquire('usage/m', tokens => 500) \gset
SELECT cost FROM rl_release(:l1, input_tokens => 400, output_tokens => 100, cached_tokens => 1000);
SELECT cost FROM rl_release(:l2, input_tokens => 700, output_tokens => 50);

-- wait (at most 20 s) for the worker's next save
DO $$
BEGIN
	FOR i IN 1..200 LOOP
		EXIT WHEN EXISTS (SELECT FROM rl_usage WHERE model = 'usage/m' AND requests = 2
						  AND input_tokens = 1100);
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
-- cost: (1100 x 1 + 150 x 4 + 1000 x 0.5) / 1e6 = 0.0022
SELECT day, model, requests, input_tokens, output_tokens, cached_tokens, total_tokens,
	   cost, overage_events, overage_tokens
FROM rl_usage WHERE model LIKE 'usage/%' ORDER BY model;
SELECT cost_today FROM rl_status WHERE model = 'usage/m';

-- a model without usage has no row
SELECT count(*) FROM rl_usage WHERE model = 'usage/idle';

-- persist_interval is set in postgresql.conf
SET ratelimit.persist_interval = '5s';

-- Per job type: two jobs of 'usage_chat', one of 'usage_batch' and one
-- without a job type on 'usage/jt'; the row with job_type NULL is the rest
-- of the model's day.
SELECT rl_define_model('usage/jt', price_input => 1, price_output => 2);
SELECT rl_define_job_type('usage_chat', est_tokens => 100);
SELECT rl_define_job_type('usage_batch', est_tokens => 1000);
SELECT count(*) FROM (
	SELECT rl_release((rl_acquire('usage/jt', j)).lease_id, input_tokens => i, output_tokens => o)
	FROM (VALUES ('usage_chat', 100, 10), ('usage_chat', 200, 20), ('usage_batch', 1000, 100),
				 (NULL, 5, 5)) AS v(j, i, o)) r;
DO $$
BEGIN
	FOR i IN 1..200 LOOP
		EXIT WHEN (SELECT sum(requests) FROM rl_usage WHERE model = 'usage/jt') = 4
			  AND (SELECT count(*) FROM rl_usage WHERE model = 'usage/jt') = 3;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
-- cost: chat (300 + 30 x 2) / 1e6 = 0.00036, batch (1000 + 200) / 1e6 = 0.0012,
-- without a job type (5 + 10) / 1e6 = 0.000015
SELECT day, model, job_type, requests, input_tokens, output_tokens, total_tokens, cost
FROM rl_usage WHERE model = 'usage/jt' ORDER BY job_type NULLS LAST;

-- the next UTC day: the ended day moves to rl_usage_daily, split the same way
SELECT rl_debug_set_clock('2030-03-02 00:00:01+00');
SELECT granted FROM rl_acquire('usage/jt', 'usage_chat');
DO $$
BEGIN
	FOR i IN 1..200 LOOP
		EXIT WHEN (SELECT count(*) FROM rl_usage_daily WHERE model = 'usage/jt') = 3;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT day, model, job_type, requests, input_tokens, output_tokens, cost
FROM rl_usage_daily WHERE model = 'usage/jt' ORDER BY job_type;
SELECT day, job_type, requests, input_tokens, cost
FROM rl_usage WHERE model = 'usage/jt' ORDER BY day, job_type NULLS LAST;
SELECT count(*) FROM (SELECT (rl_release(lease_id)).released FROM rl_leases WHERE model = 'usage/jt') r;
DELETE FROM rl_job_type WHERE job_type LIKE 'usage_%';

DELETE FROM rl_model;
SELECT rl_debug_set_clock(NULL);
