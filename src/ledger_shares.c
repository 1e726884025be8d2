/*-------------------------------------------------------------------------
 *
 * ledger_shares.c
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
 * lock; its windows are the model's, rolled with it.  Its waiters are
 * counted in wait.c.  Configuration changes rewrite ratios under
 * config_lock (exclusive) and then each model's lock; the worker moves
 * ratios under config_lock (shared) and the model's lock.  Part of the
 * ledger (ledger.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "clock.h"
#include "ledger_internal.h"
#include "settings.h"
#include "wait.h"

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

/* The model x job type matrix of shares */
static RlShare *shares = NULL;

/*
 * Room for the claims of older waiters and for the share rooms of other
 * job types (pgrl_claim_for_older_waiters), allocated once per backend
 * before any lock is taken (pgrl_shares_prepare)
 */
static RlClaim *claims = NULL;
static RlShareRoom *other_rooms = NULL;
static bool *other_room_known = NULL;
static double *loads = NULL;

Size
pgrl_shares_shmem_size(void)
{
	return mul_size(mul_size(pgrl_max_models, pgrl_max_job_types), sizeof(RlShare));
}

/* Create or attach; caller holds AddinShmemInitLock */
void
pgrl_shares_shmem_init(void)
{
	bool		found;

	shares = ShmemInitStruct("pg_ratelimit job type shares", pgrl_shares_shmem_size(), &found);
	if (!found)
		memset(shares, 0, pgrl_shares_shmem_size());
}

/* Allocate this backend's scratch space; call before taking a model lock */
void
pgrl_shares_prepare(void)
{
	if (claims != NULL)
		return;
	claims = pgrl_claim_buffer();
	other_rooms = MemoryContextAlloc(TopMemoryContext, sizeof(RlShareRoom) * pgrl_max_job_types);
	other_room_known = MemoryContextAlloc(TopMemoryContext, sizeof(bool) * pgrl_max_job_types);
	loads = MemoryContextAlloc(TopMemoryContext, sizeof(double) * pgrl_max_job_types);
}

RlShare *
pgrl_share(int model_slot, int job_type_slot)
{
	Assert(model_slot >= 0 && model_slot < pgrl_max_models);
	Assert(job_type_slot >= 0 && job_type_slot < pgrl_max_job_types);
	return &shares[(Size) model_slot * pgrl_max_job_types + job_type_slot];
}

/*
 * The share of a request's job type on a model, or NULL when it has none.
 * Caller holds config_lock, so the job type in the request is current.
 */
RlShare *
pgrl_request_share(int model_slot, const RlRequest *request)
{
	return request->job_type_slot >= 0 ? pgrl_share(model_slot, request->job_type_slot) : NULL;
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

	AssertModelLocked(&pgrl_models[lease->model_slot], LW_SHARED);
	if (lease->job_type_slot < 0)
		return NULL;
	share = pgrl_share(lease->model_slot, lease->job_type_slot);
	if (share->job_type_generation != lease->job_type_generation ||
		share->model_generation != lease->model_generation)
		return NULL;
	return share;
}

/*
 * A share's part of a limit the model has: also the capacity of its bucket
 * (and what refills it) on a bucket model.
 */
int64
pgrl_share_limit(const RlModel *model, const RlShare *share, RlDimension dim)
{
	return pgrl_share_of(model->limit[dim], share->ratio);
}

/* What the share still admits; caller holds the model's lock */
void
pgrl_share_room(const RlModel *model, const RlShare *share, RlShareRoom *room)
{
	AssertModelLocked(model, LW_SHARED);
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		jobs;

		if (model->limit[d] == RL_UNLIMITED)
		{
			room->room[d] = PG_INT64_MAX;
			room->guaranteed[d] = PG_INT64_MAX;
			continue;
		}
		room->room[d] = pgrl_share_limit(model, share, d) - share->used[d];
		jobs = d == RL_DIM_CONCURRENCY ? share->used[d] :
			pgrl_dimension_is_daily(d) ? share->jobs_day : share->jobs_minute;
		room->guaranteed[d] = Max(0, pgrl_min_job_type_slots - jobs);
	}
}

