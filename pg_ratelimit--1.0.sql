/* pg_ratelimit--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_ratelimit" to load this file. \quit

------------------------------------------------------------------------------
-- Configuration tables: the source of truth.  Change them through the
-- rl_define_* / rl_drop_* functions (direct DML works too: a statement
-- trigger hands every committed change to shared memory).
------------------------------------------------------------------------------

CREATE TABLE rl_model (
	model			text PRIMARY KEY
					CHECK (model <> '' AND octet_length(model) <= 127),
	rpm				bigint CHECK (rpm > 0),
	tpm				bigint CHECK (tpm > 0),
	rpd				bigint CHECK (rpd > 0),
	tpd				bigint CHECK (tpd > 0),
	max_concurrent	integer CHECK (max_concurrent > 0),
	-- finite: 'Infinity' and 'NaN' sort above every number
	price_input		numeric NOT NULL DEFAULT 0
					CHECK (price_input >= 0 AND price_input < 'Infinity'),
	price_output	numeric NOT NULL DEFAULT 0
					CHECK (price_output >= 0 AND price_output < 'Infinity'),
	price_cached	numeric NOT NULL DEFAULT 0
					CHECK (price_cached >= 0 AND price_cached < 'Infinity'),
	count_cached	boolean NOT NULL DEFAULT true,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE rl_model IS 'pg_ratelimit models and their limits (NULL: not limited); prices are per million tokens';

CREATE TABLE rl_job_type (
	job_type		text PRIMARY KEY
					CHECK (job_type <> '' AND octet_length(job_type) <= 127),
	est_tokens		bigint NOT NULL DEFAULT 0 CHECK (est_tokens >= 0),
	est_requests	integer NOT NULL DEFAULT 1 CHECK (est_requests >= 0),
	est_memory_kb	bigint NOT NULL DEFAULT 0 CHECK (est_memory_kb >= 0),
	ratio			float8 CHECK (ratio >= 0 AND ratio <= 1),
	flexible		boolean NOT NULL DEFAULT true,
	max_wait		interval CHECK (max_wait >= '0'),
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE rl_job_type IS 'pg_ratelimit job types: estimates, share of every model, default wait';

CREATE TABLE rl_job_type_wait (
	job_type		text REFERENCES rl_job_type ON DELETE CASCADE ON UPDATE CASCADE,
	model			text REFERENCES rl_model ON DELETE CASCADE ON UPDATE CASCADE,
	max_wait		interval NOT NULL CHECK (max_wait >= '0'),
	PRIMARY KEY (job_type, model)
);
COMMENT ON TABLE rl_job_type_wait IS 'pg_ratelimit max_wait of a job type on one model';

SELECT pg_catalog.pg_extension_config_dump('rl_model', '');
SELECT pg_catalog.pg_extension_config_dump('rl_job_type', '');
SELECT pg_catalog.pg_extension_config_dump('rl_job_type_wait', '');

GRANT SELECT ON rl_model, rl_job_type, rl_job_type_wait TO PUBLIC;

------------------------------------------------------------------------------
-- Persisted state, written by the background worker every
-- ratelimit.persist_interval and at a clean shutdown, read back when shared
-- memory starts empty.  Not configuration: no triggers, and not dumped.
------------------------------------------------------------------------------

CREATE TABLE rl_counter (
	model			text PRIMARY KEY,
	minute_start	timestamptz NOT NULL,
	requests_minute	bigint NOT NULL,
	tokens_minute	bigint NOT NULL,
	day_start		timestamptz NOT NULL,
	requests_day	bigint NOT NULL,
	tokens_day		bigint NOT NULL,
	granted			bigint NOT NULL,
	denied			bigint NOT NULL,
	expired			bigint NOT NULL,
	overage_events	bigint NOT NULL,
	overage_tokens	bigint NOT NULL,
	-- usage of the current UTC day; ended days move to rl_usage_daily
	usage_day		date,
	usage_requests	bigint NOT NULL DEFAULT 0,
	usage_input		bigint NOT NULL DEFAULT 0,
	usage_output	bigint NOT NULL DEFAULT 0,
	usage_cached	bigint NOT NULL DEFAULT 0,
	usage_cost		numeric NOT NULL DEFAULT 0,
	usage_overage_events bigint NOT NULL DEFAULT 0,
	usage_overage_tokens bigint NOT NULL DEFAULT 0,
	saved_at		timestamptz NOT NULL
) WITH (fillfactor = 50);	-- room for HOT updates: rows are rewritten every second
COMMENT ON TABLE rl_counter IS 'pg_ratelimit window counters, totals and usage of the day per model, as last persisted';

CREATE TABLE rl_share_counter (
	model			text NOT NULL,
	job_type		text NOT NULL,
	base_ratio		float8 NOT NULL,
	ratio			float8 NOT NULL,
	minute_start	timestamptz NOT NULL,
	requests_minute	bigint NOT NULL,
	tokens_minute	bigint NOT NULL,
	jobs_minute		bigint NOT NULL,
	day_start		timestamptz NOT NULL,
	requests_day	bigint NOT NULL,
	tokens_day		bigint NOT NULL,
	jobs_day		bigint NOT NULL,
	granted			bigint NOT NULL,
	denied			bigint NOT NULL,
	-- the job type's part of the usage of the current UTC day
	usage_day		date,
	usage_requests	bigint NOT NULL DEFAULT 0,
	usage_input		bigint NOT NULL DEFAULT 0,
	usage_output	bigint NOT NULL DEFAULT 0,
	usage_cached	bigint NOT NULL DEFAULT 0,
	usage_cost		numeric NOT NULL DEFAULT 0,
	usage_overage_events bigint NOT NULL DEFAULT 0,
	usage_overage_tokens bigint NOT NULL DEFAULT 0,
	saved_at		timestamptz NOT NULL,
	PRIMARY KEY (model, job_type)
) WITH (fillfactor = 50);
COMMENT ON TABLE rl_share_counter IS 'pg_ratelimit ratio and window counters of each job type on each model, as last persisted';

CREATE TABLE rl_lease_state (
	lease_id		bigint PRIMARY KEY,
	model			text NOT NULL,
	job_type		text,
	instance		text,
	tokens			bigint NOT NULL,
	requests		integer NOT NULL,
	minute_start	timestamptz NOT NULL,
	day_start		timestamptz NOT NULL,
	acquired_at		timestamptz NOT NULL,
	expires_at		timestamptz NOT NULL,
	pid				integer NOT NULL,
	role_oid		oid NOT NULL
);
COMMENT ON TABLE rl_lease_state IS 'pg_ratelimit open leases, as last persisted';

CREATE TABLE rl_usage_daily (
	day				date NOT NULL,
	model			text NOT NULL,
	job_type		text NOT NULL,	-- '': the model's whole day
	requests		bigint NOT NULL,
	input_tokens	bigint NOT NULL,
	output_tokens	bigint NOT NULL,
	cached_tokens	bigint NOT NULL,
	cost			numeric NOT NULL,
	overage_events	bigint NOT NULL,
	overage_tokens	bigint NOT NULL,
	PRIMARY KEY (day, model, job_type)
);
COMMENT ON TABLE rl_usage_daily IS 'pg_ratelimit usage and cost per ended UTC day, model and job type';

-- High-water marks (see src/mark.c): what each model may have granted in
-- its current windows, saved before it is granted, so that a restore after
-- a crash or a failover never admits it again.  The marks are in the order
-- of the limits rpd, tpd, rpm, tpm, max_concurrent; next_* are for the
-- windows after minute_start and day_start.
CREATE TABLE rl_mark (
	model			text PRIMARY KEY,
	minute_start	timestamptz NOT NULL,
	day_start		timestamptz NOT NULL,
	requests_day	bigint NOT NULL,
	tokens_day		bigint NOT NULL,
	requests_minute	bigint NOT NULL,
	tokens_minute	bigint NOT NULL,
	in_flight		bigint NOT NULL,
	next_requests_day bigint NOT NULL,
	next_tokens_day	bigint NOT NULL,
	next_requests_minute bigint NOT NULL,
	next_tokens_minute bigint NOT NULL,
	lease_horizon	timestamptz NOT NULL,	-- no lease granted under these marks expires later
	clean			boolean NOT NULL,		-- exact: saved at a clean stop
	saved_at		timestamptz NOT NULL
) WITH (fillfactor = 50);
COMMENT ON TABLE rl_mark IS 'pg_ratelimit high-water marks: usage each model may have reached, saved ahead of use';

CREATE TABLE rl_instance_state (
	instance		text PRIMARY KEY,
	memory_kb		bigint,
	registered_at	timestamptz NOT NULL,
	last_heartbeat	timestamptz NOT NULL,
	role_oid		oid				-- the role that registered it
);
COMMENT ON TABLE rl_instance_state IS 'pg_ratelimit registered instances, as last persisted';

CREATE TABLE rl_saved_clock (
	id				integer PRIMARY KEY CHECK (id = 1),
	clock_offset_us	bigint NOT NULL,
	saved_at		timestamptz NOT NULL
);
COMMENT ON TABLE rl_saved_clock IS 'pg_ratelimit test clock offset, kept across restarts';

GRANT SELECT ON rl_counter, rl_share_counter, rl_lease_state, rl_usage_daily,
	rl_instance_state, rl_mark TO PUBLIC;

-- One row per UTC day, model and job type; job_type NULL is what was used
-- without a job type (or by a job type since dropped): the model's whole day
-- less its job types' parts.  Ended days come from rl_usage_daily, the
-- current one from rl_counter and rl_share_counter.  Views are bound when
-- the extension is created: every operator here has operands of the exact
-- types of a pg_catalog operator, so that none can resolve elsewhere.
CREATE VIEW rl_usage AS
	WITH days AS (
		SELECT day, model, job_type, requests, input_tokens, output_tokens, cached_tokens,
			   cost, overage_events, overage_tokens
		FROM rl_usage_daily
		UNION ALL
		SELECT usage_day, model, '', usage_requests, usage_input, usage_output, usage_cached,
			   usage_cost, usage_overage_events, usage_overage_tokens
		FROM rl_counter c
		WHERE usage_day IS NOT NULL
		  AND NOT EXISTS (SELECT FROM rl_usage_daily d
						  WHERE d.day = c.usage_day AND d.model = c.model AND d.job_type = '')
		UNION ALL
		SELECT usage_day, model, job_type, usage_requests, usage_input, usage_output,
			   usage_cached, usage_cost, usage_overage_events, usage_overage_tokens
		FROM rl_share_counter s
		WHERE usage_day IS NOT NULL
		  AND (usage_requests > 0 OR usage_input > 0 OR usage_output > 0 OR usage_cached > 0)
		  AND NOT EXISTS (SELECT FROM rl_usage_daily d
						  WHERE d.day = s.usage_day AND d.model = s.model
							AND d.job_type = s.job_type)
	),
	parts AS (
		SELECT * FROM days WHERE job_type <> ''
		UNION ALL
		SELECT w.day, w.model, NULL,
			   w.requests - coalesce(sum(p.requests), 0)::bigint,
			   w.input_tokens - coalesce(sum(p.input_tokens), 0)::bigint,
			   w.output_tokens - coalesce(sum(p.output_tokens), 0)::bigint,
			   w.cached_tokens - coalesce(sum(p.cached_tokens), 0)::bigint,
			   w.cost - coalesce(sum(p.cost), 0::numeric),
			   w.overage_events - coalesce(sum(p.overage_events), 0)::bigint,
			   w.overage_tokens - coalesce(sum(p.overage_tokens), 0)::bigint
		FROM days w
		LEFT JOIN days p ON p.day = w.day AND p.model = w.model AND p.job_type <> ''
		WHERE w.job_type = ''
		GROUP BY w.day, w.model, w.requests, w.input_tokens, w.output_tokens,
				 w.cached_tokens, w.cost, w.overage_events, w.overage_tokens
	)
	SELECT day, model, job_type, requests, input_tokens, output_tokens, cached_tokens,
		   input_tokens + output_tokens + cached_tokens AS total_tokens,
		   cost, overage_events, overage_tokens
	FROM parts
	WHERE requests <> 0 OR input_tokens <> 0 OR output_tokens <> 0 OR cached_tokens <> 0
	   OR cost <> 0::numeric OR overage_events <> 0;
COMMENT ON VIEW rl_usage IS 'pg_ratelimit persisted daily usage and cost per model and job type';
GRANT SELECT ON rl_usage TO PUBLIC;

CREATE FUNCTION rl_config_trigger() RETURNS trigger
AS 'MODULE_PATHNAME', 'rl_config_trigger'
LANGUAGE C;

-- Every change to the configuration tables reaches shared memory at commit
-- (src/config.c).  Row triggers, because logical replication fires only
-- those; a statement trigger for TRUNCATE.  ENABLE ALWAYS: they fire with
-- session_replication_role = replica and in logical replication too.
-- Changes made while they are disabled are found by the worker.
CREATE TRIGGER rl_model_changed
	BEFORE INSERT OR UPDATE OR DELETE ON rl_model
	FOR EACH ROW EXECUTE FUNCTION rl_config_trigger();
CREATE TRIGGER rl_model_truncated
	BEFORE TRUNCATE ON rl_model
	FOR EACH STATEMENT EXECUTE FUNCTION rl_config_trigger();
CREATE TRIGGER rl_job_type_changed
	BEFORE INSERT OR UPDATE OR DELETE ON rl_job_type
	FOR EACH ROW EXECUTE FUNCTION rl_config_trigger();
CREATE TRIGGER rl_job_type_truncated
	BEFORE TRUNCATE ON rl_job_type
	FOR EACH STATEMENT EXECUTE FUNCTION rl_config_trigger();
CREATE TRIGGER rl_job_type_wait_changed
	BEFORE INSERT OR UPDATE OR DELETE ON rl_job_type_wait
	FOR EACH ROW EXECUTE FUNCTION rl_config_trigger();
CREATE TRIGGER rl_job_type_wait_truncated
	BEFORE TRUNCATE ON rl_job_type_wait
	FOR EACH STATEMENT EXECUTE FUNCTION rl_config_trigger();
ALTER TABLE rl_model ENABLE ALWAYS TRIGGER rl_model_changed,
	ENABLE ALWAYS TRIGGER rl_model_truncated;
ALTER TABLE rl_job_type ENABLE ALWAYS TRIGGER rl_job_type_changed,
	ENABLE ALWAYS TRIGGER rl_job_type_truncated;
ALTER TABLE rl_job_type_wait ENABLE ALWAYS TRIGGER rl_job_type_wait_changed,
	ENABLE ALWAYS TRIGGER rl_job_type_wait_truncated;

CREATE FUNCTION rl_internal_check() RETURNS void
AS 'MODULE_PATHNAME', 'rl_internal_check'
LANGUAGE C;

CREATE FUNCTION rl_internal_resync() RETURNS void
AS 'MODULE_PATHNAME', 'rl_internal_resync'
LANGUAGE C;

------------------------------------------------------------------------------
-- Configuration functions (administrators).  They run as the extension's
-- owner, so granting EXECUTE on them is all an administrator role needs.
-- Their search_path is pinned, and every call into the extension's schema
-- passes arguments of exactly the callee's types: an overload planted in
-- that schema (public, say) with closer types is never chosen.
------------------------------------------------------------------------------

-- Refuse a NULL, empty or too long name
CREATE FUNCTION rl_internal_check_name(name text, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF name IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
			MESSAGE = format('%s must not be null', what);
	END IF;
	IF name = '' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = format('%s name must not be empty', what);
	END IF;
	IF octet_length(name) > 127 THEN
		RAISE EXCEPTION USING ERRCODE = 'name_too_long',
			MESSAGE = format('%s name is too long', what),
			DETAIL = 'The longest allowed name has 127 bytes.';
	END IF;
END
$$;

-- Refuse a negative (or, when strict, zero) amount
CREATE FUNCTION rl_internal_check_amount(amount numeric, what text, positive boolean)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF positive AND amount <= 0 THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = format('%s must be positive', what),
			HINT = 'Use NULL for "not limited".';
	END IF;
	IF amount < 0 THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = format('%s must not be negative', what);
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
								count_cached boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@.rl_internal_check();
	PERFORM @extschema@.rl_internal_check_name(model, 'model'::text);
	PERFORM @extschema@.rl_internal_check_amount(rpm::numeric, 'rpm'::text, true);
	PERFORM @extschema@.rl_internal_check_amount(tpm::numeric, 'tpm'::text, true);
	PERFORM @extschema@.rl_internal_check_amount(rpd::numeric, 'rpd'::text, true);
	PERFORM @extschema@.rl_internal_check_amount(tpd::numeric, 'tpd'::text, true);
	PERFORM @extschema@.rl_internal_check_amount(max_concurrent::numeric, 'max_concurrent'::text, true);
	PERFORM @extschema@.rl_internal_check_amount(price_input::numeric, 'price_input'::text, false);
	PERFORM @extschema@.rl_internal_check_amount(price_output::numeric, 'price_output'::text, false);
	PERFORM @extschema@.rl_internal_check_amount(price_cached::numeric, 'price_cached'::text, false);
	-- NaN and Infinity pass the checks above (they sort above every number)
	IF price_input >= 'Infinity' OR price_output >= 'Infinity' OR price_cached >= 'Infinity' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'prices must be finite numbers';
	END IF;

	INSERT INTO @extschema@.rl_model AS m
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

CREATE FUNCTION rl_drop_model(model text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@.rl_internal_check();
	PERFORM @extschema@.rl_internal_check_name(model, 'model'::text);
	DELETE FROM @extschema@.rl_model m WHERE m.model = rl_drop_model.model;
	IF NOT FOUND THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('model "%s" does not exist', model);
	END IF;
END
$$;

CREATE FUNCTION rl_define_job_type(job_type text,
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
	PERFORM @extschema@.rl_internal_check();
	PERFORM @extschema@.rl_internal_check_name(job_type, 'job type'::text);
	PERFORM @extschema@.rl_internal_check_amount(est_tokens::numeric, 'est_tokens'::text, false);
	PERFORM @extschema@.rl_internal_check_amount(est_requests::numeric, 'est_requests'::text, false);
	PERFORM @extschema@.rl_internal_check_amount(est_memory_kb::numeric, 'est_memory_kb'::text, false);
	IF ratio IS NOT NULL AND NOT (ratio >= 0 AND ratio <= 1) THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'ratio must be between 0 and 1';
	END IF;
	IF max_wait < '0' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'max_wait must not be negative';
	END IF;

	INSERT INTO @extschema@.rl_job_type AS j
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

	SELECT sum(j.ratio) INTO ratio_sum FROM @extschema@.rl_job_type j;
	IF ratio_sum > 1 + 1e-9 THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = format('job type ratios would sum to %s, more than 1', round(ratio_sum::numeric, 6)),
			HINT = 'Lower the ratio of this or another job type.';
	END IF;
END
$$;

CREATE FUNCTION rl_set_max_wait(job_type text, model text, max_wait interval)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@.rl_internal_check();
	PERFORM @extschema@.rl_internal_check_name(job_type, 'job type'::text);
	PERFORM @extschema@.rl_internal_check_name(model, 'model'::text);
	IF NOT EXISTS (SELECT FROM @extschema@.rl_job_type j WHERE j.job_type = rl_set_max_wait.job_type) THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('job type "%s" does not exist', job_type);
	END IF;
	IF NOT EXISTS (SELECT FROM @extschema@.rl_model m WHERE m.model = rl_set_max_wait.model) THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('model "%s" does not exist', model);
	END IF;
	IF max_wait < '0' THEN
		RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
			MESSAGE = 'max_wait must not be negative';
	END IF;

	IF max_wait IS NULL THEN
		DELETE FROM @extschema@.rl_job_type_wait w
		WHERE w.job_type = rl_set_max_wait.job_type AND w.model = rl_set_max_wait.model;
	ELSE
		INSERT INTO @extschema@.rl_job_type_wait AS w (job_type, model, max_wait)
		VALUES (job_type, model, max_wait)
		ON CONFLICT ON CONSTRAINT rl_job_type_wait_pkey DO UPDATE
			SET max_wait = excluded.max_wait;
	END IF;
END
$$;

CREATE FUNCTION rl_drop_job_type(job_type text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@.rl_internal_check();
	PERFORM @extschema@.rl_internal_check_name(job_type, 'job type'::text);
	DELETE FROM @extschema@.rl_job_type j WHERE j.job_type = rl_drop_job_type.job_type;
	IF NOT FOUND THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('job type "%s" does not exist', job_type);
	END IF;
END
$$;

------------------------------------------------------------------------------
-- Acquire and release (applications)
------------------------------------------------------------------------------

CREATE TYPE rl_grant AS (
	granted			boolean,
	lease_id		bigint,
	model			text,
	retry_after		interval,
	limited_by		text
);

CREATE TYPE rl_settlement AS (
	released		boolean,
	model			text,
	tokens_estimated bigint,
	tokens_actual	bigint,
	tokens_refunded	bigint,
	overage			bigint,
	cost			numeric
);

CREATE FUNCTION rl_acquire(model text,
						   job_type text DEFAULT NULL,
						   tokens bigint DEFAULT NULL,
						   requests integer DEFAULT NULL,
						   max_wait interval DEFAULT NULL,
						   instance text DEFAULT NULL,
						   ttl interval DEFAULT NULL,
						   session_bound boolean DEFAULT false)
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
							   session_bound boolean DEFAULT false)
RETURNS rl_grant
AS 'MODULE_PATHNAME', 'rl_acquire_any'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION rl_release(lease_id bigint,
						   input_tokens bigint DEFAULT NULL,
						   output_tokens bigint DEFAULT NULL,
						   cached_tokens bigint DEFAULT NULL,
						   requests integer DEFAULT NULL)
RETURNS rl_settlement
AS 'MODULE_PATHNAME', 'rl_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

------------------------------------------------------------------------------
-- Reading the state
------------------------------------------------------------------------------

CREATE FUNCTION rl_capacity(model text,
							job_type text DEFAULT NULL,
							tokens bigint DEFAULT NULL,
							requests integer DEFAULT NULL)
RETURNS TABLE (dimension text, limit_value bigint, used bigint,
			   remaining bigint, slots bigint, resets_at timestamptz)
AS 'MODULE_PATHNAME', 'rl_capacity'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION rl_status_internal(
	OUT model text, OUT rpm bigint, OUT tpm bigint, OUT rpd bigint,
	OUT tpd bigint, OUT max_concurrent bigint,
	OUT requests_minute bigint, OUT tokens_minute bigint,
	OUT requests_day bigint, OUT tokens_day bigint, OUT in_flight bigint,
	OUT waiting integer,
	OUT minute_resets_at timestamptz, OUT day_resets_at timestamptz,
	OUT granted bigint, OUT denied bigint, OUT expired bigint,
	OUT overage_events bigint, OUT overage_tokens bigint,
	OUT cost_today numeric)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rl_status_internal'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW rl_status AS
	SELECT * FROM rl_status_internal() ORDER BY model;
COMMENT ON VIEW rl_status IS 'pg_ratelimit models: limits, usage of the current windows, totals';

CREATE FUNCTION rl_leases_internal(
	OUT lease_id bigint, OUT model text, OUT job_type text, OUT instance text,
	OUT tokens bigint, OUT requests integer,
	OUT acquired_at timestamptz, OUT expires_at timestamptz,
	OUT pid integer, OUT role text, OUT session_bound boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rl_leases_internal'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW rl_leases AS
	SELECT * FROM rl_leases_internal() ORDER BY lease_id;
COMMENT ON VIEW rl_leases IS 'pg_ratelimit open leases';

CREATE FUNCTION rl_job_status_internal(
	OUT model text, OUT job_type text, OUT ratio float8, OUT base_ratio float8,
	OUT flexible boolean, OUT slots bigint, OUT limited_by text,
	OUT in_flight bigint, OUT waiting integer,
	OUT rpm_share bigint, OUT requests_minute bigint,
	OUT tpm_share bigint, OUT tokens_minute bigint,
	OUT rpd_share bigint, OUT requests_day bigint,
	OUT tpd_share bigint, OUT tokens_day bigint,
	OUT concurrency_share bigint,
	OUT granted bigint, OUT denied bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rl_job_status_internal'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW rl_job_status AS
	SELECT * FROM rl_job_status_internal() ORDER BY model, job_type;
COMMENT ON VIEW rl_job_status IS 'pg_ratelimit job types on each model: ratio, share, slots, usage';

GRANT SELECT ON rl_status, rl_leases, rl_job_status TO PUBLIC;

------------------------------------------------------------------------------
-- Instances (applications)
------------------------------------------------------------------------------

CREATE FUNCTION rl_heartbeat(instance text, memory_kb bigint DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'rl_heartbeat'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rl_heartbeat(text, bigint) IS 'register or refresh an application instance; returns the number of live instances';

CREATE FUNCTION rl_unregister(instance text) RETURNS void
AS 'MODULE_PATHNAME', 'rl_unregister'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION rl_unregister(text) IS 'an application instance leaves; its open leases are expired';

CREATE FUNCTION rl_allocation_internal(instance text,
	OUT model text, OUT job_type text, OUT instances integer, OUT pool_slots bigint,
	OUT slots bigint, OUT limited_by text, OUT admission text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rl_allocation_internal'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION rl_allocation(instance text)
RETURNS TABLE (model text, job_type text, instances integer, pool_slots bigint,
			   slots bigint, limited_by text, admission text)
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
BEGIN ATOMIC
	SELECT * FROM @extschema@.rl_allocation_internal(instance) a
	ORDER BY a.model, a.job_type NULLS FIRST;
END;
COMMENT ON FUNCTION rl_allocation(text) IS 'the fair share of every model and job type for one live instance';

CREATE FUNCTION rl_instances_internal(
	OUT instance text, OUT registered_at timestamptz, OUT last_heartbeat timestamptz,
	OUT memory_kb bigint, OUT live boolean, OUT leases bigint, OUT role text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rl_instances_internal'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW rl_instances AS
	SELECT * FROM rl_instances_internal() ORDER BY instance;
COMMENT ON VIEW rl_instances IS 'pg_ratelimit application instances: last heartbeat, memory, leases held, the role that registered each';

GRANT SELECT ON rl_instances TO PUBLIC;

------------------------------------------------------------------------------
-- Test clock
------------------------------------------------------------------------------

CREATE FUNCTION rl_debug_set_clock(now timestamptz) RETURNS void
AS 'MODULE_PATHNAME', 'rl_debug_set_clock'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION rl_clock() RETURNS timestamptz
AS 'MODULE_PATHNAME', 'rl_clock'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- Taking and giving back capacity is for the roles an administrator names
-- (GRANT EXECUTE, see README "Security"): any role could otherwise hold
-- leases or register instances until the limits are used up.
REVOKE ALL ON FUNCTION
	rl_acquire(text, text, bigint, integer, interval, text, interval, boolean),
	rl_acquire_any(text[], text, bigint, integer, interval, text, interval, boolean),
	rl_release(bigint, bigint, bigint, bigint, integer),
	rl_heartbeat(text, bigint),
	rl_unregister(text)
FROM PUBLIC;

REVOKE ALL ON FUNCTION
	rl_define_model(text, bigint, bigint, bigint, bigint, integer, numeric, numeric, numeric, boolean),
	rl_drop_model(text),
	rl_define_job_type(text, bigint, integer, bigint, float8, boolean, interval),
	rl_set_max_wait(text, text, interval),
	rl_drop_job_type(text),
	rl_debug_set_clock(timestamptz),
	rl_internal_resync(),
	rl_config_trigger()
FROM PUBLIC;

-- Shared memory may still hold the configuration of an earlier installation
SELECT rl_internal_resync();
