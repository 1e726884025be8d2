/*-------------------------------------------------------------------------
 *
 * share.c
 *		Job types' shares of each model: the counters behind them, flexible
 *		ratios, and the rl_job_status view.
 *
 * Every (model, job type) pair has an RlShare in a matrix sized at server
 * start (ratelimit.max_models x ratelimit.max_job_types).  A job type J with
 * ratio r may use floor(limit x r) of each limit of a model, on top of the
 * model's own limits, and may always start ratelimit.min_job_type_slots jobs
 * per window and have that many in flight.  The ratio comes from the
 * configuration (an explicit ratio, or an equal part of what the explicit
 * ones leave); a flexible job type's ratio on a model then moves with load:
 * the background worker moves it every ratelimit.ratio_interval and after
 * every 10 releases on the model.
 *
 * Locking: an RlShare belongs to its model and is protected by the model's
 * lock; its windows are the model's, rolled with it.  Its waiter count is
 * an atomic.  Configuration changes rewrite ratios under config_lock
 * (exclusive) and then each model's lock; the worker moves ratios under
 * config_lock (shared) and the model's lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "admission.h"
#include "pg_ratelimit.h"
#include "share.h"
#include "wait.h"

PG_FUNCTION_INFO_V1(rl_job_status_internal);

/* Releases on a model after which its flexible ratios are looked at */
#define RL_RELEASES_PER_ADJUSTMENT	10

/*
 * But not more often than this: at tens of thousands of releases a second,
 * one adjustment per 10 releases would keep the worker busy on a core.
 */
#define RL_MIN_ADJUSTMENT_GAP_US	(100 * 1000)

/* The donor and receiver rule of flexible ratios */
#define RL_DONOR_LOAD			0.3
#define RL_RECEIVER_LOAD		0.7
#define RL_MIN_RATIO			0.01
#define RL_MAX_DONATION			0.2

RlShare *
pgrl_share(int model_slot, int job_type_slot)
{
	Assert(model_slot >= 0 && model_slot < pgrl_max_models);
	Assert(job_type_slot >= 0 && job_type_slot < pgrl_max_job_types);
	return &pgrl_shares[(Size) model_slot * pgrl_max_job_types + job_type_slot];
}

/*
 * The share of a lease's job type on its model, or NULL when the lease has
 * no job type or its job type was dropped (or re-created) since.  Caller
 * holds the model's lock and has checked the model's generation.
 */
RlShare *
pgrl_lease_share(const RlLease *lease)
{
	RlShare    *share;

	if (lease->job_type_slot < 0)
		return NULL;
	share = pgrl_share(lease->model_slot, lease->job_type_slot);
	if (share->job_type_generation != lease->job_type_generation ||
		share->model_generation != lease->model_generation)
		return NULL;
	return share;
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

/* What the share still admits; caller holds the model's lock */
void
pgrl_share_room(const RlModel *model, const RlShare *share, RlShareRoom *room)
{
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		jobs;

		if (model->limit[d] == RL_UNLIMITED)
		{
			room->room[d] = PG_INT64_MAX;
			room->guaranteed[d] = PG_INT64_MAX;
			continue;
		}
		room->room[d] = pgrl_share_of(model->limit[d], share->ratio) - share->used[d];
		jobs = d == RL_DIM_CONCURRENCY ? share->used[d] :
			pgrl_dimension_is_daily(d) ? share->jobs_day : share->jobs_minute;
		room->guaranteed[d] = Max(0, pgrl_min_job_type_slots - jobs);
	}
}

/* The first dimension (in blocks-longest order) the share refuses, or -1 */
int
pgrl_share_blocking(const RlShareRoom *room, int64 tokens, int32 requests)
{
	for (int d = 0; d < RL_NUM_DIMS; d++)
		if (pgrl_dimension_amount(d, tokens, requests) > room->room[d] &&
			room->guaranteed[d] < 1)
			return d;
	return -1;
}

