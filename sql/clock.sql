-- The test clock: windows, retry_after and expiry follow it.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-01-01 00:00:50+00');
SELECT rl_define_model('clk/m', rpm => 1, rpd => 3);
SELECT granted FROM rl_acquire('clk/m');
SELECT granted, limited_by, retry_after BETWEEN '5 seconds' AND '10 seconds' AS retry_ok
FROM rl_acquire('clk/m');
-- crossing the minute boundary resets the minute window
SELECT rl_debug_set_clock('2030-01-01 00:01:00+00');
SELECT requests_minute, requests_day FROM rl_status WHERE model = 'clk/m';
SELECT granted FROM rl_acquire('clk/m');
SELECT rl_debug_set_clock('2030-01-01 00:02:00+00');
SELECT granted FROM rl_acquire('clk/m');
-- the day limit is spent now
SELECT rl_debug_set_clock('2030-01-01 00:03:00+00');
SELECT granted, limited_by FROM rl_acquire('clk/m');
-- and the next UTC day starts afresh
SELECT rl_debug_set_clock('2030-01-02 00:00:00+00');
SELECT requests_minute, requests_day, day_resets_at = '2030-01-03 00:00:00+00' AS day_resets_ok
FROM rl_status WHERE model = 'clk/m';
SELECT granted FROM rl_acquire('clk/m');

-- Windows only move forward.  A clock that steps back across midnight keeps
-- the day it was in, with its usage, and the minute too: what it admits
-- then counts there (retry_after runs to the end of that minute).
SELECT rl_debug_set_clock('2030-07-02 00:00:30+00');
SELECT rl_define_model('clk/back', rpm => 2, rpd => 4, price_input => 1);
SELECT cost FROM rl_release((rl_acquire('clk/back')).lease_id, input_tokens => 1000000);
SELECT rl_debug_set_clock('2030-07-01 23:59:50+00');
SELECT requests_minute, requests_day, cost_today,
	   minute_resets_at = '2030-07-02 00:01:00+00' AS minute_kept,
	   day_resets_at = '2030-07-03 00:00:00+00' AS day_kept
FROM rl_status WHERE model = 'clk/back';
SELECT granted FROM rl_acquire('clk/back');
SELECT granted, limited_by, retry_after BETWEEN '65 seconds' AND '75 seconds' AS retry_ok
FROM rl_acquire('clk/back');
SELECT dimension, used, resets_at FROM rl_capacity('clk/back') WHERE dimension IN ('rpm', 'rpd');
-- forward again: a new minute of the same day
SELECT rl_debug_set_clock('2030-07-02 00:01:05+00');
SELECT requests_minute, requests_day, cost_today FROM rl_status WHERE model = 'clk/back';
SELECT granted FROM rl_acquire('clk/back');
-- the next day: the whole of 2030-07-02 is saved, and no day before it
SELECT rl_debug_set_clock('2030-07-03 00:00:05+00');
SELECT granted FROM rl_acquire('clk/back');
DO $$
BEGIN
	FOR i IN 1..200 LOOP
		EXIT WHEN EXISTS (SELECT FROM rl_usage_daily WHERE model = 'clk/back');
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT day, requests, input_tokens, cost FROM rl_usage_daily WHERE model = 'clk/back';

-- pause points (for tests that force an interleaving) are named
SET ratelimit.debug_pause = 'before_admission, before_sleep';
SHOW ratelimit.debug_pause;
SET ratelimit.debug_pause = 'before_lunch';
RESET ratelimit.debug_pause;
-- and only a superuser may set them
CREATE ROLE regress_rl_pause;
SET ROLE regress_rl_pause;
SET ratelimit.debug_pause = 'before_admission';
RESET ROLE;
DROP ROLE regress_rl_pause;

-- real time keeps running from the value set
SELECT rl_debug_set_clock('2030-06-01 12:00:00+00');
SELECT pg_sleep(0.2);
SELECT rl_clock() - '2030-06-01 12:00:00+00' BETWEEN '0.1 seconds' AND '30 seconds' AS running;

-- NULL returns to real time
SELECT rl_debug_set_clock(NULL);
SELECT abs(extract(epoch FROM rl_clock() - clock_timestamp())) < 5 AS real_time;

-- infinite times are refused
SELECT rl_debug_set_clock('infinity');

-- only a superuser may set the clock
CREATE ROLE regress_rl_clock;
SET ROLE regress_rl_clock;
SELECT rl_debug_set_clock('2030-01-01 00:00:00+00');
RESET ROLE;
-- even with EXECUTE granted
GRANT EXECUTE ON FUNCTION rl_debug_set_clock TO regress_rl_clock;
SET ROLE regress_rl_clock;
SELECT rl_debug_set_clock('2030-01-01 00:00:00+00');
RESET ROLE;
DROP OWNED BY regress_rl_clock;
DROP ROLE regress_rl_clock;
SELECT abs(extract(epoch FROM rl_clock() - clock_timestamp())) < 5 AS still_real_time;

DELETE FROM rl_model;
