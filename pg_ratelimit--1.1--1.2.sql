/* pg_ratelimit--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_ratelimit UPDATE TO '1.2'" to load this file. \quit

------------------------------------------------------------------------------
-- Version 1.2: limits that match the provider's.  A model's rate limits
-- count either in fixed UTC minutes and days (window_type 'fixed', as before
-- and the default) or as token buckets that refill continuously (window_type
-- 'bucket'), the way providers count them; input and output tokens can be
-- limited apart (itpm, otpm), with the output estimate given to rl_acquire;
-- rl_observe takes what the provider's responses say.
--
-- The extension lives in the schema ratelimit from 1.1 on: objects created
-- unqualified land there, helpers go to ratelimit_internal by name.
------------------------------------------------------------------------------

-- The tables the background worker reads and writes, in the order the 1.1
-- script locks them: a worker round in progress finishes first.
LOCK TABLE rl_model, rl_job_type, rl_job_type_wait, rl_counter, rl_share_counter,
	rl_lease_state, rl_usage_daily, rl_mark, rl_instance_state, rl_saved_clock
	IN ACCESS EXCLUSIVE MODE;

ALTER TABLE rl_model
	ADD COLUMN window_type text NOT NULL DEFAULT 'fixed'
		CONSTRAINT rl_model_window_type_check CHECK (window_type IN ('fixed', 'bucket'));
COMMENT ON COLUMN rl_model.window_type IS
	'how the rate limits count: fixed (UTC minutes and days, reset at each boundary) or bucket (each limit refills continuously, limit per minute or day)';

-- Input and output tokens per minute, limited apart (tpm counts both)
ALTER TABLE rl_model
	ADD COLUMN itpm bigint CONSTRAINT rl_model_itpm_check CHECK (itpm > 0),
	ADD COLUMN otpm bigint CONSTRAINT rl_model_otpm_check CHECK (otpm > 0);
COMMENT ON COLUMN rl_model.itpm IS
	'input tokens per minute (cached input counts when count_cached); NULL: not limited';
COMMENT ON COLUMN rl_model.otpm IS
	'output tokens per minute, reserved from the output estimate rl_acquire is given (output_tokens); NULL: not limited';
ALTER TABLE rl_counter
	ADD COLUMN input_tokens_minute bigint NOT NULL DEFAULT 0,
	ADD COLUMN output_tokens_minute bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN rl_counter.input_tokens_minute IS 'usage of itpm in the minute minute_start (bucket models: what its bucket lacked)';
COMMENT ON COLUMN rl_counter.output_tokens_minute IS 'usage of otpm in the minute minute_start (bucket models: what its bucket lacked)';
ALTER TABLE rl_share_counter
	ADD COLUMN input_tokens_minute bigint NOT NULL DEFAULT 0,
	ADD COLUMN output_tokens_minute bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN rl_share_counter.input_tokens_minute IS 'the job type''s usage of its share of itpm';
COMMENT ON COLUMN rl_share_counter.output_tokens_minute IS 'the job type''s usage of its share of otpm';
ALTER TABLE rl_mark
	ADD COLUMN input_tokens_minute bigint NOT NULL DEFAULT 0,
	ADD COLUMN output_tokens_minute bigint NOT NULL DEFAULT 0,
	ADD COLUMN next_input_tokens_minute bigint NOT NULL DEFAULT 0,
	ADD COLUMN next_output_tokens_minute bigint NOT NULL DEFAULT 0;
ALTER TABLE rl_lease_state ADD COLUMN output_tokens bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN rl_lease_state.output_tokens IS 'of tokens, the output estimate (otpm); the rest is input';

-- A bucket model's saved usage is what its buckets lacked at this time
ALTER TABLE rl_counter ADD COLUMN refilled_at timestamptz;
COMMENT ON COLUMN rl_counter.refilled_at IS
	'bucket models: the time the saved usage (requests_minute ... tokens_day: what each bucket lacked to be full) is as of; NULL for fixed models';
ALTER TABLE rl_share_counter ADD COLUMN refilled_at timestamptz;
COMMENT ON COLUMN rl_share_counter.refilled_at IS
	'bucket models: the time the saved usage of the job type''s buckets is as of; NULL for fixed models';

------------------------------------------------------------------------------
-- rl_define_model and rl_alter_model take window_type.  A function's
-- arguments cannot change in place: the new ones are created beside the old,
-- take over the grants made on them, and the old ones are dropped.
------------------------------------------------------------------------------

-- Refuse a window type other than fixed and bucket (NULL: allowed)
CREATE FUNCTION ratelimit_internal.rl_internal_check_window_type(window_type text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF window_type IS NOT NULL AND window_type NOT IN ('fixed', 'bucket') THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = format('invalid window_type "%s"', window_type),
			HINT = 'Use ''fixed'' (UTC minutes and days) or ''bucket'' (limits that refill continuously).';
	END IF;
END
$$;

CREATE FUNCTION rl_define_model(model text,
								rpm bigint DEFAULT NULL,
								tpm bigint DEFAULT NULL,
								rpd bigint DEFAULT NULL,
								tpd bigint DEFAULT NULL,
								max_concurrent integer DEFAULT NULL,
								price_input numeric DEFAULT 0,
								price_output numeric DEFAULT 0,
								price_cached numeric DEFAULT 0,
								count_cached boolean DEFAULT true,
								window_type text DEFAULT 'fixed',
								itpm bigint DEFAULT NULL,
								otpm bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM ratelimit_internal.rl_internal_check();
	PERFORM ratelimit_internal.rl_internal_check_name(model, 'model'::text);
	PERFORM ratelimit_internal.rl_internal_check_amount(rpm::numeric, 'rpm'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(tpm::numeric, 'tpm'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(rpd::numeric, 'rpd'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(tpd::numeric, 'tpd'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(itpm::numeric, 'itpm'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(otpm::numeric, 'otpm'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(max_concurrent::numeric, 'max_concurrent'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_input::numeric, 'price_input'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_output::numeric, 'price_output'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_cached::numeric, 'price_cached'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_window_type(window_type);
	-- NaN and Infinity pass the checks above (they sort above every number)
	IF price_input >= 'Infinity' OR price_output >= 'Infinity' OR price_cached >= 'Infinity' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'prices must be finite numbers';
	END IF;

	INSERT INTO ratelimit.rl_model AS m
		(model, rpm, tpm, rpd, tpd, itpm, otpm, max_concurrent,
		 price_input, price_output, price_cached, count_cached, window_type)
	VALUES (model, rpm, tpm, rpd, tpd, itpm, otpm, max_concurrent,
			coalesce(price_input, 0), coalesce(price_output, 0),
			coalesce(price_cached, 0), coalesce(count_cached, true),
			coalesce(window_type, 'fixed'))
	ON CONFLICT ON CONSTRAINT rl_model_pkey DO UPDATE
		SET rpm = excluded.rpm, tpm = excluded.tpm,
			rpd = excluded.rpd, tpd = excluded.tpd,
			itpm = excluded.itpm, otpm = excluded.otpm,
			max_concurrent = excluded.max_concurrent,
			price_input = excluded.price_input,
			price_output = excluded.price_output,
			price_cached = excluded.price_cached,
			count_cached = excluded.count_cached,
			window_type = excluded.window_type,
			updated_at = now();
END
$$;

CREATE FUNCTION rl_alter_model(model text,
							   rpm bigint DEFAULT NULL,
							   tpm bigint DEFAULT NULL,
							   rpd bigint DEFAULT NULL,
							   tpd bigint DEFAULT NULL,
							   max_concurrent integer DEFAULT NULL,
							   price_input numeric DEFAULT NULL,
							   price_output numeric DEFAULT NULL,
							   price_cached numeric DEFAULT NULL,
							   count_cached boolean DEFAULT NULL,
							   clear text[] DEFAULT NULL,
							   window_type text DEFAULT NULL,
							   itpm bigint DEFAULT NULL,
							   otpm bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	given text[];
BEGIN
	PERFORM ratelimit_internal.rl_internal_check();
	PERFORM ratelimit_internal.rl_internal_check_name(model, 'model'::text);
	PERFORM ratelimit_internal.rl_internal_check_amount(rpm::numeric, 'rpm'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(tpm::numeric, 'tpm'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(rpd::numeric, 'rpd'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(tpd::numeric, 'tpd'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(itpm::numeric, 'itpm'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(otpm::numeric, 'otpm'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(max_concurrent::numeric, 'max_concurrent'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_input::numeric, 'price_input'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_output::numeric, 'price_output'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_cached::numeric, 'price_cached'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_window_type(window_type);
	IF price_input >= 'Infinity' OR price_output >= 'Infinity' OR price_cached >= 'Infinity' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'prices must be finite numbers';
	END IF;
	given := array_remove(ARRAY[
		CASE WHEN rpm IS NOT NULL THEN 'rpm' END,
		CASE WHEN tpm IS NOT NULL THEN 'tpm' END,
		CASE WHEN rpd IS NOT NULL THEN 'rpd' END,
		CASE WHEN tpd IS NOT NULL THEN 'tpd' END,
		CASE WHEN itpm IS NOT NULL THEN 'itpm' END,
		CASE WHEN otpm IS NOT NULL THEN 'otpm' END,
		CASE WHEN max_concurrent IS NOT NULL THEN 'max_concurrent' END], NULL);
	PERFORM ratelimit_internal.rl_internal_check_clear(clear,
		'{rpm,tpm,rpd,tpd,itpm,otpm,max_concurrent}'::text[], given);

	UPDATE ratelimit.rl_model AS m
	SET rpm = CASE WHEN 'rpm' = ANY (rl_alter_model.clear) THEN NULL
				   ELSE coalesce(rl_alter_model.rpm, m.rpm) END,
		tpm = CASE WHEN 'tpm' = ANY (rl_alter_model.clear) THEN NULL
				   ELSE coalesce(rl_alter_model.tpm, m.tpm) END,
		rpd = CASE WHEN 'rpd' = ANY (rl_alter_model.clear) THEN NULL
				   ELSE coalesce(rl_alter_model.rpd, m.rpd) END,
		tpd = CASE WHEN 'tpd' = ANY (rl_alter_model.clear) THEN NULL
				   ELSE coalesce(rl_alter_model.tpd, m.tpd) END,
		itpm = CASE WHEN 'itpm' = ANY (rl_alter_model.clear) THEN NULL
				    ELSE coalesce(rl_alter_model.itpm, m.itpm) END,
		otpm = CASE WHEN 'otpm' = ANY (rl_alter_model.clear) THEN NULL
				    ELSE coalesce(rl_alter_model.otpm, m.otpm) END,
		max_concurrent = CASE WHEN 'max_concurrent' = ANY (rl_alter_model.clear) THEN NULL
							  ELSE coalesce(rl_alter_model.max_concurrent, m.max_concurrent) END,
		price_input = coalesce(rl_alter_model.price_input, m.price_input),
		price_output = coalesce(rl_alter_model.price_output, m.price_output),
		price_cached = coalesce(rl_alter_model.price_cached, m.price_cached),
		count_cached = coalesce(rl_alter_model.count_cached, m.count_cached),
		window_type = coalesce(rl_alter_model.window_type, m.window_type),
		updated_at = now()
	WHERE m.model = rl_alter_model.model;
	IF NOT FOUND THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('model "%s" does not exist', model),
			HINT = 'Define it with rl_define_model.';
	END IF;
END
$$;

-- rl_acquire and rl_acquire_any take the output estimate (otpm), and so does
-- rl_capacity, to show how many requests of that size fit
CREATE FUNCTION rl_acquire(model text,
						   job_type text DEFAULT NULL,
						   tokens bigint DEFAULT NULL,
						   requests integer DEFAULT NULL,
						   max_wait interval DEFAULT NULL,
						   instance text DEFAULT NULL,
						   ttl interval DEFAULT NULL,
						   session_bound boolean DEFAULT false,
						   output_tokens bigint DEFAULT NULL)
RETURNS rl_grant
AS 'MODULE_PATHNAME', 'rl_acquire'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION rl_acquire_any(models text[],
							   job_type text DEFAULT NULL,
							   tokens bigint DEFAULT NULL,
							   requests integer DEFAULT NULL,
							   max_wait interval DEFAULT NULL,
							   instance text DEFAULT NULL,
							   ttl interval DEFAULT NULL,
							   session_bound boolean DEFAULT false,
							   output_tokens bigint DEFAULT NULL)
RETURNS rl_grant
AS 'MODULE_PATHNAME', 'rl_acquire_any'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION rl_capacity(model text,
							job_type text DEFAULT NULL,
							tokens bigint DEFAULT NULL,
							requests integer DEFAULT NULL,
							output_tokens bigint DEFAULT NULL)
RETURNS TABLE (dimension text, limit_value bigint, used bigint,
			   remaining bigint, slots bigint, resets_at timestamptz)
AS 'MODULE_PATHNAME', 'rl_capacity'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- As before: the acquiring functions are granted to the application's roles
REVOKE ALL ON FUNCTION
	rl_acquire(text, text, bigint, integer, interval, text, interval, boolean, bigint),
	rl_acquire_any(text[], text, bigint, integer, interval, text, interval, boolean, bigint)
	FROM PUBLIC;

-- As every configuration function: only roles given EXECUTE may call them
REVOKE ALL ON FUNCTION
	rl_define_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text, bigint, bigint),
	rl_alter_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text[], text, bigint, bigint)
	FROM PUBLIC;
REVOKE ALL ON FUNCTION ratelimit_internal.rl_internal_check_window_type(text) FROM PUBLIC;

-- The grants made on the old functions carry over to the new ones.  A grant
-- made in an extension script is recorded as the object's initial privilege,
-- which pg_dump leaves out: the initial privileges are put back to those of
-- a fresh installation, so that the grants carried over are dumped as the
-- administrator's own.
DO $$
DECLARE
	pair record;
	grant_item record;
	initial pg_catalog.aclitem[];
BEGIN
	FOR pair IN
		SELECT o.oid AS old_fn, n.oid AS new_fn, o.proacl AS old_acl, n.proacl AS new_acl
		FROM (VALUES
			  ('rl_define_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean)'::pg_catalog.regprocedure,
			   'rl_define_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text, bigint, bigint)'::pg_catalog.regprocedure),
			  ('rl_alter_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text[])'::pg_catalog.regprocedure,
			   'rl_alter_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text[], text, bigint, bigint)'::pg_catalog.regprocedure),
			  ('rl_acquire(text, text, bigint, integer, interval, text, interval, boolean)'::pg_catalog.regprocedure,
			   'rl_acquire(text, text, bigint, integer, interval, text, interval, boolean, bigint)'::pg_catalog.regprocedure),
			  ('rl_acquire_any(text[], text, bigint, integer, interval, text, interval, boolean)'::pg_catalog.regprocedure,
			   'rl_acquire_any(text[], text, bigint, integer, interval, text, interval, boolean, bigint)'::pg_catalog.regprocedure),
			  ('rl_capacity(text, text, bigint, integer)'::pg_catalog.regprocedure,
			   'rl_capacity(text, text, bigint, integer, bigint)'::pg_catalog.regprocedure))
			 AS f(old_fn, new_fn)
		JOIN pg_catalog.pg_proc o ON o.oid OPERATOR(pg_catalog.=) f.old_fn
		JOIN pg_catalog.pg_proc n ON n.oid OPERATOR(pg_catalog.=) f.new_fn
	LOOP
		initial := pair.new_acl;
		-- a function whose EXECUTE was taken from PUBLIC stays so
		IF pair.old_acl IS NOT NULL AND NOT EXISTS (
			SELECT FROM pg_catalog.aclexplode(pair.old_acl) a
			WHERE a.grantee OPERATOR(pg_catalog.=) 0) THEN
			EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC',
									  pair.new_fn::pg_catalog.regprocedure);
		END IF;
		FOR grant_item IN
			SELECT a.grantee, a.is_grantable
			FROM pg_catalog.aclexplode(pair.old_acl) a
			JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) pair.old_fn
			WHERE a.grantee OPERATOR(pg_catalog.<>) p.proowner
			  AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
		LOOP
			EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s',
									  pair.new_fn::pg_catalog.regprocedure,
									  CASE WHEN grant_item.grantee OPERATOR(pg_catalog.=) 0
										   THEN 'PUBLIC'
										   ELSE grant_item.grantee::pg_catalog.regrole::pg_catalog.text END,
									  CASE WHEN grant_item.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
		END LOOP;
		-- no initial privileges (the defaults): no row, as after CREATE EXTENSION
		IF initial IS NULL THEN
			DELETE FROM pg_catalog.pg_init_privs i
			WHERE i.objoid OPERATOR(pg_catalog.=) pair.new_fn
			  AND i.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
			  AND i.objsubid OPERATOR(pg_catalog.=) 0;
		ELSE
			UPDATE pg_catalog.pg_init_privs i SET initprivs = initial
			WHERE i.objoid OPERATOR(pg_catalog.=) pair.new_fn
			  AND i.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
			  AND i.objsubid OPERATOR(pg_catalog.=) 0;
		END IF;
		EXECUTE pg_catalog.format('DROP FUNCTION %s', pair.old_fn::pg_catalog.regprocedure);
	END LOOP;
END
$$;

COMMENT ON FUNCTION rl_define_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text, bigint, bigint) IS
	'define a model, or redefine all of it: its limits (NULL: not limited; itpm and otpm: input and output tokens per minute), prices per million tokens, whether cached tokens count, and how the limits count (window_type: fixed or bucket); usage is kept';
COMMENT ON FUNCTION rl_alter_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text[], text, bigint, bigint) IS
	'change the settings given of an existing model, leaving the others; clear names limits to remove (rpm, tpm, rpd, tpd, itpm, otpm, max_concurrent)';
COMMENT ON FUNCTION rl_acquire(text, text, bigint, integer, interval, text, interval, boolean, bigint) IS
	'reserve one request and its tokens on a model, all limits at once (output_tokens: the output''s part of tokens, for otpm; the rest is input); waits up to max_wait; returns a lease to release';
COMMENT ON FUNCTION rl_acquire_any(text[], text, bigint, integer, interval, text, interval, boolean, bigint) IS
	'like rl_acquire on the first of several models that admits, in order; waits on all of them';
COMMENT ON FUNCTION rl_capacity(text, text, bigint, integer, bigint) IS
	'per limit of a model: limit, used, remaining and how many more requests of this size fit now; row total: the minimum';
COMMENT ON FUNCTION ratelimit_internal.rl_internal_check_window_type(text) IS
	'pg_ratelimit internal: refuse a window_type other than fixed and bucket';

------------------------------------------------------------------------------
-- Feedback from the provider: rl_observe (src/observe.c,
-- src/ledger_provider.c).  What a response's rate-limit headers said raises
-- the limiter's usage where the provider has less left, puts the model in a
-- cooldown after a 429, and shows in rl_status.
------------------------------------------------------------------------------

CREATE TYPE rl_observation AS (
	understood		integer,
	ignored			integer,
	raised			text[],
	cooldown_until	timestamptz
);
COMMENT ON TYPE rl_observation IS
	'what rl_observe took from a response: headers understood and ignored (malformed), the limits whose usage rose to the provider''s, and the end of the model''s cooldown (NULL: none)';

CREATE FUNCTION rl_observe(model text, headers jsonb, status integer DEFAULT NULL)
RETURNS rl_observation
AS 'MODULE_PATHNAME', 'rl_observe'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rl_observe(text, jsonb, integer) IS
	'report a provider response''s rate-limit headers (OpenAI x-ratelimit-*, Anthropic anthropic-ratelimit-*, retry-after) and status: usage rises where the provider has less left, a 429 pauses the model for every session';
-- as rl_acquire: it moves every session's limits
REVOKE ALL ON FUNCTION rl_observe(text, jsonb, integer) FROM PUBLIC;

-- Refusals while the provider's cooldown lasts, by model
ALTER TABLE rl_counter
	ADD COLUMN denied_provider bigint NOT NULL DEFAULT 0,
	ADD COLUMN denied_itpm bigint NOT NULL DEFAULT 0,
	ADD COLUMN denied_otpm bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN rl_counter.denied_provider IS
	'refused calls whose limited_by on this model was provider: a 429 reported with rl_observe (rl_stats)';
COMMENT ON COLUMN rl_counter.denied_itpm IS 'refused calls whose limited_by was itpm (rl_stats)';
COMMENT ON COLUMN rl_counter.denied_otpm IS 'refused calls whose limited_by was otpm (rl_stats)';

-- rl_stats gets, at its end, the refusals of the limits 1.2 brought.  The
-- views of this script keep their columns and add new ones at the end, from
-- a function of their own: CREATE OR REPLACE VIEW keeps the grants made on
-- them and the views built on them.
CREATE FUNCTION ratelimit_internal.rl_stats_extra_internal(
	OUT model text, OUT denied_itpm bigint, OUT denied_otpm bigint, OUT denied_provider bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rl_stats_extra_internal'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION ratelimit_internal.rl_stats_extra_internal() IS
	'pg_ratelimit internal: the refusals by itpm, otpm and the provider''s pause of each model, the last columns of rl_stats';
CREATE OR REPLACE VIEW rl_stats AS
	SELECT s.*, e.denied_itpm, e.denied_otpm, e.denied_provider
	FROM ratelimit_internal.rl_stats_internal() s
	LEFT JOIN ratelimit_internal.rl_stats_extra_internal() e
		ON e.model OPERATOR(pg_catalog.=) s.model
	ORDER BY s.model;

-- rl_status gets, at its end, how the model counts, its input and output
-- token limits and their usage, and what the provider said (columns are
-- added at the end, so views over it keep working)
CREATE FUNCTION ratelimit_internal.rl_status_extra_internal(
	OUT model text, OUT window_type text,
	OUT itpm bigint, OUT otpm bigint,
	OUT input_tokens_minute bigint, OUT output_tokens_minute bigint,
	OUT provider_rpm bigint, OUT provider_tpm bigint,
	OUT provider_itpm bigint, OUT provider_otpm bigint,
	OUT provider_remaining_requests bigint, OUT provider_remaining_tokens bigint,
	OUT provider_limits_differ boolean, OUT provider_cooldown_until timestamptz,
	OUT provider_observed_at timestamptz, OUT provider_headers_ignored bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rl_status_extra_internal'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION ratelimit_internal.rl_status_extra_internal() IS
	'pg_ratelimit internal: the window type, input and output token limits and the provider''s last report of each model, the last columns of rl_status';

CREATE OR REPLACE VIEW rl_status AS
	SELECT s.*, p.window_type, p.itpm, p.otpm, p.input_tokens_minute, p.output_tokens_minute,
		   p.provider_rpm, p.provider_tpm, p.provider_itpm, p.provider_otpm,
		   p.provider_remaining_requests, p.provider_remaining_tokens, p.provider_limits_differ,
		   p.provider_cooldown_until, p.provider_observed_at, p.provider_headers_ignored
	FROM ratelimit_internal.rl_status_internal() s
	LEFT JOIN ratelimit_internal.rl_status_extra_internal() p ON p.model OPERATOR(pg_catalog.=) s.model
	ORDER BY s.model;

-- rl_job_status gets, at its end, each job type's share of itpm and otpm and
-- its usage of them
CREATE FUNCTION ratelimit_internal.rl_job_status_extra_internal(
	OUT model text, OUT job_type text,
	OUT itpm_share bigint, OUT input_tokens_minute bigint,
	OUT otpm_share bigint, OUT output_tokens_minute bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rl_job_status_extra_internal'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION ratelimit_internal.rl_job_status_extra_internal() IS
	'pg_ratelimit internal: each job type''s share of itpm and otpm on each model, the last columns of rl_job_status';
CREATE OR REPLACE VIEW rl_job_status AS
	SELECT s.*, e.itpm_share, e.input_tokens_minute, e.otpm_share, e.output_tokens_minute
	FROM ratelimit_internal.rl_job_status_internal() s
	LEFT JOIN ratelimit_internal.rl_job_status_extra_internal() e
		ON e.model OPERATOR(pg_catalog.=) s.model AND e.job_type OPERATOR(pg_catalog.=) s.job_type
	ORDER BY s.model, s.job_type;
