-- Instances: heartbeats, allocations for 1, 2 and 3 live instances,
-- memory slots, instances joining and going stale.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-04-01 08:00:10+00');
SHOW ratelimit.instance_timeout;
SHOW ratelimit.max_instances;
SHOW ratelimit.max_instances_per_role;
DELETE FROM rl_model;
DELETE FROM rl_job_type;

-- Two job types for every configuration below:
--   chat:  est 1000 tokens, 1 request, 200000 kB of memory, ratio 0.5 (fixed)
--   batch: est 3000 tokens, 3 requests, no memory estimate, ratio: the rest, 0.5
-- The pool's estimates are the floored means: 2000 tokens, 2 requests.
SELECT rl_define_job_type('chat', est_tokens => 1000, est_requests => 1,
						  est_memory_kb => 200000, ratio => 0.5, flexible => false);
SELECT rl_define_job_type('batch', est_tokens => 3000, est_requests => 3, flexible => false);

-- Six configurations:
SELECT rl_define_model('alloc/tpm', tpm => 90000);
SELECT rl_define_model('alloc/rpm', rpm => 60);
SELECT rl_define_model('alloc/day', rpd => 1000, tpd => 2000000);
SELECT rl_define_model('alloc/conc', max_concurrent => 10);
SELECT rl_define_model('mix/a', rpm => 100, tpm => 50000, max_concurrent => 20);
SELECT rl_define_model('mix/b', tpm => 200000, max_concurrent => 4);
SELECT rl_define_model('alloc/mem', tpm => 900000, max_concurrent => 100);

-- One live instance, 'i2', which reports no memory
SELECT rl_heartbeat('i2');
-- n = 1:
-- alloc/tpm: pool = floor(floor(90000/1)/2000) = 45 (tpm)
--   chat  = min(floor(90000 x 0.5 / 1000) = 45, floor(45 x 0.5) = 22) = 22 (tpm)
--   batch = min(floor(45000 / 3000) = 15, 22) = 15 (tpm)
-- alloc/rpm: pool = floor(60 / 2) = 30 (rpm)
--   chat  = min(floor(60 x 0.5 / 1) = 30, floor(30 x 0.5) = 15) = 15 (rpm)
--   batch = min(floor(30 / 3) = 10, 15) = 10 (rpm)
-- alloc/day: pool = min(rpd 1000/2 = 500, tpd 2000000/2000 = 1000) = 500 (rpd)
--   chat  = min(rpd 500/1 = 500, tpd 1000000/1000 = 1000, 250) = 250 (rpd)
--   batch = min(rpd floor(500/3) = 166, tpd floor(1000000/3000) = 333, 250) = 166 (rpd)
-- alloc/conc: pool = 10 (concurrency)
--   chat  = min(floor(10 x 0.5) = 5, floor(10 x 0.5) = 5) = 5 (concurrency); batch the same
-- mix/a: pool = min(rpm 100/2 = 50, tpm 50000/2000 = 25, concurrency 20) = 20 (concurrency)
--   chat  = min(rpm 50, tpm 25000/1000 = 25, concurrency 10, pool 10) = 10 (concurrency)
--   batch = min(rpm floor(50/3) = 16, tpm floor(25000/3000) = 8, 10, 10) = 8 (tpm)
-- mix/b: pool = min(tpm 200000/2000 = 100, concurrency 4) = 4 (concurrency)
--   chat  = min(tpm 100000/1000 = 100, concurrency 2, pool 2) = 2 (concurrency)
--   batch = min(tpm floor(100000/3000) = 33, 2, 2) = 2 (concurrency)
-- alloc/mem: pool = min(tpm 900000/2000 = 450, concurrency 100) = 100 (concurrency)
--   chat  = min(tpm 450, concurrency 50, pool 50) = 50 (concurrency)
--   batch = min(tpm 150, 50, 50) = 50 (concurrency)
SELECT * FROM rl_allocation('i2');