/* The first dimension (in blocks-longest order) the share refuses, or -1 */
int
pgrl_share_blocking(const RlShareRoom *room, int64 tokens, int64 output, int32 requests)
{
	for (int d = 0; d < RL_NUM_DIMS; d++)
		if (pgrl_dimension_amount(d, tokens, output, requests) > room->room[d] &&
			room->guaranteed[d] < 1)
			return d;
	return -1;
}

/* Set a request's part of the room aside */
static void
pgrl_share_take(RlShareRoom *room, int64 tokens, int64 output, int32 requests)
{
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		if (room->room[d] != PG_INT64_MAX)
			room->room[d] -= pgrl_dimension_amount(d, tokens, output, requests);
		if (room->guaranteed[d] != PG_INT64_MAX)
			room->guaranteed[d]--;
	}
}

/* Count a granted request; caller holds the model's lock */
void
pgrl_share_grant(RlShare *share, RlModel *model, int64 tokens, int64 output,
				 int32 requests)
{
	RlDayUsage *usage = &share->usage;

	AssertModelLocked(model, LW_EXCLUSIVE);
	AssertShareDay(share, model);
	model->shares_idle = false;
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		amount = pgrl_dimension_amount(d, tokens, output, requests);
		int64		used = pgrl_add_saturating(share->used[d], amount);

		/*
		 * A job the guarantee (min_job_type_slots) admits past an empty share
		 * bucket leaves it one job below empty at most: a share that rounds
		 * to nothing would otherwise never refill what such jobs took
		 */
		if (pgrl_is_bucket(model, d))
			used = Max(share->used[d],
					   Min(used, pgrl_add_saturating(Max(pgrl_share_limit(model, share, d), 0),
													 amount)));
		share->used[d] = used;
	}
	share->jobs_minute++;
	share->jobs_day++;
	share->granted++;
	usage->requests = pgrl_add_saturating(usage->requests, requests);
	share->version++;
}

/* Does a share use any of its rate limits of the day (else the minute)? */
static inline bool
pgrl_share_rates_used(const RlShare *share, bool daily)
{
	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
		if (pgrl_dimension_is_daily(d) == daily && share->used[d] != 0)
			return true;
	return false;
}

/*
 * New windows for every share of a model: a new minute, and a new day when
 * new_day is not RL_NO_WINDOW.  Caller holds the model's lock.
 */
