/*-------------------------------------------------------------------------
 *
 * admission.c
 *		The admission rule: a request is admitted only when every
 *		configured limit of the model has room for it, all or nothing.
 *
 * The check and the reservation are made under the model's own lock, so
 * they are atomic: a limit is never exceeded by an admission, whatever the
 * concurrency.  Windows are fixed and epoch-aligned (the UTC minute and the
 * UTC day) and are rolled lazily, by whoever touches the model first after
 * a boundary.  They only move forward: every caller reads the time before
 * it takes the model's lock, so one that read it just before a boundary
 * may get the lock after another rolled into the new window, and is then
 * counted in the new window (rolling back would zero it, and let the new
 * window admit its limit twice).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "admission.h"
#include "instance.h"
#include "mark.h"
#include "pg_ratelimit.h"
#include "share.h"
#include "wait.h"
#include "worker.h"

/* Indexed by RlDimension, then RL_LIMITED_BY_JOB_TYPE and _MEMORY */
const char *const pgrl_dimension_names[RL_NUM_DIMS + 2] = {
	"rpd", "tpd", "rpm", "tpm", "concurrency", "job_type", "memory"
};

/* Does this dimension count in the day window (else minute, or none)? */
bool
pgrl_dimension_is_daily(RlDimension dim)
{
	return dim == RL_DIM_RPD || dim == RL_DIM_TPD;
}

/* How much of a dimension a request of this size consumes */
int64
pgrl_dimension_amount(RlDimension dim, int64 tokens, int32 requests)
{
	switch (dim)
	{
		case RL_DIM_RPD:
		case RL_DIM_RPM:
			return requests;
		case RL_DIM_TPD:
		case RL_DIM_TPM:
			return tokens;
		default:
			return 1;
	}
}

/*
 * Start new windows when the clock has passed the stored ones (and free the
 * slots held after a restore once their time is up).  Windows only move
 * forward: a time before the stored windows (read before another backend
 * rolled them, or a clock that stepped back) counts in them, so a window
 * is never reset twice and a day never starts over on its saved usage.
 */
void
pgrl_roll_windows(RlModel *model, TimestampTz now)
{
	TimestampTz minute_start = pgrl_window_start(now, USECS_PER_MINUTE);
	TimestampTz day_start = pgrl_window_start(now, USECS_PER_DAY);
	bool		new_minute = minute_start > model->minute_start;
	bool		new_day = day_start > model->day_start;

	pgrl_mark_release_held(model, now);
	if (new_minute || new_day)
		pgrl_roll_share_windows(model - pgrl_models, new_minute,
							  new_day ? day_start : RL_NO_WINDOW);
	if (new_minute)
	{
		/* a window that denied ends: listeners may retry */
		if (model->denied_in_minute || (model->denied_in_day && new_day))
			pgrl_note_capacity_freed(model, RL_NOTIFY_WINDOW_RESET, minute_start);
		model->denied_in_minute = false;
		model->minute_start = minute_start;
		model->used[RL_DIM_RPM] = 0;
		model->used[RL_DIM_TPM] = 0;
	}
	if (new_day)
	{
		model->denied_in_day = false;
		model->day_start = day_start;
		model->used[RL_DIM_RPD] = 0;
		model->used[RL_DIM_TPD] = 0;
		/* keep the ended day's usage until the worker has persisted it */
		if (pgrl_day_used(&model->usage))
			model->usage_ended = model->usage;
		memset(&model->usage, 0, sizeof(model->usage));
		model->usage.day_start = day_start;
		model->version++;
	}
}

/*
 * Capacity freed up on a model: when it has denied since the last
 * notification, have the worker send one (coalesced: one pending notice per
 * model; a window reset replaces a pending release, which the worker may be
 * holding back).  Returns true when a notice became pending, which is when
 * the worker needs waking.  Caller holds the model's lock.
 */
bool
pgrl_note_capacity_freed(RlModel *model, RlNotifyReason reason, TimestampTz at)
{
	if (!model->denied_since_notify)
		return false;
	if (model->notify_reason != RL_NOTIFY_NONE)
	{
		if (reason == RL_NOTIFY_WINDOW_RESET)
		{
			model->notify_reason = reason;
			model->notify_at = at;
		}
		return false;
	}
	model->notify_reason = reason;
	model->notify_at = at;
	return true;
}

/* When the window of a dimension ends, or 0 when only releases free it */
TimestampTz
pgrl_dimension_resets_at(const RlModel *model, RlDimension dim)
{
	if (pgrl_dimension_is_daily(dim))
		return model->day_start + USECS_PER_DAY;
	if (dim == RL_DIM_CONCURRENCY)
		return 0;
	return model->minute_start + USECS_PER_MINUTE;
}

