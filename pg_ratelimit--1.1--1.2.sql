/* pg_ratelimit--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_ratelimit UPDATE TO '1.2'" to load this file. \quit

------------------------------------------------------------------------------
-- Version 1.2: bucket models.  A model's rate limits count either in fixed
-- UTC minutes and days (window_type 'fixed', as before and the default) or
-- as token buckets that refill continuously (window_type 'bucket'), the way
-- providers count them.
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
								window_type text DEFAULT 'fixed')
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
	PERFORM ratelimit_internal.rl_internal_check_window_type(window_type);
	-- NaN and Infinity pass the checks above (they sort above every number)
	IF price_input >= 'Infinity' OR price_output >= 'Infinity' OR price_cached >= 'Infinity' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'prices must be finite numbers';
	END IF;

	INSERT INTO ratelimit.rl_model AS m
		(model, rpm, tpm, rpd, tpd, max_concurrent,
		 price_input, price_output, price_cached, count_cached, window_type)
	VALUES (model, rpm, tpm, rpd, tpd, max_concurrent,
			coalesce(price_input, 0), coalesce(price_output, 0),
			coalesce(price_cached, 0), coalesce(count_cached, true),
			coalesce(window_type, 'fixed'))
	ON CONFLICT ON CONSTRAINT rl_model_pkey DO UPDATE
		SET rpm = excluded.rpm, tpm = excluded.tpm,
			rpd = excluded.rpd, tpd = excluded.tpd,
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
							   window_type text DEFAULT NULL)
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

-- As every configuration function: only roles given EXECUTE may call them
REVOKE ALL ON FUNCTION
	rl_define_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text),
	rl_alter_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text[], text)
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
			   'rl_define_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text)'::pg_catalog.regprocedure),
			  ('rl_alter_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text[])'::pg_catalog.regprocedure,
			   'rl_alter_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text[], text)'::pg_catalog.regprocedure))
			 AS f(old_fn, new_fn)
		JOIN pg_catalog.pg_proc o ON o.oid OPERATOR(pg_catalog.=) f.old_fn
		JOIN pg_catalog.pg_proc n ON n.oid OPERATOR(pg_catalog.=) f.new_fn
	LOOP
		initial := pair.new_acl;
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
										   ELSE pg_catalog.quote_ident(grant_item.grantee::pg_catalog.regrole::pg_catalog.text) END,
									  CASE WHEN grant_item.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
		END LOOP;
		UPDATE pg_catalog.pg_init_privs i SET initprivs = initial
		WHERE i.objoid OPERATOR(pg_catalog.=) pair.new_fn
		  AND i.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
		  AND i.objsubid OPERATOR(pg_catalog.=) 0;
		EXECUTE pg_catalog.format('DROP FUNCTION %s', pair.old_fn::pg_catalog.regprocedure);
	END LOOP;
END
$$;

COMMENT ON FUNCTION rl_define_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text) IS
	'define a model, or redefine all of it: its limits (NULL: not limited), prices per million tokens, whether cached tokens count, and how the limits count (window_type: fixed or bucket); usage is kept';
COMMENT ON FUNCTION rl_alter_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean, text[], text) IS
	'change the settings given of an existing model, leaving the others; clear names limits to remove (rpm, tpm, rpd, tpd, max_concurrent)';
COMMENT ON FUNCTION ratelimit_internal.rl_internal_check_window_type(text) IS
	'pg_ratelimit internal: refuse a window_type other than fixed and bucket';
