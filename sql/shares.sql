-- Job types' shares of a model: exact capacity, fixed and flexible ratios,
-- the minimum slots, refunds, escalation across models and per-model waits.
-- setup.sql set ratelimit.ratio_interval = 1h, so ratios move only when
-- this file makes the worker move them (10 releases).
SET timezone = 'UTC';
SHOW ratelimit.ratio_interval;
SELECT rl_debug_set_clock('2030-03-01 10:00:05+00');
SHOW ratelimit.min_job_type_slots;

-- Three job types on one model.  'batch' has a fixed ratio of 0.5; 'chat'
-- and 'embed' have none, so they split the remaining 0.5 equally: 0.25 each.
--   model: rpm 40, tpm 40000, max_concurrent 8
--   batch: ratio 0.5,  est 1000 tokens
--          rpm share floor(40 x 0.5) = 20, tpm share 20000, concurrency 4
--          slots = min(20/1, 20000/1000, 4/1) = min(20, 20, 4) = 4 (concurrency)
--   chat:  ratio 0.25, est 500 tokens
--          rpm share 10, tpm share 10000, concurrency floor(8 x 0.25) = 2
--          slots = min(10/1, 10000/500, 2/1) = min(10, 20, 2) = 2 (concurrency)
--   embed: ratio 0.25, est 2000 tokens, 2 requests
--          rpm share 10, tpm share 10000, concurrency 2
--          slots = min(10/2, 10000/2000, 2/1) = min(5, 5, 2) = 2 (concurrency)
SELECT rl_define_model('share/m', rpm => 40, tpm => 40000, max_concurrent => 8);
SELECT rl_define_job_type('batch', est_tokens => 1000, ratio => 0.5, flexible => false);
SELECT rl_define_job_type('chat', est_tokens => 500);
SELECT rl_define_job_type('embed', est_tokens => 2000, est_requests => 2);
SELECT job_type, ratio, base_ratio, flexible, slots, limited_by, rpm_share, tpm_share,
	   concurrency_share
FROM rl_job_status WHERE model = 'share/m';

-- Exact capacity: chat starts exactly 2 jobs at once; the third is refused
-- by its share, not by the model (which has 6 slots left)
-- (each rl_acquire runs once per row: OFFSET 0 keeps the subquery apart)
CREATE TEMP TABLE chat_leases AS
SELECT (g).* FROM (SELECT rl_acquire('share/m', 'chat') AS g
				   FROM generate_series(1, 3) OFFSET 0) s;
SELECT granted, limited_by, retry_after IS NULL AS only_releases_free_it FROM chat_leases;
SELECT job_type, in_flight, requests_minute, tokens_minute, granted, denied
FROM rl_job_status WHERE model = 'share/m' ORDER BY job_type;
SELECT in_flight, requests_minute, tokens_minute FROM rl_status WHERE model = 'share/m';

-- rl_capacity with a job type counts what the share leaves:
--   chat has rpm 10 - 2 = 8, tpm 10000 - 1000 = 9000 (18 jobs), 0 in flight left
SELECT dimension, limit_value, used, remaining, slots
FROM rl_capacity('share/m', 'chat');

-- A fixed job type keeps its full share while the flexible ones are
-- saturated: embed fills its 2, chat is full, batch still starts all 4
SELECT count(*) FILTER (WHERE granted) AS embed_granted,
	   count(*) FILTER (WHERE limited_by = 'job_type') AS embed_refused_by_share
FROM (SELECT (g).* FROM (SELECT rl_acquire('share/m', 'embed') AS g
						 FROM generate_series(1, 3) OFFSET 0) s) e;
CREATE TEMP TABLE batch_leases AS
SELECT (g).* FROM (SELECT rl_acquire('share/m', 'batch') AS g
				   FROM generate_series(1, 5) OFFSET 0) s;
SELECT count(*) FILTER (WHERE granted) AS batch_granted,
	   count(*) FILTER (WHERE limited_by = 'job_type') AS batch_refused_by_share
