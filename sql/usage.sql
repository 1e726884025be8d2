-- rl_usage: the worker saves usage and cost per UTC day and model.
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

DELETE FROM rl_model;
SELECT rl_debug_set_clock(NULL);
