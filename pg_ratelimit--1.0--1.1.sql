/* pg_ratelimit--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_ratelimit UPDATE TO '1.1'" to load this file. \quit

------------------------------------------------------------------------------
-- Version 1.1: the extension moves into its own schemas.
--
--   ratelimit            every user-facing object: tables, views, types and
--                        the functions applications and administrators call.
--                        Not an extension member, so that pg_dump writes
--                        CREATE SCHEMA ratelimit ahead of
--                        CREATE EXTENSION pg_ratelimit WITH SCHEMA ratelimit.
--   ratelimit_internal   the helpers behind them (functions named
--                        rl_internal_* or *_internal, and rl_config_trigger);
--                        an extension member, no USAGE for PUBLIC.
--
-- There is no pg_ratelimit--1.1.sql: CREATE EXTENSION runs
-- pg_ratelimit--1.0.sql (unchanged, as released) and then this script, so a
-- fresh 1.1 and an updated 1.0 are the same by construction, and every
-- release after this one ships only an upgrade script (README, "Upgrading";
-- tests/t/025_upgrade.pl checks both ways give the same objects).
--
-- This script runs with the extension's objects wherever it was created (a
-- 1.0 installation lives in public, or in the schema it was created in; a
-- restored dump creates it in ratelimit directly).  Sections create their
-- objects unqualified, in that schema, and name them so in bodies that are
-- bound at creation (views, SQL-standard bodies); the last section moves
-- every member to its 1.1 schema, and must stay last.  PL/pgSQL bodies are
-- text: they name ratelimit.* and ratelimit_internal.* explicitly.
--
-- Run as a superuser (the extension is superuser-only), possibly in a
-- database whose owner may create objects in public: the catalog work below
-- calls pg_catalog functions and operators by their qualified names.
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Schema layout: the schemas (see the last section for the move)
------------------------------------------------------------------------------

-- Lock the tables the background worker reads and writes before anything
-- below does: a worker round in progress (it holds rl_model from its start,
-- src/config.c) finishes first, and the next one waits for our commit and
-- then finds the tables where this script put them.
LOCK TABLE rl_model, rl_job_type, rl_job_type_wait, rl_counter, rl_share_counter,
	rl_lease_state, rl_usage_daily, rl_mark, rl_instance_state, rl_saved_clock
	IN ACCESS EXCLUSIVE MODE;

-- A schema ratelimit that is already there (made by a restored dump, or
-- by the administrator for CREATE EXTENSION ... SCHEMA ratelimit) is used
-- only if nobody but superusers can have put anything in it: a superuser
-- owns it, only superusers may CREATE in it, and everything in it belongs to
-- superusers.  Otherwise another role could drop or replace what the
-- extension is about to move there, or shadow what sessions call.
DO $$
DECLARE
	schema_oid pg_catalog.oid;
	culprit pg_catalog.text;
BEGIN
	SELECT n.oid INTO schema_oid FROM pg_catalog.pg_namespace n
	 WHERE n.nspname OPERATOR(pg_catalog.=) 'ratelimit'::pg_catalog.name;
	IF FOUND THEN
		SELECT pg_catalog.format('it is owned by role "%s"', r.rolname) INTO culprit
		  FROM pg_catalog.pg_namespace n
		  JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
		 WHERE n.oid OPERATOR(pg_catalog.=) schema_oid AND NOT r.rolsuper;
		IF culprit IS NULL THEN
			SELECT pg_catalog.format('role "%s" may create objects in it',
									 coalesce(r.rolname, 'PUBLIC')) INTO culprit
			  FROM pg_catalog.pg_namespace n,
				   pg_catalog.aclexplode(n.nspacl) a
			  LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) a.grantee
			 WHERE n.oid OPERATOR(pg_catalog.=) schema_oid
			   AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
			   AND NOT coalesce(r.rolsuper, false)
			 LIMIT 1;
		END IF;
		IF culprit IS NULL THEN
			SELECT pg_catalog.format('role "%s" owns objects in it', r.rolname) INTO culprit
			  FROM (SELECT c.relowner AS owner FROM pg_catalog.pg_class c
					 WHERE c.relnamespace OPERATOR(pg_catalog.=) schema_oid
					UNION ALL
					SELECT p.proowner FROM pg_catalog.pg_proc p
					 WHERE p.pronamespace OPERATOR(pg_catalog.=) schema_oid
					UNION ALL
					SELECT t.typowner FROM pg_catalog.pg_type t
					 WHERE t.typnamespace OPERATOR(pg_catalog.=) schema_oid
					UNION ALL
					SELECT o.oprowner FROM pg_catalog.pg_operator o
					 WHERE o.oprnamespace OPERATOR(pg_catalog.=) schema_oid) x
			  JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) x.owner
			 WHERE NOT r.rolsuper
			 LIMIT 1;
		END IF;
		IF culprit IS NOT NULL THEN
			RAISE EXCEPTION 'schema "ratelimit" is not safe for pg_ratelimit: %, which is not a superuser', culprit
				USING ERRCODE = 'insufficient_privilege',
					  HINT = 'pg_ratelimit keeps its objects in the schema ratelimit, where only superusers may create. Rename or drop that schema (ALTER SCHEMA ratelimit RENAME TO ...), and try again.';
		END IF;
	ELSE
		CREATE SCHEMA ratelimit;
		-- what 1.0 gave by living in public: object privileges decide
		GRANT USAGE ON SCHEMA ratelimit TO PUBLIC;
		COMMENT ON SCHEMA ratelimit IS 'pg_ratelimit: rate limits for LLM API keys (models, job types, leases, usage)';
		-- Not a member (see the top); dropping it last also forgets the
		-- initial privileges recorded for it, so pg_dump dumps its grant.
		ALTER EXTENSION pg_ratelimit DROP SCHEMA ratelimit;
	END IF;
END
$$;

CREATE SCHEMA ratelimit_internal;
REVOKE ALL ON SCHEMA ratelimit_internal FROM PUBLIC;
COMMENT ON SCHEMA ratelimit_internal IS 'pg_ratelimit internal helpers: not to be called directly';

------------------------------------------------------------------------------
-- Schema layout: the configuration functions call the helpers in
-- ratelimit_internal and the tables in ratelimit (their 1.0 bodies named
-- the schema the extension was created in).  Unchanged otherwise.
------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION rl_define_model(model text,
										   rpm bigint DEFAULT NULL,
										   tpm bigint DEFAULT NULL,
										   rpd bigint DEFAULT NULL,
										   tpd bigint DEFAULT NULL,
										   max_concurrent integer DEFAULT NULL,
										   price_input numeric DEFAULT 0,
										   price_output numeric DEFAULT 0,
										   price_cached numeric DEFAULT 0,
										   count_cached boolean DEFAULT true)
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
	PERFORM ratelimit_internal.rl_internal_check_amount(max_concurrent::numeric, 'max_concurrent'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_input::numeric, 'price_input'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_output::numeric, 'price_output'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_cached::numeric, 'price_cached'::text, false);
	-- NaN and Infinity pass the checks above (they sort above every number)
	IF price_input >= 'Infinity' OR price_output >= 'Infinity' OR price_cached >= 'Infinity' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'prices must be finite numbers';
	END IF;

	INSERT INTO ratelimit.rl_model AS m
		(model, rpm, tpm, rpd, tpd, max_concurrent,
		 price_input, price_output, price_cached, count_cached)
	VALUES (model, rpm, tpm, rpd, tpd, max_concurrent,
			coalesce(price_input, 0), coalesce(price_output, 0),
			coalesce(price_cached, 0), coalesce(count_cached, true))
	ON CONFLICT ON CONSTRAINT rl_model_pkey DO UPDATE
		SET rpm = excluded.rpm, tpm = excluded.tpm,
			rpd = excluded.rpd, tpd = excluded.tpd,
			max_concurrent = excluded.max_concurrent,
			price_input = excluded.price_input,
			price_output = excluded.price_output,
			price_cached = excluded.price_cached,
			count_cached = excluded.count_cached,
			updated_at = now();
END
$$;

CREATE OR REPLACE FUNCTION rl_drop_model(model text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM ratelimit_internal.rl_internal_check();
	PERFORM ratelimit_internal.rl_internal_check_name(model, 'model'::text);
	DELETE FROM ratelimit.rl_model m WHERE m.model = rl_drop_model.model;
	IF NOT FOUND THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('model "%s" does not exist', model);
	END IF;
END
$$;

CREATE OR REPLACE FUNCTION rl_define_job_type(job_type text,
											  est_tokens bigint DEFAULT 0,
											  est_requests integer DEFAULT 1,
											  est_memory_kb bigint DEFAULT 0,
											  ratio float8 DEFAULT NULL,
											  flexible boolean DEFAULT true,
											  max_wait interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ratio_sum float8;
BEGIN
	PERFORM ratelimit_internal.rl_internal_check();
	PERFORM ratelimit_internal.rl_internal_check_name(job_type, 'job type'::text);
	PERFORM ratelimit_internal.rl_internal_check_amount(est_tokens::numeric, 'est_tokens'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(est_requests::numeric, 'est_requests'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(est_memory_kb::numeric, 'est_memory_kb'::text, false);
	IF ratio IS NOT NULL AND NOT (ratio >= 0 AND ratio <= 1) THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'ratio must be between 0 and 1';
	END IF;
	IF max_wait < '0' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'max_wait must not be negative';
	END IF;

	INSERT INTO ratelimit.rl_job_type AS j
		(job_type, est_tokens, est_requests, est_memory_kb, ratio, flexible, max_wait)
	VALUES (job_type, coalesce(est_tokens, 0), coalesce(est_requests, 1),
			coalesce(est_memory_kb, 0), ratio, coalesce(flexible, true), max_wait)
	ON CONFLICT ON CONSTRAINT rl_job_type_pkey DO UPDATE
		SET est_tokens = excluded.est_tokens,
			est_requests = excluded.est_requests,
			est_memory_kb = excluded.est_memory_kb,
			ratio = excluded.ratio,
			flexible = excluded.flexible,
			max_wait = excluded.max_wait,
			updated_at = now();

	SELECT sum(j.ratio) INTO ratio_sum FROM ratelimit.rl_job_type j;
	IF ratio_sum > 1 + 1e-9 THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = format('job type ratios would sum to %s, more than 1', round(ratio_sum::numeric, 6)),
			HINT = 'Lower the ratio of this or another job type.';
	END IF;
END
$$;

CREATE OR REPLACE FUNCTION rl_set_max_wait(job_type text, model text, max_wait interval)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM ratelimit_internal.rl_internal_check();
	PERFORM ratelimit_internal.rl_internal_check_name(job_type, 'job type'::text);
	PERFORM ratelimit_internal.rl_internal_check_name(model, 'model'::text);
	IF NOT EXISTS (SELECT FROM ratelimit.rl_job_type j WHERE j.job_type = rl_set_max_wait.job_type) THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('job type "%s" does not exist', job_type);
	END IF;
	IF NOT EXISTS (SELECT FROM ratelimit.rl_model m WHERE m.model = rl_set_max_wait.model) THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('model "%s" does not exist', model);
	END IF;
	IF max_wait < '0' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'max_wait must not be negative';
	END IF;

	IF max_wait IS NULL THEN
		DELETE FROM ratelimit.rl_job_type_wait w
		WHERE w.job_type = rl_set_max_wait.job_type AND w.model = rl_set_max_wait.model;
	ELSE
		INSERT INTO ratelimit.rl_job_type_wait AS w (job_type, model, max_wait)
		VALUES (job_type, model, max_wait)
		ON CONFLICT ON CONSTRAINT rl_job_type_wait_pkey DO UPDATE
			SET max_wait = excluded.max_wait;
	END IF;
END
$$;

CREATE OR REPLACE FUNCTION rl_drop_job_type(job_type text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM ratelimit_internal.rl_internal_check();
	PERFORM ratelimit_internal.rl_internal_check_name(job_type, 'job type'::text);
	DELETE FROM ratelimit.rl_job_type j WHERE j.job_type = rl_drop_job_type.job_type;
	IF NOT FOUND THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('job type "%s" does not exist', job_type);
	END IF;
END
$$;

-- Only the configuration functions (running as the extension's owner) call
-- these; the views' *_internal functions keep EXECUTE for PUBLIC, since a
-- view calls its functions with the rights of the role that reads it.
REVOKE ALL ON FUNCTION
	rl_internal_check(),
	rl_internal_check_name(text, text),
	rl_internal_check_amount(numeric, text, boolean)
FROM PUBLIC;

------------------------------------------------------------------------------
-- Changing some settings of a model or job type: rl_alter_model and
-- rl_alter_job_type.  rl_define_* state a whole definition (every setting
-- not given takes its default); rl_alter_* change only the settings given
-- and leave the others as they are.  NULL means "leave it", so a limit (or
-- ratio, or default wait) is removed by naming it in clear.
------------------------------------------------------------------------------

-- Refuse a clear list with a NULL or unknown name, or a name also given a value
CREATE FUNCTION rl_internal_check_clear(clear text[], clearable text[], given text[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	setting text;
BEGIN
	IF array_position(clear, NULL) IS NOT NULL THEN
		RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
			MESSAGE = 'clear must not contain null';
	END IF;
	FOREACH setting IN ARRAY coalesce(clear, '{}'::text[]) LOOP
		IF NOT setting = ANY (clearable) THEN
			RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
				MESSAGE = format('cannot clear "%s"', setting),
				DETAIL = format('Only %s can be cleared.', array_to_string(clearable, ', ')),
				HINT = 'Give other settings a new value instead.';
		END IF;
		IF setting = ANY (given) THEN
			RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
				MESSAGE = format('"%s" is both given a value and cleared', setting);
		END IF;
	END LOOP;
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
							   clear text[] DEFAULT NULL)
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
	PERFORM ratelimit_internal.rl_internal_check_amount(max_concurrent::numeric, 'max_concurrent'::text, true);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_input::numeric, 'price_input'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_output::numeric, 'price_output'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(price_cached::numeric, 'price_cached'::text, false);
	IF price_input >= 'Infinity' OR price_output >= 'Infinity' OR price_cached >= 'Infinity' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'prices must be finite numbers';
	END IF;
	given := array_remove(ARRAY[
		CASE WHEN rpm IS NOT NULL THEN 'rpm' END,
		CASE WHEN tpm IS NOT NULL THEN 'tpm' END,
		CASE WHEN rpd IS NOT NULL THEN 'rpd' END,
		CASE WHEN tpd IS NOT NULL THEN 'tpd' END,
		CASE WHEN max_concurrent IS NOT NULL THEN 'max_concurrent' END], NULL);
	PERFORM ratelimit_internal.rl_internal_check_clear(clear,
		'{rpm,tpm,rpd,tpd,max_concurrent}'::text[], given);

	UPDATE ratelimit.rl_model AS m
	SET rpm = CASE WHEN 'rpm' = ANY (rl_alter_model.clear) THEN NULL
				   ELSE coalesce(rl_alter_model.rpm, m.rpm) END,
		tpm = CASE WHEN 'tpm' = ANY (rl_alter_model.clear) THEN NULL
				   ELSE coalesce(rl_alter_model.tpm, m.tpm) END,
		rpd = CASE WHEN 'rpd' = ANY (rl_alter_model.clear) THEN NULL
				   ELSE coalesce(rl_alter_model.rpd, m.rpd) END,
		tpd = CASE WHEN 'tpd' = ANY (rl_alter_model.clear) THEN NULL
				   ELSE coalesce(rl_alter_model.tpd, m.tpd) END,
		max_concurrent = CASE WHEN 'max_concurrent' = ANY (rl_alter_model.clear) THEN NULL
							  ELSE coalesce(rl_alter_model.max_concurrent, m.max_concurrent) END,
		price_input = coalesce(rl_alter_model.price_input, m.price_input),
		price_output = coalesce(rl_alter_model.price_output, m.price_output),
		price_cached = coalesce(rl_alter_model.price_cached, m.price_cached),
		count_cached = coalesce(rl_alter_model.count_cached, m.count_cached),
		updated_at = now()
	WHERE m.model = rl_alter_model.model;
	IF NOT FOUND THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('model "%s" does not exist', model),
			HINT = 'Define it with rl_define_model.';
	END IF;
END
$$;

CREATE FUNCTION rl_alter_job_type(job_type text,
								  est_tokens bigint DEFAULT NULL,
								  est_requests integer DEFAULT NULL,
								  est_memory_kb bigint DEFAULT NULL,
								  ratio float8 DEFAULT NULL,
								  flexible boolean DEFAULT NULL,
								  max_wait interval DEFAULT NULL,
								  clear text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	given text[];
	ratio_sum float8;
BEGIN
	PERFORM ratelimit_internal.rl_internal_check();
	PERFORM ratelimit_internal.rl_internal_check_name(job_type, 'job type'::text);
	PERFORM ratelimit_internal.rl_internal_check_amount(est_tokens::numeric, 'est_tokens'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(est_requests::numeric, 'est_requests'::text, false);
	PERFORM ratelimit_internal.rl_internal_check_amount(est_memory_kb::numeric, 'est_memory_kb'::text, false);
	IF ratio IS NOT NULL AND NOT (ratio >= 0 AND ratio <= 1) THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'ratio must be between 0 and 1';
	END IF;
	IF max_wait < '0' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'max_wait must not be negative';
	END IF;
	given := array_remove(ARRAY[
		CASE WHEN ratio IS NOT NULL THEN 'ratio' END,
		CASE WHEN max_wait IS NOT NULL THEN 'max_wait' END], NULL);
	PERFORM ratelimit_internal.rl_internal_check_clear(clear, '{ratio,max_wait}'::text[], given);

	UPDATE ratelimit.rl_job_type AS j
	SET est_tokens = coalesce(rl_alter_job_type.est_tokens, j.est_tokens),
		est_requests = coalesce(rl_alter_job_type.est_requests, j.est_requests),
		est_memory_kb = coalesce(rl_alter_job_type.est_memory_kb, j.est_memory_kb),
		ratio = CASE WHEN 'ratio' = ANY (rl_alter_job_type.clear) THEN NULL
					 ELSE coalesce(rl_alter_job_type.ratio, j.ratio) END,
		flexible = coalesce(rl_alter_job_type.flexible, j.flexible),
		max_wait = CASE WHEN 'max_wait' = ANY (rl_alter_job_type.clear) THEN NULL
						ELSE coalesce(rl_alter_job_type.max_wait, j.max_wait) END,
		updated_at = now()
	WHERE j.job_type = rl_alter_job_type.job_type;
	IF NOT FOUND THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('job type "%s" does not exist', job_type),
			HINT = 'Define it with rl_define_job_type.';
	END IF;

	SELECT sum(j.ratio) INTO ratio_sum FROM ratelimit.rl_job_type j;
	IF ratio_sum > 1 + 1e-9 THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = format('job type ratios would sum to %s, more than 1', round(ratio_sum::numeric, 6)),
			HINT = 'Lower the ratio of this or another job type.';
	END IF;
END
$$;

REVOKE ALL ON FUNCTION
	rl_alter_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text[]),
	rl_alter_job_type(text, bigint, integer, bigint, float8, boolean, interval, text[]),
	rl_internal_check_clear(text[], text[], text[])
FROM PUBLIC;

------------------------------------------------------------------------------
-- Schema layout: the daily usage history is dumped with the configuration
-- (pg_dump writes its rows; a restore keeps the history)
------------------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('rl_usage_daily', '');

------------------------------------------------------------------------------
-- Reference comments: \df+ ratelimit.* and \dx+ pg_ratelimit read like a
-- reference
------------------------------------------------------------------------------

COMMENT ON FUNCTION rl_define_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean) IS
	'define a model, or redefine all of it: its limits (NULL: not limited), prices per million tokens and whether cached tokens count; usage is kept';
COMMENT ON FUNCTION rl_alter_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text[]) IS
	'change the settings given of an existing model, leaving the others; clear names limits to remove (rpm, tpm, rpd, tpd, max_concurrent)';
COMMENT ON FUNCTION rl_drop_model(text) IS
	'drop a model: its counters and open leases go (their releases return released = false)';
COMMENT ON FUNCTION rl_define_job_type(text, bigint, integer, bigint, float8, boolean, interval) IS
	'define a job type, or redefine all of it: estimates per request, share of every model (ratio), flexible ratio, default max_wait';
COMMENT ON FUNCTION rl_alter_job_type(text, bigint, integer, bigint, float8, boolean, interval, text[]) IS
	'change the settings given of an existing job type, leaving the others; clear names settings to remove (ratio, max_wait)';
COMMENT ON FUNCTION rl_set_max_wait(text, text, interval) IS
	'the max_wait of a job type on one model (NULL: back to the job type''s default)';
COMMENT ON FUNCTION rl_drop_job_type(text) IS
	'drop a job type and its per-model waits';
COMMENT ON FUNCTION rl_acquire(text, text, bigint, integer, interval, text, interval, boolean) IS
	'reserve one request and its tokens on a model, all limits at once; waits up to max_wait; returns a lease to release';
COMMENT ON FUNCTION rl_acquire_any(text[], text, bigint, integer, interval, text, interval, boolean) IS
	'like rl_acquire on the first of several models that admits, in order; waits on all of them';
COMMENT ON FUNCTION rl_release(bigint, bigint, bigint, bigint, integer) IS
	'settle a lease with the actual usage (refund or overage, cost); without usage the estimate stays reserved; safe to retry';
COMMENT ON FUNCTION rl_capacity(text, text, bigint, integer) IS
	'per limit of a model: limit, used, remaining and how many more requests of this size fit now; row total: the minimum';
COMMENT ON FUNCTION rl_debug_set_clock(timestamptz) IS
	'tests only (ratelimit.enable_test_clock): set the limiter''s clock for the whole server; NULL returns to real time';
COMMENT ON FUNCTION rl_clock() IS
	'the limiter''s clock: now, or the test clock when one is set';

COMMENT ON TYPE rl_grant IS 'result of rl_acquire: granted, the lease to release, or the limit that refused and when to retry';
COMMENT ON COLUMN rl_grant.granted IS 'true when admitted';
COMMENT ON COLUMN rl_grant.lease_id IS 'the lease to pass to rl_release (NULL when refused)';
COMMENT ON COLUMN rl_grant.model IS 'the model admitted (rl_acquire_any), or refused on';
COMMENT ON COLUMN rl_grant.retry_after IS 'when refused: time until the blocking window resets (NULL: only releases free it)';
COMMENT ON COLUMN rl_grant.limited_by IS 'when refused: rpd, tpd, rpm, tpm, concurrency, job_type or memory';
COMMENT ON TYPE rl_settlement IS 'result of rl_release: what the lease reserved, what was used, refund, overage and cost';
COMMENT ON COLUMN rl_settlement.released IS 'false for an unknown, expired or already released lease (nothing changed)';
COMMENT ON COLUMN rl_settlement.model IS 'the lease''s model';
COMMENT ON COLUMN rl_settlement.tokens_estimated IS 'tokens the lease reserved';
COMMENT ON COLUMN rl_settlement.tokens_actual IS 'tokens used: input + output (+ cached when the model counts them)';
COMMENT ON COLUMN rl_settlement.tokens_refunded IS 'tokens given back to the windows still current';
COMMENT ON COLUMN rl_settlement.overage IS 'tokens used beyond the estimate';
COMMENT ON COLUMN rl_settlement.cost IS 'cost of the request at the model''s prices';

COMMENT ON FUNCTION rl_config_trigger() IS
	'internal: hands committed changes of the configuration tables to shared memory';
COMMENT ON FUNCTION rl_internal_check() IS
	'internal: fails unless the library is preloaded';
COMMENT ON FUNCTION rl_internal_resync() IS
	'internal: at commit, make shared memory equal to the (new) tables';
COMMENT ON FUNCTION rl_internal_check_name(text, text) IS
	'internal: refuses a null, empty or too long name';
COMMENT ON FUNCTION rl_internal_check_amount(numeric, text, boolean) IS
	'internal: refuses a negative (or, when positive is true, zero) amount';
COMMENT ON FUNCTION rl_internal_check_clear(text[], text[], text[]) IS
	'internal: refuses a clear list of rl_alter_* with an unknown, null or also given setting';
COMMENT ON FUNCTION rl_status_internal() IS 'internal: the rows of the view rl_status';
COMMENT ON FUNCTION rl_leases_internal() IS 'internal: the rows of the view rl_leases';
COMMENT ON FUNCTION rl_job_status_internal() IS 'internal: the rows of the view rl_job_status';
COMMENT ON FUNCTION rl_instances_internal() IS 'internal: the rows of the view rl_instances';
COMMENT ON FUNCTION rl_allocation_internal(text) IS 'internal: the rows of rl_allocation';

------------------------------------------------------------------------------
-- Statistics for monitoring: rl_stats, counters that never reset.
--
-- Per model: denials by the limit that refused them, how waits ended and how
-- long they took, and running totals of usage and cost, kept in shared memory
-- and saved by the worker in rl_counter with the model's other counters (the
-- library writes these columns only once this script has run).
------------------------------------------------------------------------------

ALTER TABLE @extschema@.rl_counter
	ADD COLUMN denied_rpm			bigint NOT NULL DEFAULT 0,
	ADD COLUMN denied_tpm			bigint NOT NULL DEFAULT 0,
	ADD COLUMN denied_rpd			bigint NOT NULL DEFAULT 0,
	ADD COLUMN denied_tpd			bigint NOT NULL DEFAULT 0,
	ADD COLUMN denied_concurrency	bigint NOT NULL DEFAULT 0,
	ADD COLUMN denied_job_type		bigint NOT NULL DEFAULT 0,
	ADD COLUMN denied_memory		bigint NOT NULL DEFAULT 0,
	ADD COLUMN waits_granted		bigint NOT NULL DEFAULT 0,
	ADD COLUMN waits_timed_out		bigint NOT NULL DEFAULT 0,
	ADD COLUMN waits_cancelled		bigint NOT NULL DEFAULT 0,
	ADD COLUMN wait_us_granted		bigint NOT NULL DEFAULT 0,
	ADD COLUMN wait_us_timed_out	bigint NOT NULL DEFAULT 0,
	ADD COLUMN wait_us_cancelled	bigint NOT NULL DEFAULT 0,
	ADD COLUMN requests_total		bigint NOT NULL DEFAULT 0,
	ADD COLUMN input_tokens_total	bigint NOT NULL DEFAULT 0,
	ADD COLUMN output_tokens_total	bigint NOT NULL DEFAULT 0,
	ADD COLUMN cached_tokens_total	bigint NOT NULL DEFAULT 0,
	ADD COLUMN cost_total			numeric NOT NULL DEFAULT 0,
	ADD COLUMN stats_since			timestamptz;	-- NULL: saved before 1.1

COMMENT ON COLUMN @extschema@.rl_counter.denied_rpm IS 'refused calls whose limited_by on this model was rpm (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.denied_tpm IS 'refused calls whose limited_by on this model was tpm (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.denied_rpd IS 'refused calls whose limited_by on this model was rpd (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.denied_tpd IS 'refused calls whose limited_by on this model was tpd (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.denied_concurrency IS 'refused calls whose limited_by on this model was concurrency (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.denied_job_type IS 'refused calls whose limited_by on this model was job_type (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.denied_memory IS 'refused calls whose limited_by on this model was memory (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.waits_granted IS 'calls this model granted after they waited (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.waits_timed_out IS 'calls refused by this model while they waited whose max_wait passed (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.waits_cancelled IS 'calls refused by this model while they waited that an error ended: cancel, statement_timeout, session end (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.wait_us_granted IS 'microseconds waited by the calls of waits_granted (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.wait_us_timed_out IS 'microseconds waited by the calls of waits_timed_out (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.wait_us_cancelled IS 'microseconds waited by the calls of waits_cancelled (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.requests_total IS 'requests admitted since the model was defined (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.input_tokens_total IS 'input tokens reported by releases since the model was defined (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.output_tokens_total IS 'output tokens reported by releases since the model was defined (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.cached_tokens_total IS 'cached tokens reported by releases since the model was defined (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.cost_total IS 'cost of releases since the model was defined (rl_stats)';
COMMENT ON COLUMN @extschema@.rl_counter.stats_since IS 'when the model was defined, from when the rl_stats counters count; NULL in a row saved before 1.1';

CREATE FUNCTION @extschema@.rl_stats_internal(
	OUT model text, OUT granted bigint, OUT denied bigint,
	OUT denied_rpm bigint, OUT denied_tpm bigint, OUT denied_rpd bigint,
	OUT denied_tpd bigint, OUT denied_concurrency bigint,
	OUT denied_job_type bigint, OUT denied_memory bigint,
	OUT waits_granted bigint, OUT waits_timed_out bigint, OUT waits_cancelled bigint,
	OUT wait_seconds_granted float8, OUT wait_seconds_timed_out float8,
	OUT wait_seconds_cancelled float8,
	OUT requests_total bigint, OUT input_tokens_total bigint,
	OUT output_tokens_total bigint, OUT cached_tokens_total bigint,
	OUT cost_total numeric,
	OUT expired bigint, OUT overage_events bigint, OUT overage_tokens bigint,
	OUT since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rl_stats_internal'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.rl_stats_internal() IS 'pg_ratelimit internal: the rows of the rl_stats view';

CREATE VIEW @extschema@.rl_stats AS
	SELECT * FROM @extschema@.rl_stats_internal() ORDER BY model;
COMMENT ON VIEW @extschema@.rl_stats IS 'pg_ratelimit counters per model that never reset, for monitoring: denials by limit, wait outcomes, running totals of usage and cost';

GRANT SELECT ON @extschema@.rl_stats TO PUBLIC;

------------------------------------------------------------------------------
-- The background worker's health: the rl_worker view (src/views.c,
-- src/workerstate.c).  Server-wide: it answers in any database the
-- extension is created in, even while ratelimit.database does not exist.
------------------------------------------------------------------------------

CREATE FUNCTION rl_worker_internal(
	OUT launcher_pid integer, OUT worker_pid integer, OUT state text,
	OUT healthy boolean, OUT database text, OUT started_at timestamptz,
	OUT restarts bigint, OUT rounds bigint, OUT last_round_at timestamptz,
	OUT persist_rounds bigint, OUT last_persist_at timestamptz,
	OUT last_persist_ms float8, OUT last_persist_rows bigint, OUT rows_written bigint,
	OUT notifications_sent bigint, OUT waiters_woken bigint,
	OUT last_error text, OUT last_error_at timestamptz,
	OUT next_attempt_at timestamptz, OUT stats_since timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'rl_worker_internal'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION rl_worker_internal() IS 'pg_ratelimit internal: the row of the rl_worker view';

CREATE VIEW rl_worker AS
	SELECT * FROM @extschema@.rl_worker_internal();
COMMENT ON VIEW rl_worker IS 'pg_ratelimit background worker and its launcher: pids, state, health, restarts, persist rounds, last error, notifications sent and waiters woken (counters since the server started)';
GRANT SELECT ON rl_worker TO PUBLIC;

------------------------------------------------------------------------------
-- Schema layout: move every member to its 1.1 schema.  MUST STAY LAST: the
-- sections above create their objects where the extension was.
--
-- Functions named rl_internal_* or *_internal, and the trigger function,
-- go to ratelimit_internal; every other table, view, type and function to
-- ratelimit.  ALTER ... SET SCHEMA keeps each object's OID, so views,
-- triggers, SQL-standard bodies, grants, comments and the extension's
-- membership follow.  Then the extension itself is recorded in ratelimit
-- (pg_extension.extnamespace, which the C code reads to find its tables,
-- and its dependency on its schema): ALTER EXTENSION SET SCHEMA is for
-- relocatable extensions only, and this one moves once, as a superuser.
------------------------------------------------------------------------------

DO $$
DECLARE
	ext oid;
	old_schema oid;
	target oid := 'ratelimit'::pg_catalog.regnamespace;
	internal oid := 'ratelimit_internal'::pg_catalog.regnamespace;
	member record;
	kind text;
	dest oid;
	cur_schema oid;
BEGIN
	SELECT e.oid, e.extnamespace INTO ext, old_schema
	FROM pg_catalog.pg_extension e
	WHERE e.extname OPERATOR(pg_catalog.=) 'pg_ratelimit'::pg_catalog.name;

	FOR member IN
		SELECT d.classid, d.objid
		FROM pg_catalog.pg_depend d
		WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
		  AND d.refobjid OPERATOR(pg_catalog.=) ext
		  AND d.deptype OPERATOR(pg_catalog.=) 'e'::"char"
		ORDER BY d.classid, d.objid
	LOOP
		IF member.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass THEN
			SELECT CASE WHEN p.proname OPERATOR(pg_catalog.~~) 'rl\_internal\_%'
						  OR p.proname OPERATOR(pg_catalog.~~) '%\_internal'
						  OR p.proname OPERATOR(pg_catalog.=) 'rl_config_trigger'::pg_catalog.name
						THEN internal ELSE target END,
				   p.pronamespace
			INTO dest, cur_schema
			FROM pg_catalog.pg_proc p
			WHERE p.oid OPERATOR(pg_catalog.=) member.objid;
			IF dest OPERATOR(pg_catalog.<>) cur_schema THEN
				EXECUTE pg_catalog.format('ALTER ROUTINE %s SET SCHEMA %s',
										  member.objid::pg_catalog.regprocedure,
										  dest::pg_catalog.regnamespace);
			END IF;
		ELSIF member.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass THEN
			SELECT CASE WHEN c.relkind OPERATOR(pg_catalog.=) 'r'::"char" THEN 'TABLE'
						WHEN c.relkind OPERATOR(pg_catalog.=) 'v'::"char" THEN 'VIEW'
						WHEN c.relkind OPERATOR(pg_catalog.=) 'm'::"char" THEN 'MATERIALIZED VIEW'
						WHEN c.relkind OPERATOR(pg_catalog.=) 'S'::"char" THEN 'SEQUENCE' END
			INTO kind
			FROM pg_catalog.pg_class c
			WHERE c.oid OPERATOR(pg_catalog.=) member.objid
			  AND c.relnamespace OPERATOR(pg_catalog.<>) target;
			IF kind IS NOT NULL THEN
				EXECUTE pg_catalog.format('ALTER %s %s SET SCHEMA ratelimit',
										  kind, member.objid::pg_catalog.regclass);
			END IF;
		ELSIF member.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass THEN
			SELECT CASE WHEN t.typtype OPERATOR(pg_catalog.=) 'd'::"char" THEN 'DOMAIN' ELSE 'TYPE' END
			INTO kind
			FROM pg_catalog.pg_type t
			WHERE t.oid OPERATOR(pg_catalog.=) member.objid
			  AND t.typnamespace OPERATOR(pg_catalog.<>) target
			  -- an array type, or a table's row type (members of their own
			  -- from PostgreSQL 18 on), moves with its element type or table
			  AND NOT EXISTS (SELECT FROM pg_catalog.pg_type e
							  WHERE e.typarray OPERATOR(pg_catalog.=) t.oid)
			  AND NOT EXISTS (SELECT FROM pg_catalog.pg_class r
							  WHERE r.oid OPERATOR(pg_catalog.=) t.typrelid
								AND r.relkind OPERATOR(pg_catalog.<>) 'c'::"char");
			IF kind IS NOT NULL THEN
				EXECUTE pg_catalog.format('ALTER %s %s SET SCHEMA ratelimit',
										  kind, member.objid::pg_catalog.regtype);
			END IF;
		ELSIF member.classid OPERATOR(pg_catalog.<>) 'pg_catalog.pg_namespace'::pg_catalog.regclass THEN
			RAISE EXCEPTION 'pg_ratelimit 1.1 cannot move member % of catalog %',
				member.objid, member.classid::pg_catalog.regclass;
		END IF;
	END LOOP;

	IF old_schema OPERATOR(pg_catalog.<>) target THEN
		UPDATE pg_catalog.pg_extension e SET extnamespace = target
		WHERE e.oid OPERATOR(pg_catalog.=) ext;
		UPDATE pg_catalog.pg_depend d SET refobjid = target
		WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
		  AND d.objid OPERATOR(pg_catalog.=) ext
		  AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
		  AND d.refobjid OPERATOR(pg_catalog.=) old_schema;
		-- a pinned schema has no dependency row
		IF NOT FOUND THEN
			INSERT INTO pg_catalog.pg_depend
			VALUES ('pg_catalog.pg_extension'::pg_catalog.regclass, ext, 0,
					'pg_catalog.pg_namespace'::pg_catalog.regclass, target, 0, 'n');
		END IF;
	END IF;
END
$$;