FROM batch_leases;
-- the model is now full (2 + 2 + 4 = 8 in flight): a request without a job
-- type is refused by the model's own limit
SELECT granted, limited_by FROM rl_acquire('share/m');

-- A refund returns capacity to the share as well as to the model: batch
-- released 4 x 1000 estimated tokens having used 100 each
SELECT sum((rl_release(lease_id, input_tokens => 60, output_tokens => 40)).tokens_refunded)
FROM batch_leases WHERE granted;
SELECT job_type, in_flight, tokens_minute FROM rl_job_status
WHERE model = 'share/m' AND job_type = 'batch';

-- A share smaller than one job still gets ratelimit.min_job_type_slots
-- (1) jobs per window and in flight.  'tiny' has ratio 0, so its shares are
-- all 0; its slots show the minimum:
--   min(floor(0/1), floor(0/500), floor(0/1)) = 0, raised to 1
SELECT rl_define_model('share/small', rpm => 100, max_concurrent => 10);
SELECT rl_define_job_type('tiny', est_tokens => 500, ratio => 0, flexible => false);
SELECT job_type, ratio, rpm_share, concurrency_share, slots
FROM rl_job_status WHERE model = 'share/small' AND job_type = 'tiny';
SELECT granted, limited_by FROM rl_acquire('share/small', 'tiny') \gset tiny_
\echo first tiny job granted: :tiny_granted
-- one in flight: the second is refused by the share
SELECT granted, limited_by, retry_after BETWEEN '40 s' AND '60 s' AS retry_next_minute
FROM rl_acquire('share/small', 'tiny');

SELECT rl_drop_job_type('tiny');
SELECT rl_drop_model('share/small');

-- Flexible ratios borrow from an idle flexible job type, never from a fixed
-- one.  chat is refused (load 1); embed is idle now (load 0); batch is fixed.
-- After 10 releases the worker moves the ratios:
--   embed gives min(0.25 - 0.01, 0.2) x (1 - 0) = 0.2   -> 0.05
--   chat receives all of it (the only job type with load > 0.7) -> 0.45
--   batch stays at 0.5
-- First release everything and start a new minute (denials of an ended
-- minute are no longer load), so that only the denials below give load.
SELECT count(*) FROM (SELECT (rl_release(lease_id)).released FROM rl_leases
					  WHERE model LIKE 'share/%' OR model LIKE 'esc/%') r;
SELECT rl_debug_set_clock('2030-03-01 10:01:05+00');
SELECT granted FROM rl_acquire('share/m', 'chat', tokens => 0);
SELECT granted FROM rl_acquire('share/m', 'chat', tokens => 0);
SELECT granted, limited_by FROM rl_acquire('share/m', 'chat', tokens => 0);
-- 10 releases on the model ask the worker for an adjustment
SELECT count(*) FROM (
	SELECT (rl_release((rl_acquire('share/m', 'batch', tokens => 0)).lease_id)).released
	FROM generate_series(1, 10)) r;
DO $$
BEGIN
	FOR i IN 1..100 LOOP
		EXIT WHEN (SELECT ratio FROM rl_job_status
				   WHERE model = 'share/m' AND job_type = 'chat') > 0.25;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT job_type, round(ratio::numeric, 4) AS ratio, base_ratio, rpm_share, concurrency_share
FROM rl_job_status WHERE model = 'share/m';
-- chat now has floor(8 x 0.45) = 3 in flight: a third job starts
SELECT granted FROM rl_acquire('share/m', 'chat', tokens => 0);
-- and embed, with floor(8 x 0.05) = 0, still gets its one guaranteed job
SELECT granted FROM rl_acquire('share/m', 'embed', tokens => 0);
SELECT granted, limited_by FROM rl_acquire('share/m', 'embed', tokens => 0);

-- Changing a configured ratio puts every ratio of the model back to its
-- configured value
SELECT rl_define_job_type('batch', est_tokens => 1000, ratio => 0.4, flexible => false);
SELECT job_type, round(ratio::numeric, 4) AS ratio, base_ratio
FROM rl_job_status WHERE model = 'share/m';
SELECT count(*) FROM (SELECT (rl_release(lease_id)).released FROM rl_leases
					  WHERE model LIKE 'share/%' OR model LIKE 'esc/%') r;