/* Set a request's part of the room aside */
void
pgrl_share_take(RlShareRoom *room, int64 tokens, int32 requests)
{
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		if (room->room[d] != PG_INT64_MAX)
			room->room[d] -= pgrl_dimension_amount(d, tokens, requests);
		if (room->guaranteed[d] != PG_INT64_MAX)
			room->guaranteed[d]--;
	}
}

/*
 * The share's usage of the model's current day.  A share that had no day
 * yet (new, or restored without a saved row) takes the model's.  Caller
 * holds the model's lock and has rolled its windows.
 */
RlDayUsage *
pgrl_share_usage(RlShare *share, const RlModel *model)
{
	if (share->usage.day_start == RL_NO_WINDOW)
		share->usage.day_start = model->day_start;
	return &share->usage;
}

/* Count a granted request; caller holds the model's lock */
void
pgrl_share_grant(RlShare *share, const RlModel *model, int64 tokens, int32 requests)
{
	RlDayUsage *usage = pgrl_share_usage(share, model);

	for (int d = 0; d < RL_NUM_DIMS; d++)
		share->used[d] = pgrl_add_saturating(share->used[d],
										   pgrl_dimension_amount(d, tokens, requests));
	share->jobs_minute++;
	share->jobs_day++;
	share->granted++;
	usage->requests = pgrl_add_saturating(usage->requests, requests);
	share->version++;
}

/*
 * An attempt of the job type was refused: load, for flexible ratios.  Caller
 * holds the model's lock.
 */
void
pgrl_share_denied(RlShare *share)
{
	share->denied_recently = true;
}

/* Count a refused call in the share's total; caller holds the model's lock */
void
pgrl_share_count_denial(RlShare *share)
{
	share->denied++;
	share->version++;
}

/*
 * New windows for every share of a model: a new minute, and a new day when
 * new_day is not RL_NO_WINDOW.  Caller holds the model's lock.
 */
void
pgrl_roll_share_windows(int model_slot, bool minute, TimestampTz new_day)
{
	bool		day = new_day != RL_NO_WINDOW;

	for (int j = 0; j < pgrl_max_job_types; j++)
	{
		RlShare    *share = pgrl_share(model_slot, j);

		/* most shares of most models are idle: leave them as they are */
		if (minute && (share->jobs_minute != 0 || share->used[RL_DIM_RPM] != 0 ||
					   share->used[RL_DIM_TPM] != 0))
		{
			share->used[RL_DIM_RPM] = 0;
			share->used[RL_DIM_TPM] = 0;
			share->jobs_minute = 0;
			share->version++;
		}
		if (day && (share->jobs_day != 0 || share->used[RL_DIM_RPD] != 0 ||
					share->used[RL_DIM_TPD] != 0))
		{
			share->used[RL_DIM_RPD] = 0;
			share->used[RL_DIM_TPD] = 0;
			share->jobs_day = 0;
			share->version++;
		}
		/* a denial in an ended window is no longer load */
		if (minute)
			share->denied_recently = false;
		if (day)
		{
			/* keep the ended day's usage until the worker has persisted it */
			if (pgrl_day_used(&share->usage))
			{
				share->usage_ended = share->usage;
				share->version++;
			}
			memset(&share->usage, 0, sizeof(share->usage));
			share->usage.day_start = new_day;
		}
	}
}

/*
 * Bring every share in line with the configuration just applied: counters
 * of a new model or job type start at zero, and each job type's ratio is
 * its explicit ratio or an equal part of what the explicit ones leave.
 * When any configured ratio of a model changed, every ratio in force on it
 * returns to the configured one (flexible moves start over).  Caller holds
 * config_lock exclusively.
 */