-- Two live instances: 'i1' reports 1000000 kB of memory.  Its chat slots
-- are capped on every model at floor(1000000 x 0.5 / 200000) = 2 (memory),
-- which is what its acquires may have in flight across all models; batch
-- has no memory estimate.
SELECT rl_heartbeat('i1', memory_kb => 1000000);
-- n = 2:
-- alloc/tpm: pool = floor(45000/2000) = 22; chat = min(floor(45000 x 0.5/1000) = 22,
--   floor(22 x 0.5) = 11) = 11; batch = min(floor(22500/3000) = 7, 11) = 7 (tpm)
-- alloc/rpm: pool = floor(30/2) = 15; chat = min(15, 7) = 7; batch = min(floor(15/3) = 5, 7) = 5
-- alloc/day: pool = min(500/2 = 250, 1000000/2000 = 500) = 250 (rpd);
--   chat = min(250, 500, 125) = 125; batch = min(floor(250/3) = 83, 166, 125) = 83 (rpd)
-- alloc/conc: pool = 5; chat = batch = min(floor(5 x 0.5) = 2, 2) = 2
-- mix/a: pool = min(50/2 = 25, 25000/2000 = 12, 10) = 10 (concurrency);
--   chat = min(25, 12, 5, 5) = 5 (concurrency); batch = min(8, floor(12500/3000) = 4, 5, 5) = 4 (tpm)
-- mix/b: pool = min(50, 2) = 2; chat = batch = min(.., floor(2 x 0.5) = 1, 1) = 1
--   (for i1 too: 1 is under its memory cap)
-- alloc/mem: pool = min(225, 50) = 50; chat = 25 for i2, 2 (memory) for i1;
--   batch = min(floor(225000/3000) = 75, 25, 25) = 25
SELECT * FROM rl_allocation('i1') WHERE model IN ('alloc/mem', 'mix/b');
SELECT * FROM rl_allocation('i2');

-- Three live instances.  From here on, limits that 3 does not divide leave
-- a remainder: each instance gets floor(limit / 3), and the first instances
-- in order of registration (i2, then i1) one unit more each, so that the
-- parts add up to the limit.  i3, the last, gets floor(limit / 3).
SELECT rl_heartbeat('i3');
-- n = 3 (for i3):
-- alloc/tpm: pool = floor(30000/2000) = 15; chat = min(15, 7) = 7; batch = min(5, 7) = 5 (tpm)
-- alloc/rpm: pool = floor(20/2) = 10; chat = min(10, 5) = 5; batch = min(floor(10/3) = 3, 5) = 3
-- alloc/day: pool = min(floor(333/2) = 166, floor(666666/2000) = 333) = 166 (rpd);
--   chat = min(floor(333 x 0.5) = 166, 333, 83) = 83; batch = min(floor(166/3) = 55, 111, 83) = 55
-- alloc/conc: pool = floor(10/3) = 3; chat = batch = min(floor(3 x 0.5) = 1, 1) = 1
-- mix/a: pool = min(floor(33/2) = 16, floor(16666/2000) = 8, floor(20/3) = 6) = 6 (concurrency);
--   chat = min(16, floor(8333/1000) = 8, 3, 3) = 3; batch = min(5, floor(8333/3000) = 2, 3, 3) = 2 (tpm)
-- mix/b: max_concurrent 4 = 2 (i2) + 1 (i1) + 1 (i3); i3's pool = min(33, 1) = 1;
--   chat = batch = floor(1 x 0.5) = 0.  ratelimit.min_job_type_slots (1)
--   gives each job type a job from what the ratio parts leave (here 1 slot),
--   in name order, starting at the (rank mod 2)-th: i3 (rank 2) starts at
--   batch, which takes the slot; chat has 0 and is admitted centrally
--   (admission 'central').  i2 (part 2) has chat 1 and batch 1, i1 (rank 1,
--   part 1) has chat 1: 4 jobs in all, the limit.
-- alloc/mem: pool = min(150, 33) = 33; chat = 16 (2 for i1: memory); batch = 16
SELECT * FROM rl_allocation('i3');
SELECT model, job_type, pool_slots, slots, admission FROM rl_allocation('i1')
WHERE model = 'mix/b';
SELECT model, job_type, pool_slots, slots, admission FROM rl_allocation('i2')
WHERE model = 'mix/b';

-- The slots of all live instances together, per model: the jobs, requests
-- and tokens they stand for never exceed a limit of the model, nor do the
-- pools (in jobs of the mean estimate: 2 requests, 2000 tokens)
CREATE TEMP VIEW alloc_totals AS
SELECT t.model, t.jobs, t.requests, t.tokens, t.pool,
	   t.jobs <= coalesce(m.max_concurrent, t.jobs)
	   AND t.requests <= least(coalesce(m.rpm, t.requests), coalesce(m.rpd, t.requests))
	   AND t.tokens <= least(coalesce(m.tpm, t.tokens), coalesce(m.tpd, t.tokens))
	   AND t.pool <= coalesce(m.max_concurrent, t.pool)
	   AND t.pool * 2 <= least(coalesce(m.rpm, t.pool * 2), coalesce(m.rpd, t.pool * 2))
	   AND t.pool * 2000 <= least(coalesce(m.tpm, t.pool * 2000), coalesce(m.tpd, t.pool * 2000))
	   AS within_limits
