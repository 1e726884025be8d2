/* pg_ratelimit--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "ALTER EXTENSION pg_ratelimit UPDATE TO '1.1'" to load this file. \quit

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
