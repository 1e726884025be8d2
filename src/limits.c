/*-------------------------------------------------------------------------
 *
 * limits.c
 *		The arithmetic of limits: windows, the minimum over limits, exact
 *		shares of a limit.  No state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"

#include "limits.h"

const char *const pgrl_dimension_names[RL_NUM_LIMITED_BY] = {
	"rpd", "tpd", "rpm", "tpm", "itpm", "otpm", "concurrency", "job_type", "memory", "provider"
};

/* The length of a dimension's window; 0 for concurrency, which has none */
static int64
pgrl_window_length(RlDimension dim)
{
	if (dim == RL_DIM_CONCURRENCY)
		return 0;
	return pgrl_dimension_is_daily(dim) ? USECS_PER_DAY : USECS_PER_MINUTE;
}

/*
 * When the window of a dimension that started at window_start resets; 0
 * for concurrency, which only releases free.
 */
TimestampTz
pgrl_window_reset(TimestampTz window_start, RlDimension dim)
{
	if (dim == RL_DIM_CONCURRENCY)
		return 0;
	return pgrl_add_saturating(window_start, pgrl_window_length(dim));
}

const char *const pgrl_window_type_names[] = {"fixed", "bucket"};

/*
 * How much a bucket of capacity limit refills in elapsed_us, as a whole
 * number of units: it refills limit per window of the dimension.  carry
 * keeps the fraction of a unit (numerator over the window's length) from
 * one call to the next, so that refilling in many small steps gives what
 * one large step would.  Exact: the product needs 128 bits.
 */
int64
pgrl_refill(int64 limit, RlDimension dim, int64 elapsed_us, int64 *carry)
{
	int64		window = pgrl_window_length(dim);
	int64		product;
	int128		numerator;
	int128		whole;

	Assert(dim != RL_DIM_CONCURRENCY && limit >= 0 && elapsed_us >= 0);

	/*
	 * Calls come microseconds apart: in 64 bits, dividing by a constant, the
	 * hot path costs a multiplication, not a 128-bit division
	 */
	if (!pg_mul_s64_overflow(limit, elapsed_us, &product) &&
		!pg_add_s64_overflow(product, *carry, &product))
	{
		int64		whole64;

		if (pgrl_dimension_is_daily(dim))
		{
			whole64 = product / USECS_PER_DAY;
			*carry = product % USECS_PER_DAY;
		}
		else
		{
			whole64 = product / USECS_PER_MINUTE;
			*carry = product % USECS_PER_MINUTE;
		}
		return whole64;
	}
	numerator = (int128) limit * elapsed_us + *carry;
	whole = numerator / window;
	*carry = (int64) (numerator % window);
	return whole > PG_INT64_MAX ? PG_INT64_MAX : (int64) whole;
}

/*
 * How long until a bucket of capacity limit (limit > 0) has refilled
 * amount units, given the carried fraction: the least t with
 * floor((limit * t + carry) / window) >= amount.
 */
int64
pgrl_refill_time(int64 limit, RlDimension dim, int64 amount, int64 carry)
{
	int64		window = pgrl_window_length(dim);
	int128		needed;
	int128		t;

	Assert(dim != RL_DIM_CONCURRENCY && limit > 0);
	if (amount <= 0)
		return 0;
	needed = (int128) amount * window - carry;
	t = (needed + limit - 1) / limit;
	return t > PG_INT64_MAX ? PG_INT64_MAX : (int64) t;
}

/*
 * The dimension with the fewest slots (slots[d] < 0: not limited), or -1.
 * Dimensions come longest window first: a tie keeps the earlier.
 */
int
pgrl_min_dimension(const int64 *slots)
{
	int			min_dim = -1;

	for (int d = 0; d < RL_NUM_DIMS; d++)
		if (slots[d] >= 0 && (min_dim < 0 || slots[d] < slots[min_dim]))
			min_dim = d;
	return min_dim;
}

/*
 * How many requests of this size fit in room (per dimension; RL_UNLIMITED
 * where nothing limits): the minimum over the limits of floor(room /
 * amount), ties toward the longer window.  Sets *limited_by to the
 * dimension that decides; -1 (and returns -1) when no limit applies.
 */
int64
pgrl_fit(const int64 *room, int64 tokens, int64 output, int32 requests, int *limited_by)
{
	int64		slots[RL_NUM_DIMS];

	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		amount = pgrl_dimension_amount(d, tokens, output, requests);

		slots[d] = room[d] == RL_UNLIMITED || amount <= 0 ? -1 :
			Max(room[d], 0) / amount;
	}
	*limited_by = pgrl_min_dimension(slots);
	return *limited_by < 0 ? -1 : slots[*limited_by];
}

