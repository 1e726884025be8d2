-- Waiting inside the server: max_wait, its defaults, and the waiting count.
SET timezone = 'UTC';
SELECT rl_define_model('wait/rpm', rpm => 1);
SELECT rl_define_model('wait/rpd', rpd => 1);
SELECT rl_define_model('wait/conc', max_concurrent => 1);

-- a waiter is admitted when the minute window resets under it
SELECT rl_debug_set_clock('2030-01-01 00:00:59+00');
SELECT granted FROM rl_acquire('wait/rpm');
SELECT granted, limited_by FROM rl_acquire('wait/rpm');
SELECT granted, model, limited_by FROM rl_acquire('wait/rpm', max_wait => '20 seconds');
SELECT requests_minute, waiting FROM rl_status WHERE model = 'wait/rpm';

-- a wait that runs out is a denial, reported as without waiting
SELECT granted FROM rl_acquire('wait/rpd');
SELECT clock_timestamp() AS started \gset
SELECT granted, limited_by, retry_after > '23:00:00' AS retry_at_day_end
FROM rl_acquire('wait/rpd', max_wait => '0.2 seconds');
SELECT clock_timestamp() - :'started' >= '0.2 seconds' AS waited_max_wait;
SELECT granted FROM rl_acquire('wait/conc');
SELECT granted, limited_by, retry_after
FROM rl_acquire('wait/conc', max_wait => '0.2 seconds');
SELECT waiting FROM rl_status WHERE model IN ('wait/rpd', 'wait/conc');
-- denied counts refused calls, once each: the waiter on wait/rpm that was
-- granted adds none (the call before it was refused), each wait that ran
-- out adds one, however often it tried while it waited
SELECT model, granted, denied FROM rl_status WHERE model LIKE 'wait/%' ORDER BY model;

-- rl_acquire_any waits on all its models at once: the waiter above took the
-- only request of minute 00:01, the next reset frees wait/rpm again
SELECT rl_debug_set_clock('2030-01-01 00:01:59+00');
SELECT granted FROM rl_acquire('wait/rpm');
SELECT granted, model FROM rl_acquire_any(ARRAY['wait/rpd', 'wait/conc', 'wait/rpm'], max_wait => '20 seconds');
SELECT model, granted, denied FROM rl_status WHERE model LIKE 'wait/%' ORDER BY model;

-- max_wait NULL: the job type's wait for that model, else its default
SELECT rl_define_job_type('wait/patient', max_wait => '0.3 seconds');
SELECT clock_timestamp() AS started \gset
SELECT granted, limited_by FROM rl_acquire('wait/rpd', job_type => 'wait/patient');
SELECT clock_timestamp() - :'started' >= '0.3 seconds' AS waited_the_default;
SELECT rl_set_max_wait('wait/patient', 'wait/rpd', '0');
SELECT granted, limited_by FROM rl_acquire('wait/rpd', job_type => 'wait/patient');
-- an explicit max_wait wins over both
SELECT granted, limited_by FROM rl_acquire('wait/rpd', job_type => 'wait/patient', max_wait => '0');

SELECT sum(waiting) AS still_waiting FROM rl_status;
DELETE FROM rl_model;
DELETE FROM rl_job_type;
SELECT rl_debug_set_clock(NULL);
