-- rl_alter_model and rl_alter_job_type change only the settings given; a
-- limit (or ratio, or default wait) is removed by naming it in clear.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');

-- runs a statement and shows the SQLSTATE and message it fails with
CREATE FUNCTION regress_alter_error(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

SELECT rl_define_model('alt/m', rpm => 10, tpm => 1000, rpd => 100, tpd => 5000,
					   max_concurrent => 3, price_input => 2.5, price_output => 10,
					   price_cached => 1.25, count_cached => false);
SELECT granted FROM rl_acquire('alt/m', tokens => 100);

-- one setting: the others stay, and so does the usage
SELECT rl_alter_model('alt/m', tpm => 2000);
SELECT model, rpm, tpm, rpd, tpd, max_concurrent, price_input, price_output, price_cached,
	   count_cached FROM rl_model WHERE model = 'alt/m';
SELECT rpm, tpm, rpd, tpd, max_concurrent, requests_minute, tokens_minute, in_flight
FROM rl_status WHERE model = 'alt/m';

-- several settings at once, prices and count_cached included
SELECT rl_alter_model('alt/m', rpm => 20, max_concurrent => 5, price_output => 12,
					  count_cached => true);
SELECT model, rpm, tpm, rpd, tpd, max_concurrent, price_input, price_output, price_cached,
	   count_cached FROM rl_model WHERE model = 'alt/m';

-- clear removes limits (NULL: not limited); a price is set to 0 instead
SELECT rl_alter_model('alt/m', clear => ARRAY['rpd', 'max_concurrent']);
SELECT rl_alter_model('alt/m', price_cached => 0);
SELECT model, rpm, tpm, rpd, tpd, max_concurrent, price_input, price_output, price_cached,
	   count_cached FROM rl_model WHERE model = 'alt/m';
SELECT rpm, tpm, rpd, tpd, max_concurrent FROM rl_status WHERE model = 'alt/m';
-- a new value and a removal in one call
SELECT rl_alter_model('alt/m', rpm => 30, clear => '{tpd}');
SELECT rpm, tpm, rpd, tpd, max_concurrent FROM rl_status WHERE model = 'alt/m';

-- nothing given: nothing changes
SELECT rl_alter_model('alt/m');
SELECT rl_alter_model('alt/m', clear => '{}');
SELECT rpm, tpm, rpd, tpd, max_concurrent FROM rl_status WHERE model = 'alt/m';

-- a rolled back change never takes effect
BEGIN;
SELECT rl_alter_model('alt/m', rpm => 1);
ROLLBACK;
SELECT rpm FROM rl_status WHERE model = 'alt/m';

-- rl_define_model, by contrast, states the whole definition: what it does
-- not give takes its default
SELECT rl_define_model('alt/d', rpm => 10, tpm => 1000, price_input => 1);
SELECT rl_define_model('alt/d', rpm => 20);
SELECT rpm, tpm, price_input FROM rl_model WHERE model = 'alt/d';

-- errors, with the same SQLSTATEs as rl_define_model, and nothing changed
CREATE TEMP TABLE alt_before AS SELECT * FROM rl_model WHERE model = 'alt/m';
SELECT regress_alter_error($$SELECT rl_alter_model('alt/nope', rpm => 5)$$);
SELECT regress_alter_error($$SELECT rl_alter_model(NULL, rpm => 5)$$);
SELECT regress_alter_error($$SELECT rl_alter_model('', rpm => 5)$$);
SELECT regress_alter_error($$SELECT rl_alter_model(repeat('x', 128), rpm => 5)$$);
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', rpm => 0)$$);
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', tpm => -1)$$);
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', max_concurrent => 0)$$);
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', price_input => -1)$$);
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', price_output => 'NaN')$$);
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', price_cached => 'Infinity')$$);
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', clear => '{rpm,bogus}')$$);
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', clear => '{price_input}')$$);
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', clear => ARRAY['rpm', NULL])$$);
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', rpm => 5, clear => '{rpm}')$$);
-- a valid change before the bad one in the same call is not kept either
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', tpm => 7, rpd => 0)$$);
SELECT count(*) AS changed_rows
FROM (SELECT * FROM rl_model WHERE model = 'alt/m' EXCEPT SELECT * FROM alt_before) changed;
SELECT rpm, tpm, rpd, tpd, max_concurrent FROM rl_status WHERE model = 'alt/m';

-- job types
SELECT rl_define_job_type('alt/chat', est_tokens => 300, est_requests => 1, est_memory_kb => 64,
						  ratio => 0.4, flexible => false, max_wait => '2 seconds');
SELECT rl_define_job_type('alt/batch', est_tokens => 2000, ratio => 0.5);
SELECT rl_alter_job_type('alt/chat', est_tokens => 500);
SELECT job_type, est_tokens, est_requests, est_memory_kb, ratio, flexible, max_wait
FROM rl_job_type WHERE job_type = 'alt/chat';
SELECT rl_alter_job_type('alt/chat', ratio => 0.3, flexible => true, est_memory_kb => 0);
SELECT job_type, est_tokens, est_requests, est_memory_kb, ratio, flexible, max_wait
FROM rl_job_type WHERE job_type = 'alt/chat';
SELECT DISTINCT job_type, base_ratio FROM rl_job_status WHERE model = 'alt/m' ORDER BY 1;
-- clear: the ratio (back to sharing the remainder) and the default wait
SELECT rl_alter_job_type('alt/chat', clear => '{ratio,max_wait}');
SELECT job_type, est_tokens, est_requests, est_memory_kb, ratio, flexible, max_wait
FROM rl_job_type WHERE job_type = 'alt/chat';
SELECT rl_alter_job_type('alt/chat', ratio => 0.4, max_wait => '1 second');

CREATE TEMP TABLE alt_jt_before AS SELECT * FROM rl_job_type;
SELECT regress_alter_error($$SELECT rl_alter_job_type('alt/nope', est_tokens => 5)$$);
SELECT regress_alter_error($$SELECT rl_alter_job_type(NULL)$$);
SELECT regress_alter_error($$SELECT rl_alter_job_type('')$$);
SELECT regress_alter_error($$SELECT rl_alter_job_type('alt/chat', est_tokens => -1)$$);
SELECT regress_alter_error($$SELECT rl_alter_job_type('alt/chat', est_requests => -1)$$);
SELECT regress_alter_error($$SELECT rl_alter_job_type('alt/chat', est_memory_kb => -1)$$);
SELECT regress_alter_error($$SELECT rl_alter_job_type('alt/chat', ratio => 1.5)$$);
SELECT regress_alter_error($$SELECT rl_alter_job_type('alt/chat', ratio => 'NaN')$$);
SELECT regress_alter_error($$SELECT rl_alter_job_type('alt/chat', max_wait => '-1 second')$$);
SELECT regress_alter_error($$SELECT rl_alter_job_type('alt/chat', clear => '{est_tokens}')$$);
SELECT regress_alter_error($$SELECT rl_alter_job_type('alt/chat', ratio => 0.1, clear => '{ratio}')$$);
-- ratios may not sum past 1 (0.6 + 0.5): the change is not kept
SELECT regress_alter_error($$SELECT rl_alter_job_type('alt/chat', est_tokens => 1, ratio => 0.6)$$);
SELECT count(*) AS changed_rows
FROM (SELECT * FROM rl_job_type EXCEPT SELECT * FROM alt_jt_before) changed;
SELECT DISTINCT job_type, base_ratio FROM rl_job_status WHERE model = 'alt/m' ORDER BY 1;

-- same security as rl_define_*: EXECUTE is for the roles an administrator
-- names, and they then need no right on the tables
CREATE ROLE regress_rl_alter;
SET ROLE regress_rl_alter;
SELECT regress_alter_error($$SELECT rl_alter_model('alt/m', rpm => 5)$$);
SELECT regress_alter_error($$SELECT rl_alter_job_type('alt/chat', est_tokens => 5)$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION rl_alter_model, rl_alter_job_type TO regress_rl_alter;
SET ROLE regress_rl_alter;
SELECT rl_alter_model('alt/m', rpm => 5);
SELECT rl_alter_job_type('alt/chat', est_tokens => 5);
RESET ROLE;
SELECT rpm FROM rl_status WHERE model = 'alt/m';
SELECT est_tokens FROM rl_job_type WHERE job_type = 'alt/chat';
REVOKE EXECUTE ON FUNCTION rl_alter_model, rl_alter_job_type FROM regress_rl_alter;
DROP ROLE regress_rl_alter;
SELECT proname, prosecdef, proconfig FROM pg_proc
WHERE proname IN ('rl_alter_model', 'rl_alter_job_type') ORDER BY 1;

SELECT rl_drop_job_type('alt/chat');
SELECT rl_drop_job_type('alt/batch');
SELECT rl_drop_model('alt/m');
SELECT rl_drop_model('alt/d');
DROP FUNCTION regress_alter_error(text);
SELECT rl_debug_set_clock(NULL);
