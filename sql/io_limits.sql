-- Input and output tokens limited apart: itpm and otpm.  An acquire gives
-- tokens => its whole estimate and output_tokens => the output's part of it
-- (max_tokens); tpm counts the whole, itpm the input (tokens -
-- output_tokens), otpm the output.  A release
-- settles each from the actual usage; cached input counts as input when the
-- model's count_cached says.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-01-01 00:00:10+00');

CREATE FUNCTION regress_io_error(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- The limits are positive or NULL; a failed call changes nothing
SELECT regress_io_error($$SELECT rl_define_model('io/bad', itpm => 0)$$);
SELECT regress_io_error($$SELECT rl_define_model('io/bad', otpm => -5)$$);
SELECT count(*) FROM rl_model WHERE model = 'io/bad';
SELECT rl_define_model('io/m', rpm => 100, tpm => 10000, itpm => 4000, otpm => 1000);
SELECT model, rpm, tpm, itpm, otpm FROM rl_model WHERE model = 'io/m';

-- On a model with otpm, an acquire without an output estimate is an error
-- (with a hint), and reserves nothing
SELECT regress_io_error($$SELECT rl_acquire('io/m', tokens => 100)$$);
SELECT rl_acquire('io/m', tokens => 100);
SELECT regress_io_error($$SELECT rl_acquire_any(ARRAY['io/m'], tokens => 100)$$);
-- checked on every model before any is tried: a full model before it is
-- not refused (no denial counted)
SELECT rl_define_model('io/full', rpm => 1);
SELECT granted FROM rl_acquire('io/full');
SELECT regress_io_error($$SELECT rl_acquire_any(ARRAY['io/full', 'io/m'], tokens => 100)$$);
SELECT denied FROM rl_stats WHERE model = 'io/full';
SELECT regress_io_error($$SELECT rl_acquire('io/m', tokens => 100, output_tokens => -1)$$);
-- the output is part of the whole estimate
SELECT regress_io_error($$SELECT rl_acquire('io/m', tokens => 100, output_tokens => 101)$$);
SELECT regress_io_error($$SELECT rl_acquire('io/m', output_tokens => 1)$$);
SELECT regress_io_error($$SELECT * FROM rl_capacity('io/m', tokens => 1, output_tokens => 2)$$);
SELECT tokens_minute, input_tokens_minute, output_tokens_minute, in_flight
FROM rl_status WHERE model = 'io/m';

-- 1300 tokens of which 300 output: itpm takes 1000, otpm 300, tpm 1300
SELECT granted, lease_id IS NOT NULL AS has_lease
FROM rl_acquire('io/m', tokens => 1300, output_tokens => 300) \gset io_
SELECT lease_id AS io_lease FROM rl_leases WHERE model = 'io/m' \gset
SELECT tokens_minute, input_tokens_minute, output_tokens_minute
FROM rl_status WHERE model = 'io/m';
SELECT tokens FROM rl_leases WHERE lease_id = :io_lease;

-- otpm refuses when the output estimates are more than it has left (tpm and
-- itpm would still admit): limited_by otpm, until the minute ends
SELECT granted, limited_by, retry_after BETWEEN '49 s' AND '50 s' AS to_the_minute
FROM rl_acquire('io/m', tokens => 711, output_tokens => 701);
SELECT granted FROM rl_acquire('io/m', tokens => 710, output_tokens => 700);
-- itpm refuses input estimates past it
SELECT granted, limited_by FROM rl_acquire('io/m', tokens => 2991, output_tokens => 0);
-- a request larger than a limit can never fit
SELECT regress_io_error($$SELECT rl_acquire('io/m', tokens => 1011, output_tokens => 1001)$$);
SELECT regress_io_error($$SELECT rl_acquire('io/m', tokens => 4002, output_tokens => 1)$$);

-- rl_capacity shows both, and how many of a size fit
SELECT dimension, limit_value, used, remaining, slots
FROM rl_capacity('io/m', tokens => 600, output_tokens => 100);
SELECT denied_itpm, denied_otpm FROM rl_stats WHERE model = 'io/m';

-- A release settles input and output apart: 800 input, 100 cached (counted:
-- count_cached is true) and 250 output against 1000 and 300 reserved
SELECT released, tokens_estimated, tokens_actual, tokens_refunded
FROM rl_release(:io_lease, input_tokens => 800, output_tokens => 250, cached_tokens => 100);
SELECT tokens_minute, input_tokens_minute, output_tokens_minute
FROM rl_status WHERE model = 'io/m';
-- an overage of output is taken from otpm, and of input from itpm
SELECT lease_id AS io_lease2 FROM rl_acquire('io/m', tokens => 100, output_tokens => 0) \gset
SELECT released, overage FROM rl_release(:io_lease2, input_tokens => 50, output_tokens => 120);
SELECT tokens_minute, input_tokens_minute, output_tokens_minute
FROM rl_status WHERE model = 'io/m';

-- Without count_cached, cached input tokens count in neither tpm nor itpm
SELECT rl_define_model('io/nocache', itpm => 1000, count_cached => false);
SELECT lease_id AS io_lease3 FROM rl_acquire('io/nocache', tokens => 300) \gset
SELECT input_tokens_minute FROM rl_status WHERE model = 'io/nocache';
SELECT released FROM rl_release(:io_lease3, input_tokens => 200, output_tokens => 50, cached_tokens => 400);
SELECT tokens_minute, input_tokens_minute, output_tokens_minute
FROM rl_status WHERE model = 'io/nocache';
-- without otpm the output estimate is optional: tokens alone count as input
-- (200 + 700 of itpm's 1000 leave 100)
SELECT granted FROM rl_acquire('io/nocache', tokens => 700);
SELECT granted, limited_by FROM rl_acquire('io/nocache', tokens => 101);

-- The minute ends: both are free again
SELECT rl_debug_set_clock('2030-01-01 00:01:00.5+00');
SELECT input_tokens_minute, output_tokens_minute FROM rl_status WHERE model = 'io/m';
SELECT granted FROM rl_acquire('io/m', tokens => 5000, output_tokens => 1000);

-- Job types get a share of itpm and otpm like of every limit
SELECT rl_define_job_type('io/half', ratio => 0.5, flexible => false);
SELECT granted FROM rl_acquire('io/nocache', 'io/half', tokens => 400);
SELECT granted, limited_by FROM rl_acquire('io/nocache', 'io/half', tokens => 200);
SELECT itpm_share, input_tokens_minute, otpm_share, output_tokens_minute
FROM rl_job_status WHERE model = 'io/nocache' AND job_type = 'io/half';

-- Bucket models refill itpm and otpm like the other limits: otpm 600 is 10
-- output tokens a second
SELECT rl_define_model('io/bucket', otpm => 600, window_type => 'bucket');
SELECT granted FROM rl_acquire('io/bucket', tokens => 600, output_tokens => 600);
SELECT granted, limited_by, retry_after BETWEEN '0.7 s' AND '1 s' AS about_a_second
FROM rl_acquire('io/bucket', tokens => 10, output_tokens => 10);
SELECT rl_debug_set_clock('2030-01-01 00:01:03+00');
SELECT output_tokens_minute BETWEEN 574 AND 577 AS refilled_about_25
FROM rl_status WHERE model = 'io/bucket';
SELECT granted FROM rl_acquire('io/bucket', tokens => 20, output_tokens => 20);

-- rl_alter_model changes or clears them alone
SELECT rl_alter_model('io/m', itpm => 5000);
SELECT rpm, tpm, itpm, otpm FROM rl_model WHERE model = 'io/m';
SELECT rl_alter_model('io/m', clear => '{otpm}');
SELECT itpm, otpm FROM rl_model WHERE model = 'io/m';
SELECT granted FROM rl_acquire('io/m', tokens => 10);
SELECT regress_io_error($$SELECT rl_alter_model('io/m', clear => '{itpm}', itpm => 5)$$);

-- The provider's input and output token headers (Anthropic) raise itpm and
-- otpm where it has less left than the limiter
SELECT rl_define_model('io/obs', itpm => 10000, otpm => 2000);
SELECT raised FROM rl_observe('io/obs', '{"anthropic-ratelimit-input-tokens-limit": "10000",
	"anthropic-ratelimit-input-tokens-remaining": "7000",
	"anthropic-ratelimit-output-tokens-limit": "2000",
	"anthropic-ratelimit-output-tokens-remaining": "1500"}');
SELECT itpm, otpm, input_tokens_minute, output_tokens_minute, provider_itpm, provider_otpm,
	   provider_limits_differ
FROM rl_status WHERE model = 'io/obs';
-- a limit the provider reports that is not the configured one shows
SELECT raised FROM rl_observe('io/obs', '{"anthropic-ratelimit-output-tokens-limit": "4000"}');
SELECT provider_otpm, provider_limits_differ FROM rl_status WHERE model = 'io/obs';

SELECT rl_drop_model(model) FROM rl_model WHERE model LIKE 'io/%';
SELECT rl_drop_job_type('io/half');
DROP FUNCTION regress_io_error(text);
SELECT rl_debug_set_clock(NULL);