FROM (SELECT a.model,
			 sum(a.slots) FILTER (WHERE a.job_type IS NOT NULL) AS jobs,
			 sum(a.slots * j.est_requests) AS requests,
			 sum(a.slots * j.est_tokens) AS tokens,
			 sum(a.pool_slots) FILTER (WHERE a.job_type IS NULL) AS pool
	  FROM rl_instances i
	  CROSS JOIN LATERAL rl_allocation(i.instance) a
	  LEFT JOIN rl_job_type j ON j.job_type = a.job_type
	  WHERE i.live
	  GROUP BY a.model) t
JOIN rl_model m USING (model);
SELECT * FROM alloc_totals ORDER BY model;
SELECT instance, memory_kb, live, leases FROM rl_instances;
-- each instance counts for the role that registered it
SELECT instance, role = current_user AS registered_by_me FROM rl_instances;

-- Memory is enforced on acquires that name the instance: i1 may have 2 chat
-- jobs in flight (across models), i2 (no memory reported) is not capped
SELECT (g).granted, (g).limited_by, (g).retry_after
FROM (SELECT rl_acquire('alloc/mem', 'chat', instance => 'i1') AS g
	  FROM generate_series(1, 3) OFFSET 0) s;
SELECT granted, limited_by FROM rl_acquire('alloc/conc', 'chat', instance => 'i1');
SELECT count(*) FILTER (WHERE (g).granted) AS i2_granted
FROM (SELECT rl_acquire('alloc/mem', 'chat', instance => 'i2') AS g
	  FROM generate_series(1, 5) OFFSET 0) s;
-- a release gives the memory slot back
SELECT (rl_release(lease_id)).released FROM rl_leases
WHERE instance = 'i1' ORDER BY lease_id LIMIT 1;
SELECT granted FROM rl_acquire('alloc/conc', 'chat', instance => 'i1');
SELECT instance, leases FROM rl_instances;

-- i3 stops sending heartbeats.  Ten seconds on, i1 and i2 send theirs;
-- twenty seconds on, i3's last heartbeat is older than instance_timeout
-- (15 s): the worker drops it and expires its lease.
SELECT granted FROM rl_acquire('alloc/conc', 'batch', instance => 'i3');
SELECT rl_debug_set_clock('2030-04-01 08:00:20+00');
SELECT rl_heartbeat('i1', memory_kb => 1000000), rl_heartbeat('i2');
SELECT rl_debug_set_clock('2030-04-01 08:00:30+00');
DO $$
BEGIN
	FOR i IN 1..100 LOOP
		EXIT WHEN NOT EXISTS (SELECT FROM rl_instances WHERE instance = 'i3');
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT instance, live FROM rl_instances;
SELECT count(*) AS i3_leases FROM rl_leases WHERE instance = 'i3';
-- the allocations grow back: n = 2 again
SELECT model, job_type, instances, pool_slots, slots FROM rl_allocation('i2')
WHERE model = 'alloc/conc';
-- a stale instance has no allocation
SELECT * FROM rl_allocation('i3');

-- rl_unregister leaves at once and expires the instance's leases; again is
-- a no-op
SELECT count(*) AS i1_leases FROM rl_leases WHERE instance = 'i1';
SELECT rl_unregister('i1');
SELECT count(*) AS i1_leases FROM rl_leases WHERE instance = 'i1';
SELECT rl_unregister('i1');
SELECT model, instances, pool_slots FROM rl_allocation('i2') WHERE job_type IS NULL AND model = 'alloc/conc';

-- (bad input to the instance functions is in errors.sql)
SELECT rl_unregister('i2');
SELECT count(*) FROM (SELECT (rl_release(lease_id)).released FROM rl_leases) r;

