/*-------------------------------------------------------------------------
 *
 * clock.c
 *		The limiter's clock, window arithmetic and the test clock.
 *
 * Everything pg_ratelimit times follows pgrl_now(): real time plus a shared
 * offset that rl_debug_set_clock() sets.  Real time keeps running from the
 * value set, so a test can jump to just before a boundary and watch it pass.
 * The test clock works only on a server started with
 * ratelimit.enable_test_clock; otherwise pgrl_now() is real time, whatever
 * offset shared memory holds.
 *
 * The clock may step back (the test clock set to an earlier time, the
 * system clock corrected, a backend that read the time just before another
 * rolled a window), but windows never do: a model's windows only move
 * forward (admission.c), and a time before them counts in them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "pg_ratelimit.h"
#include "wait.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(rl_debug_set_clock);
PG_FUNCTION_INFO_V1(rl_clock);

/* The limiter's current time */
TimestampTz
pgrl_now(void)
{
	if (!pgrl_enable_test_clock)
		return GetCurrentTimestamp();
	return GetCurrentTimestamp() + (int64) pg_atomic_read_u64(&pgrl_state->clock_offset_us);
}

/* Start of the epoch-aligned window of the given length that contains t */
TimestampTz
pgrl_window_start(TimestampTz t, int64 length_us)
{
	int64		start = t - t % length_us;

	/* C division truncates toward zero; windows start below t */
	if (t % length_us < 0)
		start -= length_us;
	return start;
}

/*
 * The window of the given length that a model which has reached the window
 * starting at reached is in at time t: windows never move back, so a time
 * before the window reached counts in it.
 */
TimestampTz
pgrl_window_at(TimestampTz reached, TimestampTz t, int64 length_us)
{
	return Max(reached, pgrl_window_start(t, length_us));
}

/* An interval argument in microseconds (a month counts as 30 days) */
int64
pgrl_interval_to_us(Interval *interval, const char *what)
{
	int64		days;
	int64		result;

	if (pg_mul_s64_overflow((int64) interval->month, DAYS_PER_MONTH, &days) ||
		pg_add_s64_overflow(days, interval->day, &days) ||
		pg_mul_s64_overflow(days, USECS_PER_DAY, &result) ||
		pg_add_s64_overflow(result, interval->time, &result))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("%s is out of range", what)));
	return result;
}

/*
 * rl_debug_set_clock(now timestamptz): set the limiter's clock for the whole
 * server; NULL returns to real time.  Superuser only, and only on a server
 * started with ratelimit.enable_test_clock.
 */
Datum
rl_debug_set_clock(PG_FUNCTION_ARGS)
{
	int64		offset = 0;

	pgrl_require_primary("set the clock");
	pgrl_require_ready();
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to set the pg_ratelimit clock")));
	if (!pgrl_enable_test_clock)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the pg_ratelimit test clock is not enabled"),
				 errhint("The test clock is for tests only: set ratelimit.enable_test_clock = on and restart the server.")));

	if (!PG_ARGISNULL(0))
	{
		TimestampTz target = PG_GETARG_TIMESTAMPTZ(0);

		if (TIMESTAMP_NOT_FINITE(target))
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("the pg_ratelimit clock cannot be set to an infinite time")));
		offset = target - GetCurrentTimestamp();
	}
	pg_atomic_write_u64(&pgrl_state->clock_offset_us, (uint64) offset);
	/* boundaries and expiries moved: let the worker recompute its sleep */
	pgrl_wake_worker();
	pgrl_wake_all_waiters();
	elog(DEBUG1, "pg_ratelimit clock offset set to " INT64_FORMAT " us", offset);
	PG_RETURN_VOID();
}

/* rl_clock(): the limiter's current time */
Datum
rl_clock(PG_FUNCTION_ARGS)
{
	pgrl_require_ready();
	PG_RETURN_TIMESTAMPTZ(pgrl_now());
}