#ifndef HAVE_INT128
#error "pg_ratelimit needs a 128-bit integer type for exact shares"
#endif
/* Significant digits a ratio is read with: float8's DBL_DIG */
#define RL_RATIO_DIGITS			15

/* Ratios whose exact value a backend keeps */
#define RL_RATIO_CACHE_SIZE		16

/*
 * A ratio as the exact decimal it stands for: numerator / 10^exponent, the
 * numerator at most 15 digits
 */
typedef struct RlExactRatio
{
	int64		numerator;
	int			exponent;
	uint128		divisor;		/* 10^exponent, when exponent <= 38 */
} RlExactRatio;

/*
 * The decimal a positive, finite ratio stands for: its float8 rounded to 15
 * significant digits, which is what PostgreSQL's float8-to-numeric cast
 * gives.  Ratios are float8 and users write decimals: 0.29 is stored a hair
 * below 0.29, yet 100 x 0.29 must give 29, and the float noise of a ratio
 * the worker moved (0.25 - 0.2 = 0.04999999999999999) must not count.
 */
static void
pgrl_exact_ratio(double ratio, RlExactRatio *exact)
{
	char		buf[64];
	char	   *p = buf;
	int64		numerator = 0;
	int			exp10;

	/* d.dddddddddddddde[+-]x: 15 significant digits, correctly rounded */
	snprintf(buf, sizeof(buf), "%.*e", RL_RATIO_DIGITS - 1, ratio);
	for (; *p != 'e' && *p != '\0'; p++)
		if (*p >= '0' && *p <= '9')
			numerator = numerator * 10 + (*p - '0');
	exp10 = *p == 'e' ? atoi(p + 1) : 0;
	/* value = numerator x 10^(exp10 - 14); drop trailing zeros first */
	exact->exponent = RL_RATIO_DIGITS - 1 - exp10;
	while (numerator != 0 && numerator % 10 == 0 && exact->exponent > 0)
	{
		numerator /= 10;
		exact->exponent--;
	}
	exact->numerator = numerator;
	exact->divisor = 1;
	for (int i = 0; i < exact->exponent && i < 38; i++)
		exact->divisor *= 10;
}

/*
 * floor(limit x ratio), exact in integers for every bigint limit, with the
 * ratio read as pgrl_exact_ratio says; 0 for a limit or a ratio that is not
 * positive, PG_INT64_MAX when the product is larger.
 */
int64
pgrl_share_of(int64 limit, double ratio)
{
	/*
	 * Callers ask with the same few ratios again and again (one per job
	 * type): keep the last ones, by the ratio's bits.
	 */
	static double cached_ratios[RL_RATIO_CACHE_SIZE];
	static RlExactRatio cached[RL_RATIO_CACHE_SIZE];
	uint64		bits;
	int			entry;
	uint128		product;

	if (limit <= 0 || !(ratio > 0))
		return 0;
	if (ratio >= 1e6)
		return PG_INT64_MAX;
	memcpy(&bits, &ratio, sizeof(bits));
	entry = (int) ((bits ^ (bits >> 17) ^ (bits >> 41)) % RL_RATIO_CACHE_SIZE);
	if (cached_ratios[entry] != ratio)
	{
		pgrl_exact_ratio(ratio, &cached[entry]);
		cached_ratios[entry] = ratio;
	}

	/* below 10^-24: less than one of any limit */
	if (cached[entry].exponent > 38)
		return 0;
	/* limit < 2^63 and the numerator < 10^15 < 2^50: it fits in 113 bits */
	product = (uint128) limit * (uint64) cached[entry].numerator / cached[entry].divisor;
	return product > (uint128) PG_INT64_MAX ? PG_INT64_MAX : (int64) product;
}


/*
 * How many requests of this size fit in ratio of each of the given limits
 * (a model's, or one instance's part of them): pgrl_fit over
 * floor(limit x ratio).
 */
int64
pgrl_ratio_fit(const int64 *limits, double ratio, int64 tokens, int64 output,
			   int32 requests, int *limited_by)
{
	int64		room[RL_NUM_DIMS];

	for (int d = 0; d < RL_NUM_DIMS; d++)
		room[d] = limits[d] == RL_UNLIMITED ? RL_UNLIMITED : pgrl_share_of(limits[d], ratio);
	return pgrl_fit(room, tokens, output, requests, limited_by);
}