-- Memory-bound, with 1, 2 and 3 instances: 'm1' reports 8000000 kB, so its
-- chat jobs are capped at floor(8000000 x 0.5 / 200000) = 20.  On alloc/mem
-- (tpm 900000, max_concurrent 100):
--   n = 1: chat = min(tpm 450, concurrency 50, pool floor(100 x 0.5) = 50) = 50
--          -> 20 (memory)
--   n = 2: chat = min(floor(450000 x 0.5 / 1000) = 225, floor(50 x 0.5) = 25,
--          pool floor(50 x 0.5) = 25) = 25 -> 20 (memory)
--   n = 3: m1 registered first and has 34 of the 100 (34 + 33 + 33):
--          chat = min(150, floor(34 x 0.5) = 17, 17) = 17: under the memory
--          cap, so concurrency decides
SELECT rl_heartbeat('m1', memory_kb => 8000000);
SELECT * FROM rl_allocation('m1') WHERE model = 'alloc/mem';
SELECT rl_heartbeat('m2');
SELECT * FROM rl_allocation('m1') WHERE model = 'alloc/mem';
SELECT rl_heartbeat('m3');
SELECT * FROM rl_allocation('m1') WHERE model = 'alloc/mem';
SELECT rl_unregister(m) FROM unnest('{m1,m2,m3}'::text[]) m;

-- More instances than a model has room for.  Twelve instances on
-- 'many/conc' (max_concurrent 6): the first six (in order of registration)
-- have a part of 1, the other six a part of 0 and nothing to admit
-- locally: pool 0, every job type 'central'.  Each part of 1 holds one
-- job: ratios give floor(1 x 0.5) = 0, and the minimum slot goes to batch
-- on w01, w03, w05 and to chat on w02, w04, w06.  On 'many/tpm' (tpm 30000,
-- 2500 each): pool floor(2500 / 2000) = 1, the ratio parts floor(1 x 0.5)
-- = 0, and only chat (1000 tokens) fits in what is left as a minimum slot:
-- 12 chat jobs, 12000 tokens.
SELECT rl_define_model('many/conc', max_concurrent => 6);
SELECT rl_define_model('many/tpm', tpm => 30000);
SELECT max(rl_heartbeat(format('w%s', to_char(i, 'FM00')))) AS live
FROM generate_series(1, 12) i;
SELECT i.instance, string_agg(coalesce(a.job_type, 'pool') || ' ' || a.slots || ' ' || a.admission,
							  ', ' ORDER BY a.job_type NULLS FIRST) AS many_conc
FROM rl_instances i CROSS JOIN LATERAL rl_allocation(i.instance) a
WHERE a.model = 'many/conc' GROUP BY i.instance ORDER BY i.instance;
SELECT i.instance, string_agg(coalesce(a.job_type, 'pool') || ' ' || a.slots || ' ' || a.admission,
							  ', ' ORDER BY a.job_type NULLS FIRST) AS many_tpm
FROM rl_instances i CROSS JOIN LATERAL rl_allocation(i.instance) a
WHERE a.model = 'many/tpm' GROUP BY i.instance ORDER BY i.instance;
SELECT * FROM alloc_totals ORDER BY model;
SELECT count(rl_unregister(instance)) FROM rl_instances;
SELECT rl_drop_model(m) FROM unnest('{many/conc,many/tpm}'::text[]) m;
DROP VIEW alloc_totals;

-- The pool's mean estimate is exact, never wrapped: with two more job types
-- of 2^63 - 1 tokens each, the mean is floor((1000 + 3000 + 2 x (2^63 - 1)) / 4)
-- = 4611686018427388902 tokens, and a tpm of 1000 holds none of them
SELECT rl_define_job_type('huge1', est_tokens => 9223372036854775807);
SELECT rl_define_job_type('huge2', est_tokens => 9223372036854775807);
SELECT rl_define_model('huge/tpm', tpm => 1000);
SELECT rl_heartbeat('h1');
SELECT model, instances, pool_slots, slots, limited_by FROM rl_allocation('h1')
WHERE model = 'huge/tpm' AND job_type IS NULL;
SELECT rl_unregister('h1');
SELECT rl_drop_model('huge/tpm');
SELECT rl_drop_job_type(j) FROM unnest('{huge1,huge2}'::text[]) j;

-- A new installation of the extension forgets the instances of the old one,
-- at commit: a DROP and CREATE EXTENSION that roll back keep them
SELECT rl_heartbeat('kept');
BEGIN;
DROP EXTENSION pg_ratelimit;
CREATE EXTENSION pg_ratelimit;
ROLLBACK;
SELECT instance FROM rl_instances;
BEGIN;
DROP EXTENSION pg_ratelimit;
CREATE EXTENSION pg_ratelimit;
COMMIT;
SELECT count(*) AS instances FROM rl_instances;
DELETE FROM rl_model;
DELETE FROM rl_job_type;
SELECT rl_debug_set_clock(NULL);