void
pgrl_roll_share_windows(RlModel *model, bool minute, TimestampTz new_day)
{
	int			model_slot = model - pgrl_models;
	bool		day = new_day != RL_NO_WINDOW;

	AssertModelLocked(model, LW_EXCLUSIVE);
	for (int j = 0; j < pgrl_max_job_types; j++)
	{
		RlShare    *share = pgrl_share(model_slot, j);

		/*
		 * Most shares of most models are idle: leave them as they are.  A
		 * bucket limit's usage refills instead (pgrl_refill_shares).
		 */
		if (minute && (share->jobs_minute != 0 || pgrl_share_rates_used(share, false)))
		{
			for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
				if (!pgrl_dimension_is_daily(d) && !pgrl_is_bucket(model, d))
					share->used[d] = 0;
			share->jobs_minute = 0;
			share->version++;
		}
		if (day && (share->jobs_day != 0 || pgrl_share_rates_used(share, true)))
		{
			for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
				if (pgrl_dimension_is_daily(d) && !pgrl_is_bucket(model, d))
					share->used[d] = 0;
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
 * Refill the buckets of every share of a bucket model by what elapsed_us
 * gives each: its share of the limit per window, so that every share
 * refills in proportion to its ratio.  Caller holds the model's lock
 * exclusively (pgrl_roll_windows).
 */
void
pgrl_refill_shares(RlModel *model, int64 elapsed_us)
{
	int			model_slot = model - pgrl_models;
	bool		idle = true;

	AssertModelLocked(model, LW_EXCLUSIVE);
	/* a model without job types in use: nothing to look at on the hot path */
	if (model->shares_idle)
		return;
	for (int j = 0; j < pgrl_max_job_types; j++)
	{
		RlShare    *share = pgrl_share(model_slot, j);

		/* most shares are full (unused): nothing to refill, nothing to carry */
		if (!pgrl_share_rates_used(share, false) && !pgrl_share_rates_used(share, true))
		{
			memset(share->refill_carry, 0, sizeof(share->refill_carry));
			continue;
		}
		idle = false;
		for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
			if (pgrl_is_bucket(model, d))
				pgrl_refill_bucket(&share->used[d], &share->refill_carry[d],
								   pgrl_share_limit(model, share, d), d, elapsed_us);
	}
	model->shares_idle = idle;
}

/*
 * Bring every share in line with the job types just applied (catalog.c):
 * counters of a new model or job type start at zero, on the model's
 * current day.  When any configured ratio of a model changed, every ratio
 * in force on it returns to the configured one (flexible moves start
 * over).  Caller holds config_lock exclusively.
 */
void
pgrl_ledger_apply_shares(void)
{
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	for (int m = 0; m < pgrl_max_models; m++)
	{
		RlModel    *model = &pgrl_models[m];
		bool		ratios_changed = false;

		if (!model->in_use)
			continue;
		LWLockAcquire(&model->lock, LW_EXCLUSIVE);
		model->shares_idle = false;
		for (int j = 0; j < pgrl_max_job_types; j++)
		{
			const RlJobType *job_type = pgrl_job_type(j);
			RlShare    *share = pgrl_share(m, j);
			double		base = job_type->base_ratio;

			if (!job_type->in_use)
				continue;
			if (share->model_generation != model->generation ||
				share->job_type_generation != job_type->generation)
			{
				uint64		version = share->version;

				memset(share, 0, sizeof(*share));
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
				if (pgrl_job_type(j)->in_use)
				{
					pgrl_share(m, j)->ratio = pgrl_share(m, j)->base_ratio;
					pgrl_share(m, j)->version++;
				}
			model->version++;
			pg_atomic_fetch_add_u64(&pgrl_ledger->ratio_version, 1);
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
	AssertModelLocked(model, LW_EXCLUSIVE);
	if (++model->releases_since_ratio_change < RL_RELEASES_PER_ADJUSTMENT ||
		model->ratio_adjust_due)
		return false;
	model->releases_since_ratio_change = 0;
	model->ratio_adjust_due = true;
	return GetCurrentTimestamp() >= model->ratios_adjusted_at + RL_MIN_ADJUSTMENT_GAP_US;
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
 * config_lock (shared) and has called pgrl_shares_prepare.
 */
static bool
pgrl_adjust_model_ratios(int model_slot, TimestampTz now)
{
	RlModel    *model = &pgrl_models[model_slot];
	double		given = 0;
	double		receiving_load = 0;
	bool		moved = false;

	Assert(pgrl_config_lock_held(LW_SHARED));
	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	model->ratio_adjust_due = false;
	model->releases_since_ratio_change = 0;
	model->ratios_adjusted_at = GetCurrentTimestamp();
	pgrl_roll_windows(model, now);
	for (int j = 0; j < pgrl_max_job_types; j++)
	{
		RlShare    *share = pgrl_share(model_slot, j);
		const RlJobType *job_type = pgrl_job_type(j);

		loads[j] = -1;
		if (!job_type->in_use || !share->flexible ||
			share->job_type_generation != job_type->generation)
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
		pg_atomic_fetch_add_u64(&pgrl_ledger->ratio_version, 1);
	}
	for (int j = 0; j < pgrl_max_job_types; j++)
		pgrl_share(model_slot, j)->denied_recently = false;
	LWLockRelease(&model->lock);
	return moved;
}

/*
 * Move the flexible ratios of the models that asked for it (10 releases),
 * or of all of them when all (the interval is up); wake the waiters of
 * models whose ratios moved.  Returns when a model that asked too soon
 * after its last adjustment may be adjusted (real time), or 0.  Worker
 * only.
 */
TimestampTz
pgrl_ledger_adjust_ratios(TimestampTz now, TimestampTz real_now, bool all)
{
	bool		any_flexible = false;
	TimestampTz next = 0;
	int			moved = 0;

	pgrl_shares_prepare();
	pgrl_config_lock(LW_SHARED);
	for (int j = 0; j < pgrl_max_job_types && !any_flexible; j++)
		any_flexible = pgrl_job_type(j)->in_use && pgrl_job_type(j)->flexible;
	for (int m = 0; any_flexible && m < pgrl_max_models; m++)
	{
		RlModel    *model = &pgrl_models[m];
		TimestampTz allowed = model->ratios_adjusted_at + RL_MIN_ADJUSTMENT_GAP_US;

		/* unlocked peeks: a request missed now is seen next round */
		if (!model->in_use || !(all || model->ratio_adjust_due))
			continue;
		if (!all && real_now < allowed)
		{
			next = next == 0 ? allowed : Min(next, allowed);
			continue;
		}
		if (pgrl_adjust_model_ratios(m, now))
		{
			pgrl_wake_waiters(m);
			moved++;
		}
	}
	pgrl_config_unlock();
	if (moved > 0)
		elog(DEBUG1, "pg_ratelimit moved the flexible ratios of %d models", moved);
	return next;
}

uint64
pgrl_ledger_ratio_version(void)
{
	return pg_atomic_read_u64(&pgrl_ledger->ratio_version);
}

static int
pgrl_claim_cmp(const void *a, const void *b)
{
	int64		ta = ((const RlClaim *) a)->ticket;
	int64		tb = ((const RlClaim *) b)->ticket;

	return ta < tb ? -1 : ta > tb ? 1 : 0;
}

/*
 * Set aside, from room (per dimension, what the limits leave), what the
 * waiters older than ticket that fit will take, oldest first (wait.c lists
 * them).  A waiter with a job type fits only when its share has room too,
 * and takes from that share; the caller's own share room (share_room, NULL
 * without a job type) shrinks by what older waiters of its job type take.
 * When no job type is involved and the request fits beside all older
 * waiters together (the usual case), nothing needs sorting.  Caller holds
 * the model's lock and has called pgrl_shares_prepare.
 */
void
pgrl_claim_for_older_waiters(RlModel *model, int64 ticket, const RlRequest *request,
							 int64 *room, RlShareRoom *share_room)
{
	int			slot = model - pgrl_models;
	int			num_claims;
	int64		total[RL_NUM_DIMS] = {0};
	bool		all_fit = request->job_type_slot < 0;
	bool		rooms_cleared = false;

	AssertModelLocked(model, LW_EXCLUSIVE);
	Assert(claims != NULL);		/* pgrl_ledger_prepare, before any lock */
	num_claims = pgrl_older_claims(slot, ticket, claims);
	if (num_claims == 0)
		return;
	for (int i = 0; i < num_claims; i++)
	{
		if (claims[i].job_type_slot >= 0)
			all_fit = false;
		for (int d = 0; d < RL_NUM_DIMS; d++)
			total[d] = pgrl_add_saturating(total[d],
										   pgrl_dimension_amount(d, claims[i].tokens, claims[i].output_tokens, claims[i].requests));
	}
	for (int d = 0; d < RL_NUM_DIMS; d++)
		if (room[d] != PG_INT64_MAX &&
			pgrl_add_saturating(total[d], pgrl_request_amount(d, request)) > room[d])
			all_fit = false;
	if (all_fit)
	{
		/* every older waiter and this request fit together */
		for (int d = 0; d < RL_NUM_DIMS; d++)
			if (room[d] != PG_INT64_MAX)
				room[d] -= total[d];
		return;
	}

	qsort(claims, num_claims, sizeof(RlClaim), pgrl_claim_cmp);
	for (int i = 0; i < num_claims; i++)
	{
		RlShareRoom *claim_share = NULL;
		bool		fits = true;

		for (int d = 0; d < RL_NUM_DIMS; d++)
			if (pgrl_dimension_amount(d, claims[i].tokens, claims[i].output_tokens, claims[i].requests) > room[d])
				fits = false;
		if (fits && claims[i].job_type_slot >= 0)
		{
			int			j = claims[i].job_type_slot;

			if (j == request->job_type_slot)
				claim_share = share_room;
			else
			{
				/* the room of another job type's share, worked out once */
				if (!rooms_cleared)
				{
					memset(other_room_known, 0, sizeof(bool) * pgrl_max_job_types);
					rooms_cleared = true;
				}
				if (!other_room_known[j])
					pgrl_share_room(model, pgrl_share(slot, j), &other_rooms[j]);
				other_room_known[j] = true;
				claim_share = &other_rooms[j];
			}
			fits = pgrl_share_blocking(claim_share, claims[i].tokens, claims[i].output_tokens,
									   claims[i].requests) < 0;
		}
		if (!fits)
			continue;
		for (int d = 0; d < RL_NUM_DIMS; d++)
			if (room[d] != PG_INT64_MAX)
				room[d] -= pgrl_dimension_amount(d, claims[i].tokens, claims[i].output_tokens, claims[i].requests);
		if (claim_share)
			pgrl_share_take(claim_share, claims[i].tokens, claims[i].output_tokens,
							claims[i].requests);
	}
}

/*
 * The rows of rl_job_status of a model: one per job type in use, into rows
 * (room for max_job_types), and the model's name.  Returns how many; 0
 * when the model is not in use.  Caller holds config_lock.
 */
int
pgrl_ledger_share_status(int slot, TimestampTz now, char *name, RlShareStatus *rows)
{
	RlModel    *model = &pgrl_models[slot];
	int			count = 0;

	/* a window ahead of the clock (it stepped back) is current */
	TimestampTz minute_start = pgrl_window_start(now, USECS_PER_MINUTE);
	TimestampTz day_start = pgrl_window_start(now, USECS_PER_DAY);

	Assert(pgrl_config_lock_held(LW_SHARED));
	if (!model->in_use)
		return 0;
	LWLockAcquire(&model->lock, LW_SHARED);
	strlcpy(name, model->name, RL_NAME_MAX_LEN + 1);
	for (int j = 0; j < pgrl_max_job_types && model->in_use; j++)
	{
		const RlJobType *job_type = pgrl_job_type(j);
		RlShare    *share = pgrl_share(slot, j);
		RlShareStatus *row = &rows[count];

		if (!job_type->in_use || share->job_type_generation != job_type->generation)
			continue;
		row->job_type_slot = j;
		row->ratio = share->ratio;
		row->base_ratio = share->base_ratio;
		row->flexible = share->flexible;
		/* what its whole share holds, at least ratelimit.min_job_type_slots */
		row->slots = pgrl_ratio_fit(model->limit, share->ratio, job_type->est_tokens, 0,
									job_type->est_requests, &row->limited_by);
		if (row->slots >= 0)
			row->slots = Max(row->slots, (int64) pgrl_min_job_type_slots);
		for (int d = 0; d < RL_NUM_DIMS; d++)
		{
			bool		current = d == RL_DIM_CONCURRENCY ||
				(pgrl_dimension_is_daily(d) ? model->day_start >= day_start :
				 model->minute_start >= minute_start);

			row->share[d] = model->limit[d] == RL_UNLIMITED ? RL_UNLIMITED :
				pgrl_share_of(model->limit[d], share->ratio);
			if (pgrl_is_bucket(model, d))
				row->used[d] = pgrl_bucket_used_at(share->used[d], row->share[d], d,
												   share->refill_carry[d],
												   model->refilled_at, now);
			else
				row->used[d] = current ? share->used[d] : 0;
		}
		row->granted = share->granted;
		row->denied = share->denied;
		count++;
	}
	LWLockRelease(&model->lock);
	return count;
}
