/*-------------------------------------------------------------------------
 *
 * pg_ratelimit.h
 *		Value types and constants every layer of pg_ratelimit uses.
 *
 * Nothing here owns state: each module declares its own functions in its
 * own header, and keeps its shared memory to itself (src/README.md).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_RATELIMIT_H
#define PG_RATELIMIT_H

#include "common/int.h"
#include "datatype/timestamp.h"
#include "utils/numeric.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * The library's version, as META.json gives it: default_version of the
 * control file with a patch number (tools/check_packaging.py checks them)
 */
#define PGRL_LIBRARY_VERSION	"1.2.0"

/* Longest model, job type or instance name, in bytes, without the NUL */
#define RL_NAME_MAX_LEN			127

/* Room for a price or a running cost as a Numeric varlena */
#define RL_NUMERIC_BUF			64

/*
 * The window start of "no window yet".  No clock reaches it, unlike 0
 * (2000-01-01 00:00 UTC, a window like any other).
 */
#define RL_NO_WINDOW			DT_NOBEGIN

/* A Numeric kept inline in shared memory */
typedef union RlNumeric
{
	int32		align;			/* forces varlena alignment */
	char		data[RL_NUMERIC_BUF];
} RlNumeric;

/* Settled usage of one UTC day, for rl_usage */
typedef struct RlDayUsage
{
	TimestampTz day_start;		/* RL_NO_WINDOW when unused */
	int64		requests;		/* admitted */
	int64		input;			/* reported by releases */
	int64		output;
	int64		cached;
	int64		overage_events;
	int64		overage_tokens;
	RlNumeric	cost;			/* empty (size 0) means zero */
} RlDayUsage;

/* Keep a Numeric inline; false when it has too many digits to fit */
static inline bool
pgrl_numeric_store(RlNumeric *dest, Numeric value)
{
	if (VARSIZE(value) > RL_NUMERIC_BUF)
		return false;
	memcpy(dest->data, value, VARSIZE(value));
	return true;
}

/* A palloc'd copy of an inline Numeric; an empty buffer is zero */
static inline Numeric
pgrl_numeric_load(const RlNumeric *src)
{
	if (VARSIZE_ANY(src->data) == 0)
		return int64_to_numeric(0);
	return DatumGetNumericCopy(NumericGetDatum((Numeric) src->data));
}

/* Did anything happen on this day? */
static inline bool
pgrl_day_used(const RlDayUsage *day)
{
	return day->day_start != RL_NO_WINDOW &&
		(day->requests > 0 || day->input > 0 || day->output > 0 || day->cached > 0 ||
		 day->overage_events > 0);
}

/* An int64 counter that saturates instead of wrapping */
static inline int64
pgrl_add_saturating(int64 a, int64 b)
{
	int64		result;

	if (pg_add_s64_overflow(a, b, &result))
		return b > 0 ? PG_INT64_MAX : PG_INT64_MIN;
	return result;
}

#endif							/* PG_RATELIMIT_H */