-- Escalation across models: rl_acquire_any goes to the first model with
-- capacity.  Each model has rpm 2; 'chat' has 0.3 of each (explicit now):
-- rpm share floor(2 x 0.3) = 0, raised to the 1 guaranteed job per minute.
SELECT rl_define_job_type('chat', est_tokens => 500, ratio => 0.3);
SELECT rl_define_model('esc/a', rpm => 2);
SELECT rl_define_model('esc/b', rpm => 2);
SELECT rl_define_model('esc/c', rpm => 2);
SELECT granted, model FROM rl_acquire_any('{esc/a,esc/b,esc/c}', 'chat');
SELECT granted, model FROM rl_acquire_any('{esc/a,esc/b,esc/c}', 'chat');
SELECT granted, model FROM rl_acquire_any('{esc/a,esc/b,esc/c}', 'chat');
-- all three exhausted for chat: refused, naming the model that frees first
-- (a tie: the first), limited by the job type's share
SELECT granted, model, limited_by, retry_after BETWEEN '40 s' AND '60 s' AS retry_next_minute
FROM rl_acquire_any('{esc/a,esc/b,esc/c}', 'chat');
-- another job type still has the models' remaining request each
SELECT granted, model FROM rl_acquire_any('{esc/a,esc/b,esc/c}', 'batch');

-- Per-model max_wait of a job type: 0 means try once, even when the job
-- type's default would wait an hour (a wait would hit statement_timeout)
SELECT rl_define_job_type('chat', est_tokens => 500, ratio => 0.3, max_wait => '1 hour');
SELECT rl_set_max_wait('chat', 'esc/a', '0');
SET statement_timeout = '5s';
SELECT granted, limited_by FROM rl_acquire('esc/a', 'chat');
RESET statement_timeout;

-- Slots of a few more configurations, each worked by hand.  Model 'slots/m':
-- rpm 60, tpm 90000, rpd 1000, tpd 500000, max_concurrent 30.  Ratios now:
-- batch 0.4 (fixed), chat 0.3 (set above), embed 0.3 (the rest).
SELECT rl_define_model('slots/m', rpm => 60, tpm => 90000, rpd => 1000, tpd => 500000,
					   max_concurrent => 30);
--   batch (est 1000 tokens, 1 request), ratio 0.4:
--     rpd floor(1000 x 0.4) = 400 -> 400; tpd 200000 / 1000 = 200;
--     rpm 24 -> 24; tpm 36000 / 1000 = 36; concurrency 12 -> 12
--     slots = min(400, 200, 24, 36, 12) = 12 (concurrency)
--   chat (est 500 tokens), ratio 0.3:
--     rpd 300; tpd 150000 / 500 = 300; rpm 18; tpm 27000 / 500 = 54; concurrency 9
--     slots = min(300, 300, 18, 54, 9) = 9 (concurrency)
SELECT job_type, slots, limited_by FROM rl_job_status
WHERE model = 'slots/m' AND job_type IN ('batch', 'chat') ORDER BY job_type;
-- with tokens binding: chat estimates 9000 tokens
--     tpd 150000 / 9000 = 16; tpm 27000 / 9000 = 3; rpm 18; concurrency 9
--     slots = min(300, 16, 18, 3, 9) = 3 (tpm)
SELECT rl_define_job_type('chat', est_tokens => 9000, ratio => 0.3, max_wait => '1 hour');
SELECT job_type, slots, limited_by FROM rl_job_status WHERE model = 'slots/m' AND job_type = 'chat';
-- several requests per job: chat estimates 3 requests and 1500 tokens
--     rpd floor(300 / 3) = 100; tpd 150000 / 1500 = 100; rpm 18 / 3 = 6;
--     tpm 27000 / 1500 = 18; concurrency 9
--     slots = min(100, 100, 6, 18, 9) = 6 (rpm)
SELECT rl_define_job_type('chat', est_tokens => 1500, est_requests => 3, ratio => 0.3,
						  max_wait => '1 hour');