void
pgrl_apply_share_config(void)
{
	double		explicit_sum = 0;
	int			num_implicit = 0;
	double		implicit_ratio = 0;

	for (int j = 0; j < pgrl_max_job_types; j++)
	{
		if (!pgrl_job_types[j].in_use)
			continue;
		if (pgrl_job_types[j].ratio >= 0)
			explicit_sum += pgrl_job_types[j].ratio;
		else
			num_implicit++;
	}
	if (num_implicit > 0)
		implicit_ratio = Max(0.0, 1.0 - explicit_sum) / num_implicit;
	for (int j = 0; j < pgrl_max_job_types; j++)
		if (pgrl_job_types[j].in_use)
			pgrl_job_types[j].base_ratio = pgrl_job_types[j].ratio >= 0 ?
				pgrl_job_types[j].ratio : implicit_ratio;

	for (int m = 0; m < pgrl_max_models; m++)
	{
		RlModel    *model = &pgrl_models[m];
		bool		ratios_changed = false;

		if (!model->in_use)
			continue;
		LWLockAcquire(&model->lock, LW_EXCLUSIVE);
		for (int j = 0; j < pgrl_max_job_types; j++)
		{
			RlJobType  *job_type = &pgrl_job_types[j];
			RlShare    *share = pgrl_share(m, j);
			double		base = job_type->base_ratio;

			if (!job_type->in_use)
				continue;
			if (share->model_generation != model->generation ||
				share->job_type_generation != job_type->generation)
			{
				uint32		waiters = pg_atomic_read_u32(&share->num_waiters);
				uint64		version = share->version;

				memset(share, 0, sizeof(*share));
				pg_atomic_init_u32(&share->num_waiters, waiters);
				share->version = version + 1;
				share->usage.day_start = model->day_start;
				share->model_generation = model->generation;
				share->job_type_generation = job_type->generation;
				share->base_ratio = -1;
			}
			if (share->base_ratio != base || share->flexible != job_type->flexible)
				ratios_changed = true;
			share->base_ratio = base;
			share->flexible = job_type->flexible;
		}
		if (ratios_changed)
		{
			for (int j = 0; j < pgrl_max_job_types; j++)
				if (pgrl_job_types[j].in_use)
				{
					pgrl_share(m, j)->ratio = pgrl_share(m, j)->base_ratio;
					pgrl_share(m, j)->version++;
				}
			model->version++;
			pg_atomic_fetch_add_u64(&pgrl_state->ratio_version, 1);
		}
		LWLockRelease(&model->lock);
	}
}

/*
 * A release on a model: every RL_RELEASES_PER_ADJUSTMENT of them, ask the
 * worker to look at its flexible ratios.  Caller holds the model's lock;
 * returns whether the worker needs waking now (else it finds the request
 * when the gap since the last adjustment is over).
 */
bool
pgrl_note_share_release(RlModel *model)
{
	if (++model->releases_since_ratio_change < RL_RELEASES_PER_ADJUSTMENT ||
		model->ratio_adjust_due)
		return false;
	model->releases_since_ratio_change = 0;
	model->ratio_adjust_due = true;
	return GetCurrentTimestamp() >= pgrl_ratio_adjust_allowed_at(model);
}

/* The earliest real time the model's ratios may move again */
TimestampTz
pgrl_ratio_adjust_allowed_at(const RlModel *model)
{
	return model->ratios_adjusted_at + RL_MIN_ADJUSTMENT_GAP_US;
}

/*
 * How loaded a share is: the highest used / share over the model's limits;
 * 1 when the job type has waiters or was refused since the last adjustment.
 */
static double
pgrl_share_load(const RlModel *model, int job_type_slot)
{
	int			model_slot = model - pgrl_models;
	RlShare    *share = pgrl_share(model_slot, job_type_slot);
	double		load = 0;

	if (share->denied_recently || pgrl_share_has_waiters(model_slot, job_type_slot))
		return 1.0;
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		size;

		if (model->limit[d] == RL_UNLIMITED)
			continue;
		size = pgrl_share_of(model->limit[d], share->ratio);
		if (size > 0)
			load = Max(load, (double) share->used[d] / size);
		else if (share->used[d] > 0)
			load = 1.0;
	}
	return Min(load, 1.0);
}

