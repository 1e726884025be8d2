-- rl_stats: counters per model that never reset, for monitoring.  Each
-- denial counts under the limit that refused it on the model, and they add
-- up to rl_status.denied; the running totals are what rl_usage shows,
-- summed over the days; a model dropped and defined again starts over.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-06-01 12:00:05+00');

SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = 'rl_stats'::regclass AND attnum > 0 ORDER BY attnum;

-- One model per limit: the first call fits, the next ones are refused by it
SELECT rl_define_model('stats/rpm', rpm => 1);
SELECT rl_define_model('stats/tpm', tpm => 100);
SELECT rl_define_model('stats/rpd', rpd => 1);
SELECT rl_define_model('stats/tpd', tpd => 100);
SELECT rl_define_model('stats/conc', max_concurrent => 1);
SELECT m, (g).granted, (g).limited_by
FROM (SELECT m, rl_acquire(m, tokens => t) AS g
	  FROM (VALUES (1, 'stats/rpm', 0), (2, 'stats/rpm', 0), (3, 'stats/rpm', 0),
				   (4, 'stats/tpm', 100), (5, 'stats/tpm', 1),
				   (6, 'stats/rpd', 0), (7, 'stats/rpd', 0),
				   (8, 'stats/tpd', 100), (9, 'stats/tpd', 1),
				   (10, 'stats/conc', 0), (11, 'stats/conc', 0), (12, 'stats/conc', 0),
				   (13, 'stats/conc', 0)) AS v(i, m, t)
	  ORDER BY i OFFSET 0) s;

-- a job type's share: a fixed ratio of 0.1 of max_concurrent 10 is one job
SELECT rl_define_model('stats/share', max_concurrent => 10);
SELECT rl_define_job_type('stats_small', ratio => 0.1, flexible => false);
SELECT (g).granted, (g).limited_by
FROM (SELECT rl_acquire('stats/share', 'stats_small') AS g
	  FROM generate_series(1, 3) OFFSET 0) s;

-- an instance's memory: 2000 kB x 0.5 / 1000 kB per job is one job in flight
SELECT rl_define_model('stats/mem');
SELECT rl_define_job_type('stats_mem', est_memory_kb => 1000, ratio => 0.5, flexible => false);
SELECT rl_heartbeat('stats_i', memory_kb => 2000);
SELECT (g).granted, (g).limited_by
FROM (SELECT rl_acquire('stats/mem', 'stats_mem', instance => 'stats_i') AS g
	  FROM generate_series(1, 2) OFFSET 0) s;

-- a call of rl_acquire_any refused by both models counts on each, under
-- the limit that refused it there (it reports the one that frees soonest)
SELECT granted, model, limited_by FROM rl_acquire_any('{stats/conc,stats/rpm}');

-- a waiting call whose max_wait passes: a denial, and a wait timed out
SELECT granted, limited_by FROM rl_acquire('stats/conc', max_wait => '20 ms');

SELECT model, granted, denied, denied_rpm, denied_tpm, denied_rpd, denied_tpd,
	   denied_concurrency, denied_job_type, denied_memory
FROM rl_stats WHERE model LIKE 'stats/%' ORDER BY model;
SELECT model, waits_granted, waits_timed_out, waits_cancelled,
	   wait_seconds_granted, wait_seconds_timed_out > 0 AS waited, wait_seconds_cancelled
FROM rl_stats WHERE model LIKE 'stats/%' ORDER BY model;

-- the denials by limit add up to denied, and the totals are rl_status's
SELECT model FROM rl_stats
WHERE denied <> denied_rpm + denied_tpm + denied_rpd + denied_tpd + denied_concurrency
			   + denied_job_type + denied_memory;
SELECT count(*) AS models,
	   count(*) FILTER (WHERE s.granted = t.granted AND s.denied = t.denied
						AND s.expired = t.expired AND s.overage_events = t.overage_events
						AND s.overage_tokens = t.overage_tokens) AS agree
FROM rl_stats s JOIN rl_status t USING (model) WHERE model LIKE 'stats/%';
SELECT job_type, granted, denied FROM rl_job_status
WHERE model = 'stats/share' AND job_type = 'stats_small';

-- redefining a model keeps its counters
SELECT rl_define_model('stats/rpm', rpm => 2);
SELECT granted, denied, denied_rpm FROM rl_stats WHERE model = 'stats/rpm';

-- Running totals: what rl_usage counts, over a day roll.  Prices per
-- million tokens: input 1, output 4, cached 0.5.
SELECT rl_define_model('stats/usage', price_input => 1, price_output => 4, price_cached => 0.5);
SELECT cost FROM rl_release((rl_acquire('stats/usage', tokens => 500)).lease_id,
							input_tokens => 400, output_tokens => 100, cached_tokens => 1000);
SELECT cost FROM rl_release((rl_acquire('stats/usage', tokens => 500)).lease_id,
							input_tokens => 700, output_tokens => 50);
-- a release without usage counts its request, and no tokens
SELECT released, cost FROM rl_release((rl_acquire('stats/usage', tokens => 500)).lease_id);
SELECT rl_debug_set_clock('2030-06-02 00:00:01+00');
SELECT cost FROM rl_release((rl_acquire('stats/usage', requests => 3)).lease_id,
							input_tokens => 10, output_tokens => 20, cached_tokens => 30);
SELECT requests_total, input_tokens_total, output_tokens_total, cached_tokens_total, cost_total
FROM rl_stats WHERE model = 'stats/usage';
-- wait (at most 20 s) until the worker saved both days
DO $$
BEGIN
	FOR i IN 1..200 LOOP
		EXIT WHEN (SELECT count(*) FROM rl_usage WHERE model = 'stats/usage') = 2
			  AND (SELECT sum(requests) FROM rl_usage WHERE model = 'stats/usage') = 6;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT day, requests, input_tokens, output_tokens, cached_tokens, cost
FROM rl_usage WHERE model = 'stats/usage' ORDER BY day;
SELECT s.requests_total = u.requests AS requests, s.input_tokens_total = u.input AS input,
	   s.output_tokens_total = u.output AS output, s.cached_tokens_total = u.cached AS cached,
	   s.cost_total = u.cost AS cost
FROM rl_stats s,
	 (SELECT sum(requests) AS requests, sum(input_tokens) AS input,
			 sum(output_tokens) AS output, sum(cached_tokens) AS cached, sum(cost) AS cost
	  FROM rl_usage WHERE model = 'stats/usage') u
WHERE s.model = 'stats/usage';

-- A model dropped and defined again starts over, and so does since
SELECT since AS usage_since FROM rl_stats WHERE model = 'stats/usage' \gset
SELECT since <= now() AS since_is_past FROM rl_stats WHERE model = 'stats/usage';
SELECT rl_drop_model('stats/usage');
SELECT rl_define_model('stats/usage', price_input => 1);
SELECT granted, denied, requests_total, input_tokens_total, cost_total, waits_timed_out,
	   since > :'usage_since' AS since_moved
FROM rl_stats WHERE model = 'stats/usage';

SELECT rl_unregister('stats_i');
SELECT count(rl_drop_model(model)) AS dropped FROM rl_model WHERE model LIKE 'stats/%';
SELECT rl_drop_job_type(j) FROM unnest('{stats_small,stats_mem}'::text[]) j;
SELECT rl_debug_set_clock(NULL);
