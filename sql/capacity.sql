-- rl_capacity: min-based capacity per limit, and the total.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');
SELECT rl_define_model('cap/m', rpm => 10, tpm => 1000, rpd => 100, tpd => 5000, max_concurrent => 4);

-- empty: 1000 tokens per request -> tpm allows 1, the total is 1
SELECT dimension, limit_value, used, remaining, slots, resets_at
FROM rl_capacity('cap/m', tokens => 1000);
-- 100 tokens: rpm 10, tpm 10, rpd 100, tpd 50, concurrency 4 -> 4
SELECT dimension, slots FROM rl_capacity('cap/m', tokens => 100);
-- after usage
SELECT granted FROM rl_acquire('cap/m', tokens => 300);
SELECT granted FROM rl_acquire('cap/m', tokens => 300);
SELECT dimension, limit_value, used, remaining, slots
FROM rl_capacity('cap/m', tokens => 100);
-- 400 tokens: tpm 400/400 = 1, tpd 4400/400 = 11, concurrency 2: tpm's 1,
-- which resets at the end of the minute
SELECT dimension, slots, resets_at FROM rl_capacity('cap/m', tokens => 400) WHERE dimension = 'total';
-- equal slots on tpd and tpm: the total reports the day window
SELECT rl_define_model('cap/tie', tpm => 100, tpd => 100);
SELECT dimension, slots, resets_at FROM rl_capacity('cap/tie', tokens => 50);

-- a dimension the request does not consume has NULL slots and no part in
-- the minimum
SELECT dimension, slots FROM rl_capacity('cap/m', tokens => 0);

-- sizes default like rl_acquire: the job type's estimates (250 tokens,
-- 2 requests: rpm 8/2 = 4, tpm 400/250 = 1, rpd 98/2 = 49, tpd 4400/250 = 17),
-- else 0 tokens and 1 request
SELECT rl_define_job_type('cap/jt', est_tokens => 250, est_requests => 2);
SELECT dimension, slots FROM rl_capacity('cap/m', job_type => 'cap/jt');
SELECT dimension, slots FROM rl_capacity('cap/m');

-- a model without limits: only the total row, with no bound
SELECT rl_define_model('cap/free');
SELECT * FROM rl_capacity('cap/free', tokens => 5);

-- exhausted
SELECT rl_define_model('cap/full', rpm => 1);
SELECT granted FROM rl_acquire('cap/full');
SELECT dimension, remaining, slots FROM rl_capacity('cap/full');

DELETE FROM rl_model;
DELETE FROM rl_job_type;