/*
 * Move the flexible ratios of one model with load.  A flexible job type
 * with load under 0.3 gives min(ratio - 0.01, 0.2) x (1 - load); flexible
 * job types with load over 0.7 receive what was given in proportion to
 * their load.  Fixed ratios never move and are never lent.  Returns whether
 * any ratio moved (then the model's waiters must look again).  Caller holds
 * config_lock (shared).
 */
bool
pgrl_adjust_ratios(int model_slot, TimestampTz now)
{
	RlModel    *model = &pgrl_models[model_slot];
	double	   *loads = palloc(sizeof(double) * pgrl_max_job_types);
	double		given = 0;
	double		receiving_load = 0;
	bool		moved = false;

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	model->ratio_adjust_due = false;
	model->releases_since_ratio_change = 0;
	model->ratios_adjusted_at = GetCurrentTimestamp();
	pgrl_roll_windows(model, now);
	for (int j = 0; j < pgrl_max_job_types; j++)
	{
		RlShare    *share = pgrl_share(model_slot, j);

		loads[j] = -1;
		if (!pgrl_job_types[j].in_use || !share->flexible ||
			share->job_type_generation != pgrl_job_types[j].generation)
			continue;
		loads[j] = pgrl_share_load(model, j);
		if (loads[j] < RL_DONOR_LOAD && share->ratio > RL_MIN_RATIO)
			given += Min(share->ratio - RL_MIN_RATIO, RL_MAX_DONATION) * (1 - loads[j]);
		else if (loads[j] > RL_RECEIVER_LOAD)
			receiving_load += loads[j];
	}
	if (given > 0 && receiving_load > 0)
	{
		for (int j = 0; j < pgrl_max_job_types; j++)
		{
			RlShare    *share = pgrl_share(model_slot, j);

			if (loads[j] < 0)
				continue;
			if (loads[j] < RL_DONOR_LOAD && share->ratio > RL_MIN_RATIO)
				share->ratio -= Min(share->ratio - RL_MIN_RATIO, RL_MAX_DONATION) * (1 - loads[j]);
			else if (loads[j] > RL_RECEIVER_LOAD)
				share->ratio += given * loads[j] / receiving_load;
			else
				continue;
			share->version++;
		}
		moved = true;
		model->version++;
		pg_atomic_fetch_add_u64(&pgrl_state->ratio_version, 1);
	}
	for (int j = 0; j < pgrl_max_job_types; j++)
		pgrl_share(model_slot, j)->denied_recently = false;
	LWLockRelease(&model->lock);
	pfree(loads);
	return moved;
}

/*
 * How many jobs of the job type's estimated size fit in ratio of each of
 * the given limits (a model's, or one instance's part of them): the minimum
 * over the limits of floor(floor(limit x ratio) / estimate), ties toward
 * the longer window.  Sets *limited_by to the dimension that decides, or -1
 * (and returns -1) when no limit applies to the estimate.
 */
int64
pgrl_job_type_fit(const int64 *limits, const RlJobType *job_type, double ratio,
				int *limited_by)
{
	int64		slots = -1;

	*limited_by = -1;
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		estimate = pgrl_dimension_amount(d, job_type->est_tokens,
												   job_type->est_requests);
		int64		fit;

		if (limits[d] == RL_UNLIMITED || estimate <= 0)
			continue;
		fit = pgrl_share_of(limits[d], ratio) / estimate;
		/* dimensions come longest window first: a tie keeps the earlier */
		if (slots < 0 || fit < slots)
		{
			slots = fit;
			*limited_by = d;
		}
	}
	return slots;
}