/*
 * Usage of a dimension as of now, without rolling the stored windows (for
 * readers that hold the model lock only shared).  A stored window at or
 * after now's is current (windows only move forward).
 */
int64
pgrl_used_now(const RlModel *model, RlDimension dim, TimestampTz now)
{
	if (dim == RL_DIM_CONCURRENCY)
		return model->used[dim];
	if (pgrl_dimension_is_daily(dim))
		return model->day_start >= pgrl_window_start(now, USECS_PER_DAY) ?
			model->used[dim] : 0;
	return model->minute_start >= pgrl_window_start(now, USECS_PER_MINUTE) ?
		model->used[dim] : 0;
}

/*
 * Note a refusal on the model (and the job type's share) and report it;
 * releases the model's lock.  The denied totals count refused calls, not
 * attempts: the caller counts them once the call returns refused
 * (pgrl_count_refusal).
 */
static void
pgrl_deny(RlModel *model, RlShare *share, int limited_by, TimestampTz retry_at,
		RlAdmission *result)
{
	model->denied_since_notify = true;
	if (share)
		pgrl_share_denied(share);
	result->limited_by = limited_by;
	result->retry_at = retry_at;
	LWLockRelease(&model->lock);
}

/*
 * Try to admit a request on one model, reserving everything it needs when
 * it fits.  With a job type (job_type_slot >= 0) the request must also fit
 * the job type's share of the model, and with a memory cap (memory, may be
 * NULL) the instance's in-flight jobs of the type must stay under it.
 * ticket orders the request among waiters (RL_NEWCOMER_TICKET when not
 * waiting): the room older waiters that fit will take is set aside first.
 * A request that fits everything but the model's durable high-water marks
 * (or whose lease would outlive their horizon) is neither granted nor
 * denied: result->awaiting_mark says the worker was asked for new marks
 * (mark.c).  Never errors (the caller holds config_lock): a request that
 * can never fit is reported in result->never_fits, a full lease table in
 * result->leases_full.  Caller holds config_lock (shared), so
 * the shares match the configuration.
 */
