/* pg_ratelimit--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_ratelimit UPDATE TO '1.1'" to load this file. \quit

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