/*
 * How many jobs of the job type's estimated size its whole share holds,
 * at least ratelimit.min_job_type_slots; -1 when no limit applies.
 */
static int64
pgrl_share_slots(const RlModel *model, const RlShare *share, const RlJobType *job_type,
			   int *limited_by)
{
	int64		slots = pgrl_job_type_fit(model->limit, job_type, share->ratio, limited_by);

	if (slots >= 0)
		slots = Max(slots, (int64) pgrl_min_job_type_slots);
	return slots;
}

/*
 * rl_job_status_internal(): one row per (model, job type), behind the
 * rl_job_status view.
 */
Datum
rl_job_status_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now;
	TimestampTz minute_start;
	TimestampTz day_start;

	pgrl_require_ready();
	InitMaterializedSRF(fcinfo, 0);
	now = pgrl_now();
	minute_start = pgrl_window_start(now, USECS_PER_MINUTE);
	day_start = pgrl_window_start(now, USECS_PER_DAY);

	LWLockAcquire(&pgrl_state->config_lock, LW_SHARED);
	for (int m = 0; m < pgrl_max_models; m++)
	{
		RlModel    *model = &pgrl_models[m];

		if (!model->in_use)
			continue;
		LWLockAcquire(&model->lock, LW_SHARED);
		for (int j = 0; j < pgrl_max_job_types; j++)
		{
			RlJobType  *job_type = &pgrl_job_types[j];
			RlShare    *share = pgrl_share(m, j);
			/* a window ahead of the clock (it stepped back) is current */
			bool		minute_current = model->minute_start >= minute_start;
			bool		day_current = model->day_start >= day_start;
			Datum		values[20];
			bool		nulls[20];
			int			col = 0;
			int64		slots;
			int			limited_by;

			if (!job_type->in_use || share->job_type_generation != job_type->generation)
				continue;
			memset(nulls, 0, sizeof(nulls));
			values[col++] = CStringGetTextDatum(model->name);
			values[col++] = CStringGetTextDatum(job_type->name);
			values[col++] = Float8GetDatum(share->ratio);
			values[col++] = Float8GetDatum(share->base_ratio);
			values[col++] = BoolGetDatum(share->flexible);
			slots = pgrl_share_slots(model, share, job_type, &limited_by);
			values[col] = Int64GetDatum(slots);
			nulls[col++] = slots < 0;
			values[col] = limited_by >= 0 ? CStringGetTextDatum(pgrl_dimension_names[limited_by]) : (Datum) 0;
			nulls[col++] = limited_by < 0;
			values[col++] = Int64GetDatum(share->used[RL_DIM_CONCURRENCY]);
			values[col++] = Int32GetDatum((int32) pg_atomic_read_u32(&share->num_waiters));
			/* rpm, tpm, rpd, tpd: the share of the limit, and what is used of it */
			for (int k = 0; k < 4; k++)
			{
				static const RlDimension order[] = {RL_DIM_RPM, RL_DIM_TPM, RL_DIM_RPD, RL_DIM_TPD};
				RlDimension d = order[k];
				bool		current = pgrl_dimension_is_daily(d) ? day_current : minute_current;

				values[col] = Int64GetDatum(pgrl_share_of(model->limit[d], share->ratio));
				nulls[col++] = model->limit[d] == RL_UNLIMITED;
				values[col++] = Int64GetDatum(current ? share->used[d] : 0);
			}
			values[col] = Int64GetDatum(pgrl_share_of(model->limit[RL_DIM_CONCURRENCY], share->ratio));
			nulls[col++] = model->limit[RL_DIM_CONCURRENCY] == RL_UNLIMITED;
			values[col++] = Int64GetDatum(share->granted);
			values[col++] = Int64GetDatum(share->denied);
			Assert(col == lengthof(values));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		LWLockRelease(&model->lock);
	}
	LWLockRelease(&pgrl_state->config_lock);
	return (Datum) 0;
}
