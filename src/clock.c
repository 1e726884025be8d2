/*-------------------------------------------------------------------------
 *
 * clock.c
 *		The limiter's clock, window arithmetic and the test clock.
 *
 * Everything pg_ratelimit times follows pgrl_now(): real time plus a shared
 * offset that rl_debug_set_clock() sets (api.c).  Real time keeps running from the
 * value set, so a test can jump to just before a boundary and watch it pass.
 * The test clock works only on a server started with
 * ratelimit.enable_test_clock; otherwise pgrl_now() is real time, whatever
 * offset shared memory holds.
 *
 * The clock may step back (the test clock set to an earlier time, the
 * system clock corrected, a backend that read the time just before another
 * rolled a window), but windows never do: a model's windows only move
 * forward (ledger.c), and a time before them counts in them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "pg_ratelimit.h"
#include "settings.h"

/* The test clock's offset from real time; an atomic, written rarely */
static pg_atomic_uint64 *clock_offset_us = NULL;

Size
pgrl_clock_shmem_size(void)
{
	return sizeof(pg_atomic_uint64);
}

/* Create or attach; caller holds AddinShmemInitLock */
void
pgrl_clock_shmem_init(void)
{
	bool		found;

	clock_offset_us = ShmemInitStruct("pg_ratelimit clock", pgrl_clock_shmem_size(), &found);
	if (!found)
		pg_atomic_init_u64(clock_offset_us, 0);
}

/* The offset in force, whether or not the test clock is enabled */
int64
pgrl_clock_offset(void)
{
	return (int64) pg_atomic_read_u64(clock_offset_us);
}

/* Set the offset (rl_debug_set_clock, or a restore) */
void
pgrl_clock_set_offset(int64 offset_us)
{
	pg_atomic_write_u64(clock_offset_us, (uint64) offset_us);
}

/* The limiter's current time */
TimestampTz
pgrl_now(void)
{
	if (!pgrl_enable_test_clock)
		return GetCurrentTimestamp();
	return GetCurrentTimestamp() + pgrl_clock_offset();
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
