-- rl_observe(model, headers, status): what a provider's response said about
-- its limits.  Where the provider has less left than the limiter holds, the
-- limiter's usage rises to match (never falls); a 429 or retry-after pauses
-- the model for every session; the reported limits show in rl_status.
-- Malformed headers are ignored one by one and counted, never an error.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');

CREATE FUNCTION regress_observe_error(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

SELECT rl_define_model('obs/openai', rpm => 60, tpm => 10000);
SELECT rl_define_model('obs/anthropic', rpm => 50, tpm => 40000, window_type => 'bucket');

-- OpenAI's headers: limits, remaining, resets as durations
SELECT * FROM rl_observe('obs/openai', '{
	"x-ratelimit-limit-requests": "60",
	"x-ratelimit-limit-tokens": "10000",
	"x-ratelimit-remaining-requests": "59",
	"x-ratelimit-remaining-tokens": "9000",
	"x-ratelimit-reset-requests": "1s",
	"x-ratelimit-reset-tokens": "6m0s",
	"content-type": "application/json"}', 200);
-- the provider has 1000 tokens and a request less than the limiter knew of
SELECT requests_minute, tokens_minute, provider_rpm, provider_tpm,
	   provider_remaining_requests, provider_remaining_tokens, provider_limits_differ,
	   provider_cooldown_until, provider_headers_ignored
FROM rl_status WHERE model = 'obs/openai';
-- never falls: a later response with more left changes nothing
SELECT * FROM rl_observe('obs/openai', '{"x-ratelimit-remaining-tokens": "9999",
										 "x-ratelimit-remaining-requests": "60"}');
SELECT requests_minute, tokens_minute FROM rl_status WHERE model = 'obs/openai';
-- what it raised is what an acquire finds: 9000 tokens left
SELECT granted, limited_by FROM rl_acquire('obs/openai', tokens => 9001);
SELECT granted FROM rl_acquire('obs/openai', tokens => 9000);

-- The provider settles a call's actual usage when it answers, the limiter
-- when the lease is released, after rl_observe: an overage the provider
-- reported raises the usage once, not again at the release
SELECT rl_define_model('obs/settle', tpm => 10000);
SELECT lease_id AS obs_lease FROM rl_acquire('obs/settle', tokens => 1000) \gset
SELECT raised FROM rl_observe('obs/settle', '{"x-ratelimit-limit-tokens": "10000",
											  "x-ratelimit-remaining-tokens": "8700"}');
SELECT tokens_minute FROM rl_status WHERE model = 'obs/settle';
SELECT overage FROM rl_release(:obs_lease, input_tokens => 1000, output_tokens => 300);
SELECT tokens_minute FROM rl_status WHERE model = 'obs/settle';
-- with no lease in flight, an overage the provider did not report counts
SELECT rl_release(lease_id, input_tokens => 500) FROM rl_acquire('obs/settle', tokens => 400);
SELECT tokens_minute FROM rl_status WHERE model = 'obs/settle';

-- Every duration form OpenAI writes, each understood
SELECT d, (rl_observe('obs/openai', jsonb_build_object('x-ratelimit-reset-tokens', d))).understood
FROM unnest(ARRAY['1s', '20ms', '6m0s', '1m30.5s', '1h2m3s', '0.5s', '250ms', '17']) d;
-- and malformed ones, each ignored
SELECT d, (rl_observe('obs/openai', jsonb_build_object('x-ratelimit-reset-tokens', d))).ignored
FROM unnest(ARRAY['', 's', '1x', '5s1m', '1ss', '-1s', '1 s', '3d', '99999h', 'NaN']) d;

-- Anthropic's headers, names in any case, RFC 3339 resets (the provider's
-- real time: on the limiter's test clock, the same distance from now)
SELECT understood, ignored, raised FROM rl_observe('obs/anthropic', jsonb_build_object(
	'Anthropic-RateLimit-Requests-Limit', '50',
	'anthropic-ratelimit-requests-remaining', '45',
	'anthropic-ratelimit-requests-reset', to_char(now() + interval '6 s', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
	'ANTHROPIC-RATELIMIT-TOKENS-LIMIT', '40000',
	'anthropic-ratelimit-tokens-remaining', '30000',
	'anthropic-ratelimit-tokens-reset', to_char(now() + interval '15 s', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
	'anthropic-ratelimit-input-tokens-limit', '30000',
	'anthropic-ratelimit-input-tokens-remaining', '25000',
	'anthropic-ratelimit-input-tokens-reset', to_char(now() at time zone 'UTC' + interval '10 s', 'YYYY-MM-DD"T"HH24:MI:SS"+02:00"'),
	'anthropic-ratelimit-output-tokens-limit', '8000',
	'anthropic-ratelimit-output-tokens-remaining', '8000',
	'anthropic-ratelimit-output-tokens-reset', to_char(now() + interval '1 s', 'YYYY-MM-DD"t"HH24:MI:SS"z"'),
	'request-id', 'req_123'), 200);
-- (a bucket: it refills about 11 tokens a millisecond from there)
SELECT requests_minute, tokens_minute BETWEEN 9000 AND 10000 AS about_10000, provider_rpm,
	   provider_tpm, provider_itpm, provider_otpm, provider_limits_differ
FROM rl_status WHERE model = 'obs/anthropic';
-- the bucket refills from there: 5 requests short, it holds 45
SELECT count(*) FILTER (WHERE (rl_acquire('obs/anthropic')).granted) AS granted
FROM generate_series(1, 46);

-- Malformed RFC 3339 times and counts
SELECT v, (rl_observe('obs/anthropic', jsonb_build_object('anthropic-ratelimit-tokens-reset', v))).ignored
FROM unnest(ARRAY['2030-01-01', '2030-13-01T00:00:00Z', '2030-02-30T00:00:00Z',
				  '2030-01-01T24:00:00Z', '2030-01-01T00:00:00', '2030-01-01T00:00:00+2:00',
				  'tomorrow', '2030-01-01T00:00:00.Z']) v;
SELECT v, (rl_observe('obs/anthropic', jsonb_build_object('anthropic-ratelimit-tokens-remaining', v))).ignored
FROM unnest(ARRAY['', '-1', '1.5', '1e3', '12abc', '9999999999999999999', ' ']) v;
-- values as JSON numbers and arrays count; other JSON does not
SELECT understood, ignored FROM rl_observe('obs/anthropic',
	'{"anthropic-ratelimit-requests-limit": 50,
	  "anthropic-ratelimit-tokens-limit": ["40000", "39000"],
	  "anthropic-ratelimit-requests-remaining": {"value": 1},
	  "anthropic-ratelimit-tokens-remaining": null,
	  "anthropic-ratelimit-output-tokens-remaining": true,
	  "anthropic-ratelimit-input-tokens-remaining": []}');
-- a limit reported that is not the configured one shows
SELECT * FROM rl_observe('obs/openai', '{"x-ratelimit-limit-requests": "500"}');
SELECT rpm, provider_rpm, provider_limits_differ FROM rl_status WHERE model = 'obs/openai';
-- every malformed header above is counted (8 + 7 + 4)
SELECT provider_headers_ignored FROM rl_status WHERE model = 'obs/anthropic';

-- A 429 with retry-after in seconds: every session is refused until then,
-- with limited_by provider and retry_after the time left (cooldown_until is
-- on the limiter's clock, the test clock here)
SELECT rl_define_model('obs/pause', rpm => 100);
SELECT understood, raised, cooldown_until BETWEEN '2030-01-01 00:00:25' AND '2030-01-01 00:00:26'
	   AS in_20_s
FROM rl_observe('obs/pause', '{"retry-after": "20"}', 429);
SELECT granted, limited_by, retry_after BETWEEN '19 s' AND '20 s' AS twenty_seconds
FROM rl_acquire('obs/pause');
SELECT provider_cooldown_until IS NOT NULL AS cooling FROM rl_status WHERE model = 'obs/pause';
SELECT denied_provider FROM rl_stats WHERE model = 'obs/pause';
-- a shorter retry-after does not end it early
SELECT cooldown_until BETWEEN '2030-01-01 00:00:25' AND '2030-01-01 00:00:26' AS still_in_20_s
FROM rl_observe('obs/pause', '{"retry-after": "1"}', 429);
-- after it, admitted again
SELECT rl_debug_set_clock('2030-01-01 00:00:26+00');
SELECT granted FROM rl_acquire('obs/pause');
SELECT provider_cooldown_until FROM rl_status WHERE model = 'obs/pause';
-- retry-after as an HTTP date (the provider's real time), a 429 without one
-- (a second), retry-after without a 429 (it counts too)
SELECT understood, cooldown_until IS NOT NULL AS cooling
FROM rl_observe('obs/pause', jsonb_build_object('Retry-After',
	to_char(now() at time zone 'UTC' + interval '5 s', 'Dy, DD Mon YYYY HH24:MI:SS "GMT"')), 503);
SELECT granted, limited_by, retry_after BETWEEN '3 s' AND '5 s' AS about_5_s
FROM rl_acquire('obs/pause');
SELECT rl_debug_set_clock('2030-01-01 00:01:00+00');
SELECT cooldown_until BETWEEN '2030-01-01 00:01:00.5' AND '2030-01-01 00:01:01.5' AS one_second
FROM rl_observe('obs/pause', '{}', 429);
SELECT rl_debug_set_clock('2030-01-01 00:01:02+00');
SELECT cooldown_until IS NULL AS none FROM rl_observe('obs/pause', '{"retry-after": "0"}');
SELECT v, (rl_observe('obs/pause', jsonb_build_object('retry-after', v))).ignored
FROM unnest(ARRAY['soon', '-5', 'Fri, 31 Dec 2999 23:59:59 GMT', 'Mon, 32 Jan 2030 00:00:00 GMT',
				  'Mon, 01 Foo 2030 00:00:00 GMT', '1e9', '999999']) v;
SELECT granted FROM rl_acquire('obs/pause');

-- A pause lasts at most ratelimit.max_provider_pause (5 minutes by
-- default), whatever retry-after says, and a change of the model's
-- configuration ends it
SHOW ratelimit.max_provider_pause;
SELECT cooldown_until BETWEEN '2030-01-01 00:06:01' AND '2030-01-01 00:06:03' AS five_minutes
FROM rl_observe('obs/pause', '{"retry-after": "86400"}', 429);
SELECT granted, limited_by FROM rl_acquire('obs/pause');
SELECT rl_alter_model('obs/pause', rpm => 101);
SELECT granted FROM rl_acquire('obs/pause');
SELECT provider_cooldown_until FROM rl_status WHERE model = 'obs/pause';

-- Numbers no header holds are ignored, however they are written
SELECT understood, ignored FROM rl_observe('obs/pause', jsonb_build_object(
	'x-ratelimit-limit-tokens', '1e131071'::numeric,
	'X-Ratelimit-Limit-Tokens', '-1e131071'::numeric,
	'x-RateLimit-limit-tokens', '1e-16383'::numeric,
	'x-ratelimit-limit-requests', 'NaN'::numeric,
	'x-ratelimit-remaining-tokens', 12345678901234567890::numeric,
	'x-ratelimit-remaining-requests', 0.5));

-- Errors: the call's own arguments, and nothing changes
SELECT regress_observe_error($$SELECT rl_observe(NULL, '{}')$$);
SELECT regress_observe_error($$SELECT rl_observe('obs/none', '{}')$$);
SELECT regress_observe_error($$SELECT rl_observe('obs/pause', '[1, 2]')$$);
SELECT regress_observe_error($$SELECT rl_observe('obs/pause', '"x-ratelimit-limit-requests"')$$);
SELECT regress_observe_error($$SELECT rl_observe('obs/pause', '{}', 42)$$);
SELECT regress_observe_error($$SELECT rl_observe('obs/pause', '{"retry-after": "60"}', 600)$$);
SELECT provider_cooldown_until FROM rl_status WHERE model = 'obs/pause';
-- Like rl_acquire, only roles granted it may call it
CREATE ROLE regress_observer;
SET ROLE regress_observer;
SELECT regress_observe_error($$SELECT rl_observe('obs/pause', '{}', 429)$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION rl_observe TO regress_observer;
SET ROLE regress_observer;
SELECT understood FROM rl_observe('obs/pause', '{"x-ratelimit-limit-requests": 100}');
RESET ROLE;
DROP OWNED BY regress_observer;
DROP ROLE regress_observer;
-- NULL headers: only the status counts
SELECT understood, ignored, cooldown_until IS NULL AS none FROM rl_observe('obs/pause', NULL, 200);

SELECT rl_drop_model(model) FROM rl_model WHERE model LIKE 'obs/%';
DROP FUNCTION regress_observe_error(text);
SELECT rl_debug_set_clock(NULL);