void
pgrl_try_admit(int slot, int64 tokens, int32 requests, int job_type_slot,
			 const RlMemoryCap *memory, int64 ticket, TimestampTz now,
			 TimestampTz expires_at, RlAdmission *result)
{
	RlModel    *model = &pgrl_models[slot];
	RlShare    *share = job_type_slot >= 0 ? pgrl_share(slot, job_type_slot) : NULL;
	RlShareRoom share_room;
	int			blocking = -1;
	int			share_blocking = -1;
	int			mark_blocking = -1;
	int64		room[RL_NUM_DIMS];	/* what the limits leave */
	int64		avail[RL_NUM_DIMS]; /* what the marks allow, then both */
	bool		wake_worker;

	memset(result, 0, sizeof(*result));
	result->limited_by = -1;
	result->never_fits = -1;

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	pgrl_roll_windows(model, now);

	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		limit = model->limit[d];

		if (limit != RL_UNLIMITED && pgrl_dimension_amount(d, tokens, requests) > limit)
		{
			result->never_fits = d;
			result->never_fits_limit = limit;
			LWLockRelease(&model->lock);
			return;
		}
		/* used can exceed limit after an overage: room may be < 0 */
		room[d] = limit == RL_UNLIMITED ? PG_INT64_MAX : limit - model->used[d];
		avail[d] = limit == RL_UNLIMITED ? PG_INT64_MAX : pgrl_mark_room(model, d);
	}
	if (share)
		pgrl_share_room(model, share, &share_room);

	/*
	 * Older waiters that fit the limits claim their room first, also when
	 * they wait only for new marks: what they claim comes off both.
	 */
	if (pg_atomic_read_u32(&model->num_waiters) > 0)
	{
		int64		before[RL_NUM_DIMS];

		memcpy(before, room, sizeof(before));
		pgrl_claim_for_older_waiters(slot, ticket, tokens, requests, job_type_slot,
								   room, share ? &share_room : NULL);
		for (int d = 0; d < RL_NUM_DIMS; d++)
			if (avail[d] != PG_INT64_MAX)
				avail[d] -= before[d] - room[d];
	}
	for (int d = 0; d < RL_NUM_DIMS; d++)
		avail[d] = Min(avail[d], room[d]);
	for (int d = 0; d < RL_NUM_DIMS && blocking < 0; d++)
		if (pgrl_dimension_amount(d, tokens, requests) > room[d])
			blocking = d;
	if (blocking < 0 && share)
		share_blocking = pgrl_share_blocking(&share_room, tokens, requests);

	if (blocking >= 0 || share_blocking >= 0)
	{
		int			window = blocking >= 0 ? blocking : share_blocking;

		model->version++;
		if (pgrl_dimension_is_daily(window))
			model->denied_in_day = true;
		else if (window != RL_DIM_CONCURRENCY)
			model->denied_in_minute = true;
		pgrl_deny(model, share, blocking >= 0 ? blocking : RL_LIMITED_BY_JOB_TYPE,
				pgrl_dimension_resets_at(model, window), result);
		return;
	}

	/* It fits the limits: may it be granted before new marks are saved? */
	for (int d = 0; d < RL_NUM_DIMS && mark_blocking < 0; d++)
		if (pgrl_dimension_amount(d, tokens, requests) > avail[d])
			mark_blocking = d;
	if (mark_blocking < 0 && !pgrl_mark_covers_expiry(model, expires_at))
		mark_blocking = RL_DIM_CONCURRENCY;
	if (mark_blocking >= 0)
	{
		wake_worker = pgrl_mark_refused(model, tokens, requests, expires_at);
		result->awaiting_mark = true;
		result->limited_by = mark_blocking;
		result->retry_at = pgrl_add_saturating(now, RL_MARK_RETRY_US);
		LWLockRelease(&model->lock);
		if (wake_worker)
			pgrl_wake_worker();
		return;
	}

	/* Claim room in the lease table before reserving anything */
	if (pg_atomic_fetch_add_u32(&pgrl_state->open_leases, 1) >= (uint32) pgrl_max_leases)
	{
		pg_atomic_fetch_sub_u32(&pgrl_state->open_leases, 1);
		result->leases_full = true;
		LWLockRelease(&model->lock);
		return;
	}

	/* last, the instance's memory: the cap holds across models */
	if (memory && memory->in_flight)
	{
		if (!pgrl_memory_take(memory))
		{
			pg_atomic_fetch_sub_u32(&pgrl_state->open_leases, 1);
			model->version++;
			pgrl_deny(model, share, RL_LIMITED_BY_MEMORY, 0, result);
			return;
		}
		result->memory_counted = true;
	}

	model->version++;
	for (int d = 0; d < RL_NUM_DIMS; d++)
		model->used[d] = pgrl_add_saturating(model->used[d],
										   pgrl_dimension_amount(d, tokens, requests));
	model->granted++;
	model->usage.requests = pgrl_add_saturating(model->usage.requests, requests);
	if (share)
		pgrl_share_grant(share, model, tokens, requests);
	if (ticket != RL_NEWCOMER_TICKET)
		pgrl_waiter_granted();
	/* also without a concurrency limit: one may be set before it is saved */
	pgrl_mark_note_lease(model, expires_at);
	wake_worker = pgrl_mark_note_usage(model);
	result->granted = true;
	result->model_generation = model->generation;
	result->minute_start = model->minute_start;
	result->day_start = model->day_start;
	LWLockRelease(&model->lock);
	if (wake_worker)
		pgrl_wake_worker();
}

/*
 * A call returns refused: count one denial on each model that refused it
 * (names[i] where refused[i]), and on the job type's share of each.  Once
 * per call, however often it was tried while it waited.
 */
void
pgrl_count_refusal(char **names, const bool *refused, int num_models, int job_type_slot,
				 uint32 job_type_generation)
{
	LWLockAcquire(&pgrl_state->config_lock, LW_SHARED);
	for (int i = 0; i < num_models; i++)
	{
		int			slot;
		RlModel    *model;

		if (!refused[i] || (slot = pgrl_lookup_slot(pgrl_model_index, names[i])) < 0)
			continue;
		model = &pgrl_models[slot];
		LWLockAcquire(&model->lock, LW_EXCLUSIVE);
		model->denied++;
		model->version++;
		if (job_type_slot >= 0 && pgrl_job_types[job_type_slot].in_use &&
			pgrl_job_types[job_type_slot].generation == job_type_generation)
		{
			RlShare    *share = pgrl_share(slot, job_type_slot);

			if (share->model_generation == model->generation &&
				share->job_type_generation == job_type_generation)
				pgrl_share_count_denial(share);
		}
		LWLockRelease(&model->lock);
	}
	LWLockRelease(&pgrl_state->config_lock);
}
