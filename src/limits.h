/*-------------------------------------------------------------------------
 *
 * limits.h
 *		The five limits of a model, and the arithmetic over them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_LIMITS_H
#define RL_LIMITS_H

#include "pg_ratelimit.h"

/*
 * The seven limits of a model.  The order is the order of "blocks longest":
 * when several limits refuse a request, the first in this order is reported
 * as limited_by, and capacity ties are resolved toward it.  itpm and otpm
 * count a request's input and output tokens apart (tpm counts both).
 */
typedef enum RlDimension
{
	RL_DIM_RPD = 0,
	RL_DIM_TPD,
	RL_DIM_RPM,
	RL_DIM_TPM,
	RL_DIM_ITPM,
	RL_DIM_OTPM,
	RL_DIM_CONCURRENCY,
	RL_NUM_DIMS
} RlDimension;

/* limited_by of a request refused by its job type's share, not a limit */
#define RL_LIMITED_BY_JOB_TYPE	RL_NUM_DIMS

/* limited_by of a request refused by its instance's memory */
#define RL_LIMITED_BY_MEMORY	(RL_NUM_DIMS + 1)

/* limited_by of a request refused while the provider asked for a pause */
#define RL_LIMITED_BY_PROVIDER	(RL_NUM_DIMS + 2)

/* How many limited_by values a refusal can have (rl_stats counts each) */
#define RL_NUM_LIMITED_BY		(RL_NUM_DIMS + 3)

/* "Not limited" in a limit slot, or in the room a limit leaves */
#define RL_UNLIMITED			(-1)

/* Indexed by RlDimension, then RL_LIMITED_BY_JOB_TYPE, _MEMORY, _PROVIDER */
extern const char *const pgrl_dimension_names[RL_NUM_LIMITED_BY];

/* Does this dimension count in the day window (else minute, or none)? */
static inline bool
pgrl_dimension_is_daily(RlDimension dim)
{
	return dim == RL_DIM_RPD || dim == RL_DIM_TPD;
}

/*
 * How much of a dimension a request of this size consumes: tokens in all,
 * of which output are output tokens (the rest input), and requests.
 */
static inline int64
pgrl_dimension_amount(RlDimension dim, int64 tokens, int64 output, int32 requests)
{
	switch (dim)
	{
		case RL_DIM_RPD:
		case RL_DIM_RPM:
			return requests;
		case RL_DIM_TPD:
		case RL_DIM_TPM:
			return tokens;
		case RL_DIM_ITPM:
			return tokens - output;
		case RL_DIM_OTPM:
			return output;
		default:
			return 1;
	}
}

/*
 * How a model's rate limits count (rl_model.window_type).  Fixed: in UTC
 * minutes and days, reset at each boundary.  Bucket: each limit L is a
 * bucket of capacity L that refills continuously at L per window (minute
 * or day); a model's usage of the dimension is then what the bucket lacks
 * to be full, which shrinks as it refills.
 */
typedef enum RlWindowType
{
	RL_WINDOW_FIXED = 0,
	RL_WINDOW_BUCKET
} RlWindowType;

extern const char *const pgrl_window_type_names[];

extern TimestampTz pgrl_window_reset(TimestampTz window_start, RlDimension dim);
extern int64 pgrl_refill(int64 limit, RlDimension dim, int64 elapsed_us, int64 *carry);
extern int64 pgrl_refill_time(int64 limit, RlDimension dim, int64 amount, int64 carry);
extern int	pgrl_min_dimension(const int64 *slots);
extern int64 pgrl_fit(const int64 *room, int64 tokens, int64 output, int32 requests,
					  int *limited_by);
extern int64 pgrl_share_of(int64 limit, double ratio);
extern int64 pgrl_ratio_fit(const int64 *limits, double ratio, int64 tokens, int64 output,
							int32 requests, int *limited_by);

#endif							/* RL_LIMITS_H */