SELECT job_type, slots, limited_by FROM rl_job_status WHERE model = 'slots/m' AND job_type = 'chat';
-- on 'slots/day' (rpd 50, tpd 60000, no minute limits) the day limits decide:
--     rpd floor(50 x 0.3) = 15 / 3 = 5; tpd 18000 / 1500 = 12 -> 5 (rpd)
--   and for embed (est 2000 tokens, 2 requests), ratio 0.3:
--     rpd 15 / 2 = 7; tpd 18000 / 2000 = 9 -> 7 (rpd)
SELECT rl_define_model('slots/day', rpd => 50, tpd => 60000);
SELECT job_type, slots, limited_by FROM rl_job_status
WHERE model = 'slots/day' AND job_type IN ('chat', 'embed') ORDER BY job_type;
-- a tie: 'tie' (ratio 0, est 0 tokens, 1 request) on 'slots/tie' with
-- rpd 10 and rpm 10 has 0 and 0, both raised to 1: the tie goes to rpd
SELECT rl_define_model('slots/tie', rpd => 10, rpm => 10);
SELECT rl_define_job_type('tie', ratio => 0, flexible => false);
SELECT job_type, slots, limited_by FROM rl_job_status WHERE model = 'slots/tie' AND job_type = 'tie';
SELECT rl_drop_job_type('tie');
SELECT rl_drop_model(m) FROM unnest('{slots/m,slots/day,slots/tie}'::text[]) m;

-- Shares are floor(limit x ratio) exactly, for every bigint limit, with the
-- ratio read as ratio::numeric reads it (rounded to 15 significant digits:
-- 0.29 is 0.29, and embed's implicit 1 - (0.4 + 0.3) = 0.30000000000000004
-- is 0.3):
--   tpd 10^13:            batch (0.4) 4000000000000, chat and embed 3000000000000
--   rpd, tpm 2^63 - 1:    batch 3689348814741910322, chat and embed 2767011611056432742
--   concurrency 2^31 - 1: batch 858993458, chat and embed 644245094
SELECT rl_define_model('share/huge', rpd => 9223372036854775807, tpd => 10000000000000,
					   tpm => 9223372036854775807, max_concurrent => 2147483647);
SELECT job_type, base_ratio, tpd_share, rpd_share, tpm_share, concurrency_share,
	   tpd_share = floor(tpd * base_ratio::numeric) AND rpd_share = floor(rpd * base_ratio::numeric)
	   AND concurrency_share = floor(max_concurrent * base_ratio::numeric) AS floor_of_numeric
FROM rl_job_status JOIN rl_status USING (model)
WHERE model = 'share/huge' ORDER BY job_type;
-- admission holds chat to exactly its share of tpd: 3000000000000 tokens
SELECT granted FROM rl_acquire('share/huge', 'chat', tokens => 2999999999999, max_wait => '0');
SELECT granted, limited_by FROM rl_acquire('share/huge', 'chat', tokens => 2, max_wait => '0');
SELECT granted FROM rl_acquire('share/huge', 'chat', tokens => 1, max_wait => '0');
SELECT job_type, tokens_day, tpd_share FROM rl_job_status
WHERE model = 'share/huge' AND job_type = 'chat';
SELECT count(*) FROM (SELECT (rl_release(lease_id)).released FROM rl_leases
					  WHERE model = 'share/huge') r;
SELECT rl_drop_model('share/huge');

-- Ratios must sum to at most 1; the error names the sum and nothing changes
SELECT rl_define_job_type('greedy', ratio => 0.5);
SELECT count(*) FROM rl_job_type WHERE job_type = 'greedy';

SELECT count(*) FROM (SELECT (rl_release(lease_id)).released FROM rl_leases
					  WHERE model LIKE 'share/%' OR model LIKE 'esc/%') r;
SELECT rl_drop_model(m) FROM unnest('{share/m,esc/a,esc/b,esc/c}'::text[]) m;
SELECT rl_drop_job_type(j) FROM unnest('{batch,chat,embed}'::text[]) j;
SELECT rl_debug_set_clock(NULL);
