/*-------------------------------------------------------------------------
 *
 * ledger.c
 *		The ledger: every model's limits and counters, and each job type's
 *		share of each model.  The only code that changes a counter.
 *
 * The ledger owns the models (an array of ratelimit.max_models slots found
 * through a name index), the model x job type matrix of shares
 * (ledger_shares.c) and each model's high-water marks (ledger_marks.c).
 * Their structures are private to these three files (ledger_internal.h);
 * the rest of the extension asks through ledger.h: admit, count a refusal
 * or how a wait ended, settle, expire, roll windows, copy for the views and
 * for saving, restore, and apply a configuration.  Besides the counters of
 * the current windows, a model keeps totals that only grow (rl_status,
 * rl_stats): they start over only when the model is defined again.  A new
 * limit dimension or a new kind of limit holder changes this module and
 * limits.h.
 *
 * Every change of a model keeps these rules, in the functions that make
 * it: windows are rolled first (pgrl_roll_windows: they only move
 * forward); the model's version is bumped, so the worker saves it; a share
 * moves with its model, and its own version is bumped; a change that frees
 * capacity after a denial queues a notice (pgrl_note_capacity_freed) and
 * wakes the model's waiters; usage that eats into a high-water mark asks
 * for the next one (pgrl_mark_note_usage).
 *
 * The admission rule: a request is admitted only when every configured
 * limit of the model has room for it, all or nothing.  The check and the
 * reservation are made under the model's own lock, so they are atomic: a
 * limit is never exceeded by an admission, whatever the concurrency.
 * Windows are fixed and epoch-aligned (the UTC minute and the UTC day) and
 * are rolled lazily, by whoever touches the model first after a boundary.
 * A bucket model (window_type 'bucket') counts its rate limits as token
 * buckets instead: usage is what the bucket lacks to be full, and it
 * refills continuously, limit per window, refilled lazily in the same
 * place (pgrl_roll_windows), exactly (pgrl_refill carries the fractions).
 * Refunds return to the bucket (never above full), overages are taken from
 * it (it may go below empty), and a refused request's retry_after is when
 * the bucket will hold it.
 * They only move forward: every caller reads the time before it takes the
 * model's lock, so one that read it just before a boundary may get the
 * lock after another rolled into the new window, and is then counted in
 * the new window (rolling back would zero it, and let the new window admit
 * its limit twice).
 *
 * Locking: each model has its own LWLock protecting its limits, prices,
 * windows, counters, totals, marks and its shares.  Two backends racing for
 * the last unit of a model serialize on it; backends working on different
 * models never meet.  A model lock is never held while another model lock
 * is taken, and every function here releases it before returning.  The
 * name index, which slots are in use and their generations change only
 * under config_lock held exclusively (and the model's lock); lookups hold
 * config_lock shared.  Under a model lock nothing is allocated but the
 * cost of a release (numeric arithmetic), nothing is reported, and the
 * only other work is reading the wait queue (wait.c, lock-free); waiters
 * and the worker are woken after it is released.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "clock.h"
#include "ledger_internal.h"
#include "names.h"
#include "settings.h"
#include "wait.h"

RlLedger   *pgrl_ledger = NULL;
RlModel    *pgrl_models = NULL;
static HTAB *model_index = NULL;

Size
pgrl_ledger_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(RlLedger));

	size = add_size(size, MAXALIGN(mul_size(pgrl_max_models, sizeof(RlModel))));
	size = add_size(size, MAXALIGN(pgrl_shares_shmem_size()));
	return add_size(size, pgrl_name_index_size(pgrl_max_models));
}

/* Create or attach; caller holds AddinShmemInitLock */
void
pgrl_ledger_shmem_init(int tranche_id)
{
	bool		found;
	bool		found_models;

	pgrl_ledger = ShmemInitStruct("pg_ratelimit ledger", sizeof(RlLedger), &found);
	pgrl_models = ShmemInitStruct("pg_ratelimit models",
								  mul_size(pgrl_max_models, sizeof(RlModel)), &found_models);
	if (!found)
	{
		pg_atomic_init_u64(&pgrl_ledger->ratio_version, 0);
		pg_atomic_init_u32(&pgrl_ledger->marks_requested, 0);
		pg_atomic_init_u32(&pgrl_ledger->lease_save_epoch, 0);
	}
	if (!found_models)
	{
		memset(pgrl_models, 0, mul_size(pgrl_max_models, sizeof(RlModel)));
		for (int i = 0; i < pgrl_max_models; i++)
			LWLockInitialize(&pgrl_models[i].lock, tranche_id);
	}
	pgrl_shares_shmem_init();
	model_index = pgrl_name_index_init("pg_ratelimit model index", pgrl_max_models);
}

/*
 * Allocate this backend's scratch space for admissions (the claims of
 * older waiters, other job types' share rooms): call before taking
 * config_lock, since nothing is allocated under it.
 */
void
pgrl_ledger_prepare(void)
{
	pgrl_shares_prepare();
}

/* The slot of a model, or -1.  Caller holds config_lock. */
int
pgrl_model_slot(const char *name)
{
	Assert(pgrl_config_lock_held(LW_SHARED));
	return pgrl_name_index_find(model_index, name);
}

/*
 * The name of the model in a slot, when it is still the one of that
 * generation.  Caller holds config_lock (names change only under it).
 */
bool
pgrl_model_name(int slot, uint32 generation, char *name)
{
	RlModel    *model = &pgrl_models[slot];

	Assert(pgrl_config_lock_held(LW_SHARED));
	if (!model->in_use || model->generation != generation)
		return false;
	strlcpy(name, model->name, RL_NAME_MAX_LEN + 1);
	return true;
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
	AssertModelLocked(model, LW_EXCLUSIVE);
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

/*
 * A bucket's usage (what it lacks to be full) at now, refilled from
 * refilled_at with the carried fraction: for readers that may not change
 * the model (it holds the lock shared).
 */
int64
pgrl_bucket_used_at(int64 used, int64 limit, RlDimension dim, int64 carry,
					TimestampTz refilled_at, TimestampTz now)
{
	int64		refilled;

	if (used <= 0 || now <= refilled_at || refilled_at == RL_NO_WINDOW)
		return used;
	refilled = pgrl_refill(limit, dim, now - refilled_at, &carry);
	return refilled >= used ? 0 : used - refilled;
}

/* Refill one bucket by what elapsed_us gives; never fuller than full */
void
pgrl_refill_bucket(int64 *used, int64 *carry, int64 limit, RlDimension dim, int64 elapsed_us)
{
	int64		refilled;

	if (*used <= 0)
	{
		/* full: nothing to carry toward a fuller one */
		*carry = 0;
		return;
	}
	refilled = pgrl_refill(limit, dim, elapsed_us, carry);
	if (refilled >= *used)
	{
		*used = 0;
		*carry = 0;
	}
	else
		*used -= refilled;
}

/*
 * Refill a model's buckets, and its shares', up to now.  refilled_at moves
 * forward for every model, so that a model made a bucket starts from the
 * time it was; a time before it (read before another backend refilled,
 * or a clock that stepped back) refills nothing.  A bucket that now holds
 * what was last refused has listeners told.  Caller holds the model's lock
 * exclusively.
 */
static void
pgrl_refill_buckets(RlModel *model, TimestampTz now)
{
	int64		elapsed_us;

	AssertModelLocked(model, LW_EXCLUSIVE);
	if (now <= model->refilled_at)
		return;
	elapsed_us = model->refilled_at == RL_NO_WINDOW ? 0 : now - model->refilled_at;
	model->refilled_at = now;
	if (model->window_type != RL_WINDOW_BUCKET || elapsed_us == 0)
		return;
	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
		if (pgrl_is_bucket(model, d))
			pgrl_refill_bucket(&model->used[d], &model->refill_carry[d], model->limit[d], d,
							   elapsed_us);
	pgrl_refill_shares(model, elapsed_us);
}

/*
 * A notice due at a time (a bucket that will hold what it refused, the end
 * of the provider's cooldown): the earliest is kept.  Caller holds the
 * model's lock.
 */
static void
pgrl_notice_due(RlModel *model, TimestampTz at, RlNotifyReason reason)
{
	if (model->notice_due_at == 0 || at < model->notice_due_at)
	{
		model->notice_due_at = at;
		model->notice_due_reason = reason;
	}
}

/*
 * Start new windows when the clock has passed the stored ones (and free the
 * slots held after a restore once their time is up).  Windows only move
 * forward: a time before the stored windows (read before another backend
 * rolled them, or a clock that stepped back) counts in them, so a window
 * is never reset twice and a day never starts over on its saved usage.
 * Caller holds the model's lock exclusively.
 */
void
pgrl_roll_windows(RlModel *model, TimestampTz now)
{
	TimestampTz minute_start = pgrl_window_start(now, USECS_PER_MINUTE);
	TimestampTz day_start = pgrl_window_start(now, USECS_PER_DAY);
	bool		new_minute = minute_start > model->minute_start;
	bool		new_day = day_start > model->day_start;

	AssertModelLocked(model, LW_EXCLUSIVE);
	pgrl_mark_release_held(model, now);
	pgrl_refill_buckets(model, now);
	if (model->notice_due_at != 0 && now >= model->notice_due_at)
	{
		model->notice_due_at = 0;
		(void) pgrl_note_capacity_freed(model, model->notice_due_reason, now);
	}
	if (new_minute || new_day)
		pgrl_roll_share_windows(model, new_minute, new_day ? day_start : RL_NO_WINDOW);
	if (new_minute)
	{
		/* a window that denied ends: listeners may retry */
		if (model->denied_in_minute || (model->denied_in_day && new_day))
			pgrl_note_capacity_freed(model, RL_NOTIFY_WINDOW_RESET, minute_start);
		model->denied_in_minute = false;
		model->minute_start = minute_start;
		for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
			if (!pgrl_dimension_is_daily(d) && !pgrl_is_bucket(model, d))
				model->used[d] = model->provider.advance[d] = 0;
	}
	if (new_day)
	{
		model->denied_in_day = false;
		model->day_start = day_start;
		for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
			if (pgrl_dimension_is_daily(d) && !pgrl_is_bucket(model, d))
				model->used[d] = model->provider.advance[d] = 0;
		/* keep the ended day's usage until the worker has persisted it */
		if (pgrl_day_used(&model->usage))
			model->usage_ended = model->usage;
		memset(&model->usage, 0, sizeof(model->usage));
		model->usage.day_start = day_start;
		model->version++;
	}
}

/*
 * When the window of a dimension ends, or 0 when only releases free it;
 * for a bucket, when it will be full.  Caller has refilled the model to now.
 */
static TimestampTz
pgrl_resets_at(const RlModel *model, RlDimension dim, TimestampTz now)
{
	if (pgrl_is_bucket(model, dim))
		return model->limit[dim] == 0 ? DT_NOEND :
			pgrl_add_saturating(now, pgrl_refill_time(model->limit[dim], dim,
													  model->used[dim],
													  model->refill_carry[dim]));
	return pgrl_window_reset(pgrl_dimension_is_daily(dim) ? model->day_start :
							 model->minute_start, dim);
}

/*
 * When a request short by shortfall of a bucket limit (of capacity limit,
 * the model's or a job type's share of it) will fit, as the bucket refills.
 */
static TimestampTz
pgrl_bucket_fits_at(int64 limit, RlDimension dim, int64 shortfall, int64 carry,
					TimestampTz now)
{
	if (limit <= 0)
		return DT_NOEND;
	return pgrl_add_saturating(now, pgrl_refill_time(limit, dim, shortfall, carry));
}

/*
 * Usage of a dimension as of now, without rolling the stored windows (for
 * readers that hold the model lock only shared).  A stored window at or
 * after now's is current (windows only move forward).
 */
static int64
pgrl_used_now(const RlModel *model, RlDimension dim, TimestampTz now)
{
	if (dim == RL_DIM_CONCURRENCY)
		return model->used[dim];
	if (pgrl_is_bucket(model, dim))
		return pgrl_bucket_used_at(model->used[dim], model->limit[dim], dim,
								   model->refill_carry[dim], model->refilled_at, now);
	if (pgrl_dimension_is_daily(dim))
		return model->day_start >= pgrl_window_start(now, USECS_PER_DAY) ?
			model->used[dim] : 0;
	return model->minute_start >= pgrl_window_start(now, USECS_PER_MINUTE) ?
		model->used[dim] : 0;
}

/*
 * Copy configured limits and prices into a model, saying whether they
 * changed.  Caller holds its lock.
 */
static bool
pgrl_set_model_config(RlModel *model, const RlModelConfig *config)
{
	bool		changed;

	AssertModelLocked(model, LW_EXCLUSIVE);
	changed = memcmp(model->limit, config->limit, sizeof(model->limit)) != 0 ||
		model->window_type != config->window_type ||
		model->count_cached != config->count_cached ||
		model->priced != config->priced ||
		memcmp(&model->price_input, &config->price_input, sizeof(RlNumeric)) != 0 ||
		memcmp(&model->price_output, &config->price_output, sizeof(RlNumeric)) != 0 ||
		memcmp(&model->price_cached, &config->price_cached, sizeof(RlNumeric)) != 0;
	memcpy(model->limit, config->limit, sizeof(model->limit));
	model->window_type = config->window_type;
	model->count_cached = config->count_cached;
	model->price_input = config->price_input;
	model->price_output = config->price_output;
	model->price_cached = config->price_cached;
	model->priced = config->priced;
	return changed;
}

/* Start a model in a free slot, its counters at zero; caller holds its lock */
static void
pgrl_init_model(RlModel *model, const RlModelConfig *config)
{
	AssertModelLocked(model, LW_EXCLUSIVE);
	model->in_use = true;
	model->generation++;
	strlcpy(model->name, config->name, sizeof(model->name));
	model->minute_start = RL_NO_WINDOW;
	model->day_start = RL_NO_WINDOW;
	memset(model->used, 0, sizeof(model->used));
	model->refilled_at = RL_NO_WINDOW;
	memset(model->refill_carry, 0, sizeof(model->refill_carry));
	model->notice_due_at = 0;
	memset(&model->provider, 0, sizeof(model->provider));
	/* any time can be a test clock's, those before 2000 negative ones */
	model->provider.cooldown_until = DT_NOBEGIN;
	model->shares_idle = false;
	for (int p = 0; p < RL_NUM_PROVIDER_DIMS; p++)
		model->provider.limit[p] = model->provider.remaining[p] = -1;
	model->granted = model->denied = model->expired = 0;
	model->overage_events = model->overage_tokens = 0;
	/* rl_stats counts from here: a model defined again starts over */
	memset(&model->stats, 0, sizeof(model->stats));
	model->stats.since = GetCurrentTimestamp();
	model->denied_in_minute = model->denied_in_day = model->denied_since_notify = false;
	model->notify_reason = RL_NOTIFY_NONE;
	memset(&model->usage, 0, sizeof(model->usage));
	model->usage.day_start = RL_NO_WINDOW;
	memset(&model->usage_ended, 0, sizeof(model->usage_ended));
	model->usage_ended.day_start = RL_NO_WINDOW;
	pgrl_reset_marks(model);
	model->version++;
	(void) pgrl_set_model_config(model, config);
}

/* Take a model out of use; caller holds config_lock exclusively */
static void
pgrl_drop_model(RlModel *model)
{
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	pgrl_name_index_remove(model_index, model->name);
	model->in_use = false;
	LWLockRelease(&model->lock);
}

/*
 * Make the models those configured: a model no longer configured is
 * dropped (dropped[slot] set: the caller discards its leases), one whose
 * limits or prices changed keeps its counters (and its listeners hear of
 * the change), a new one starts at zero in a free slot.  Returns false
 * when a slot or an index entry was missing (cannot happen: both are
 * sized at server start).  Caller holds config_lock exclusively; dropped
 * has room for max_models and is all false.
 */
bool
pgrl_ledger_apply_models(const RlModelConfig *configs, int count, bool *dropped)
{
	bool		complete = true;

	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	/* Drop what is gone: a slot in use that no configured name finds */
	for (int slot = 0; slot < pgrl_max_models; slot++)
		if (pgrl_models[slot].in_use)
			dropped[slot] = true;
	for (int i = 0; i < count; i++)
	{
		int			slot = pgrl_name_index_find(model_index, configs[i].name);

		if (slot >= 0)
			dropped[slot] = false;
	}
	for (int slot = 0; slot < pgrl_max_models; slot++)
		if (dropped[slot])
			pgrl_drop_model(&pgrl_models[slot]);

	/* Slots below free_slot are in use: nothing is freed from here on */
	for (int i = 0, free_slot = 0; i < count; i++)
	{
		const RlModelConfig *config = &configs[i];
		int			slot = pgrl_name_index_find(model_index, config->name);
		RlModel    *model;

		if (slot < 0)
		{
			while (free_slot < pgrl_max_models && pgrl_models[free_slot].in_use)
				free_slot++;
			if (free_slot == pgrl_max_models ||
				!pgrl_name_index_insert(model_index, config->name, free_slot))
			{
				complete = false;
				continue;
			}
			model = &pgrl_models[free_slot];
			LWLockAcquire(&model->lock, LW_EXCLUSIVE);
			pgrl_init_model(model, config);
			LWLockRelease(&model->lock);
		}
		else
		{
			model = &pgrl_models[slot];
			LWLockAcquire(&model->lock, LW_EXCLUSIVE);
			if (pgrl_set_model_config(model, config))
			{
				/* a new configuration ends a pause the provider asked for */
				model->provider.cooldown_until = DT_NOBEGIN;
				(void) pgrl_note_capacity_freed(model, RL_NOTIFY_CONFIG, pgrl_now());
			}
			LWLockRelease(&model->lock);
		}
	}
	return complete;
}

/* Forget every model (a full load).  Caller holds config_lock exclusively. */
void
pgrl_ledger_clear(void)
{
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	for (int slot = 0; slot < pgrl_max_models; slot++)
		if (pgrl_models[slot].in_use)
			pgrl_drop_model(&pgrl_models[slot]);
}

/*
 * Note a refusal by a limit or a share on the model (and the job type's
 * share); the denied totals count refused calls, not attempts: see
 * pgrl_ledger_count_refusal.  Caller holds the model's lock.
 */
static void
pgrl_deny(RlModel *model, RlShare *share, int limited_by, int window, TimestampTz retry_at,
		  RlAdmission *result)
{
	AssertModelLocked(model, LW_EXCLUSIVE);
	model->version++;
	if (limited_by == RL_LIMITED_BY_PROVIDER)
		pgrl_notice_due(model, retry_at, RL_NOTIFY_COOLDOWN_END);
	else if (window >= 0 && pgrl_is_bucket(model, window))
		pgrl_notice_due(model, retry_at, RL_NOTIFY_REFILL);
	else if (window >= 0 && pgrl_dimension_is_daily(window))
		model->denied_in_day = true;
	else if (window >= 0 && window != RL_DIM_CONCURRENCY)
		model->denied_in_minute = true;
	model->denied_since_notify = true;
	if (share)
		share->denied_recently = true;
	result->limited_by = limited_by;
	result->retry_at = retry_at;
}

/* The first dimension (blocks-longest order) whose room is short, or -1 */
static int
pgrl_first_short(const int64 *room, const RlRequest *request)
{
	for (int d = 0; d < RL_NUM_DIMS; d++)
		if (pgrl_request_amount(d, request) > room[d])
			return d;
	return -1;
}

/* The body of pgrl_ledger_admit, with the model locked */
static void
pgrl_admit_locked(RlModel *model, RlShare *share, const RlRequest *request,
				  const RlMemoryCap *memory, int64 ticket, TimestampTz now,
				  TimestampTz expires_at, RlAdmission *result, bool *wake_worker)
{
	RlShareRoom share_room;
	int			blocking;
	int			share_blocking = -1;
	int			mark_blocking;
	int64		room[RL_NUM_DIMS];	/* what the limits leave */
	int64		avail[RL_NUM_DIMS]; /* what the marks allow, then both */

	AssertModelLocked(model, LW_EXCLUSIVE);
	pgrl_roll_windows(model, now);
	result->model_generation = model->generation;

	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		limit = model->limit[d];

		if (limit != RL_UNLIMITED &&
			pgrl_request_amount(d, request) > limit)
		{
			result->never_fits = d;
			result->never_fits_limit = limit;
			return;
		}
		/* used can exceed limit after an overage: room may be < 0 */
		room[d] = limit == RL_UNLIMITED ? PG_INT64_MAX : limit - model->used[d];
		avail[d] = limit == RL_UNLIMITED ? PG_INT64_MAX : pgrl_mark_room(model, d);
	}

	/*
	 * The provider answered 429 (rl_observe): nothing until it says, for no
	 * longer than ratelimit.max_provider_pause says now
	 */
	if (now < model->provider.cooldown_until)
	{
		model->provider.cooldown_until = Min(model->provider.cooldown_until,
											 pgrl_provider_pause_limit(now));
		if (now < model->provider.cooldown_until)
		{
			pgrl_deny(model, share, RL_LIMITED_BY_PROVIDER, -1,
					  model->provider.cooldown_until, result);
			return;
		}
	}
	if (share)
		pgrl_share_room(model, share, &share_room);

	/*
	 * Older waiters that fit the limits claim their room first, also when
	 * they wait only for new marks: what they claim comes off both.
	 */
	if (pgrl_model_waiters(model - pgrl_models) > 0)
	{
		int64		before[RL_NUM_DIMS];

		memcpy(before, room, sizeof(before));
		pgrl_claim_for_older_waiters(model, ticket, request, room, share ? &share_room : NULL);
		for (int d = 0; d < RL_NUM_DIMS; d++)
			if (avail[d] != PG_INT64_MAX)
				avail[d] -= before[d] - room[d];
	}
	for (int d = 0; d < RL_NUM_DIMS; d++)
		avail[d] = Min(avail[d], room[d]);
	blocking = pgrl_first_short(room, request);
	if (blocking < 0 && share)
		share_blocking = pgrl_share_blocking(&share_room, request->tokens,
											 request->output_tokens, request->requests);
	if (blocking >= 0)
	{
		int64		shortfall = pgrl_request_amount(blocking, request) - room[blocking];

		pgrl_deny(model, share, blocking, blocking,
				  pgrl_is_bucket(model, blocking) ?
				  pgrl_bucket_fits_at(model->limit[blocking], blocking, shortfall,
									  model->refill_carry[blocking], now) :
				  pgrl_resets_at(model, blocking, now), result);
		return;
	}
	if (share_blocking >= 0)
	{
		int64		shortfall = pgrl_request_amount(share_blocking, request) -
			share_room.room[share_blocking];

		TimestampTz retry_at;

		if (pgrl_is_bucket(model, share_blocking))
		{
			retry_at = pgrl_bucket_fits_at(pgrl_share_limit(model, share, share_blocking),
										   share_blocking, shortfall,
										   share->refill_carry[share_blocking], now);
			/* the guarantee of min_job_type_slots renews with the window */
			if (pgrl_min_job_type_slots > 0)
				retry_at = Min(retry_at,
							   pgrl_window_reset(pgrl_dimension_is_daily(share_blocking) ?
												 model->day_start : model->minute_start,
												 share_blocking));
		}
		else
			retry_at = pgrl_resets_at(model, share_blocking, now);
		pgrl_deny(model, share, RL_LIMITED_BY_JOB_TYPE, share_blocking, retry_at, result);
		return;
	}

	/* It fits the limits: may it be granted before new marks are saved? */
	mark_blocking = pgrl_first_short(avail, request);
	if (mark_blocking < 0 && !pgrl_mark_covers_expiry(model, expires_at))
		mark_blocking = RL_DIM_CONCURRENCY;
	if (mark_blocking >= 0)
	{
		*wake_worker = pgrl_mark_refused(model, request->tokens, request->output_tokens,
										 request->requests,
										 expires_at);
		result->awaiting_mark = true;
		result->limited_by = mark_blocking;
		result->retry_at = pgrl_add_saturating(now, RL_MARK_RETRY_US);
		return;
	}

	/* Claim room in the lease table before reserving anything */
	if (!pgrl_leases_claim_room())
	{
		result->leases_full = true;
		return;
	}

	/* last, the instance's memory: the cap holds across models */
	if (memory && memory->in_flight)
	{
		if (!pgrl_memory_take(memory))
		{
			pgrl_leases_return_room();
			pgrl_deny(model, share, RL_LIMITED_BY_MEMORY, -1, 0, result);
			return;
		}
		result->memory_counted = true;
	}

	model->version++;
	for (int d = 0; d < RL_NUM_DIMS; d++)
		model->used[d] = pgrl_add_saturating(model->used[d],
											 pgrl_request_amount(d, request));
	model->granted++;
	model->usage.requests = pgrl_add_saturating(model->usage.requests, request->requests);
	model->stats.requests = pgrl_add_saturating(model->stats.requests, request->requests);
	if (share)
		pgrl_share_grant(share, model, request->tokens, request->output_tokens,
						 request->requests);
	if (ticket != RL_NEWCOMER_TICKET)
		pgrl_waiter_granted();
	/* also without a concurrency limit: one may be set before it is saved */
	pgrl_mark_note_lease(model, expires_at);
	*wake_worker = pgrl_mark_note_usage(model);
	result->granted = true;
	result->minute_start = model->minute_start;
	result->day_start = model->day_start;
}

/*
 * Does a request of this size lack what the model needs to count it: an
 * output estimate on a model that limits output tokens?  Caller holds
 * config_lock (which the limits change under).
 */
bool
pgrl_ledger_needs_output(int slot, const RlRequest *request)
{
	Assert(pgrl_config_lock_held(LW_SHARED));
	return pgrl_models[slot].limit[RL_DIM_OTPM] != RL_UNLIMITED && !request->has_output;
}

/*
 * Try to admit a request on one model, reserving everything it needs when
 * it fits.  With a job type the request must also fit the job type's share
 * of the model, and with a memory cap (memory, may be NULL) the instance's
 * in-flight jobs of the type must stay under it.  ticket orders the
 * request among waiters (RL_NEWCOMER_TICKET when not waiting): the room
 * older waiters that fit will take is set aside first.  A request that fits
 * everything but the model's durable high-water marks (or whose lease
 * would outlive their horizon) is neither granted nor denied:
 * result->awaiting_mark says the worker was asked for new marks.  Never
 * errors (the caller holds config_lock): a request that can never fit is
 * reported in result->never_fits, a full lease table in
 * result->leases_full.  Caller holds config_lock (shared), so the shares
 * match the configuration.
 */
void
pgrl_ledger_admit(int slot, const RlRequest *request, const RlMemoryCap *memory,
				  int64 ticket, TimestampTz now, TimestampTz expires_at, RlAdmission *result)
{
	RlModel    *model = &pgrl_models[slot];
	RlShare    *share = pgrl_request_share(slot, request);
	bool		wake_worker = false;

	Assert(pgrl_config_lock_held(LW_SHARED));
	memset(result, 0, sizeof(*result));
	result->limited_by = -1;
	result->never_fits = -1;

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	pgrl_admit_locked(model, share, request, memory, ticket, now, expires_at, result,
					  &wake_worker);
	LWLockRelease(&model->lock);
	if (wake_worker)
		pgrl_wake_worker();
}

/*
 * A call returns refused: count one denial on a model that refused it, and
 * on its job type's share, under the limit that refused it there
 * (limited_by of the model's last refusal).  Once per call, however often
 * it was tried while it waited.  Caller holds config_lock.
 */
void
pgrl_ledger_count_refusal(int slot, const RlRequest *request, int limited_by)
{
	RlModel    *model = &pgrl_models[slot];
	const RlJobType *job_type = request->job_type_slot >= 0 ?
		pgrl_job_type(request->job_type_slot) : NULL;

	Assert(pgrl_config_lock_held(LW_SHARED));
	Assert(limited_by >= 0 && limited_by < RL_NUM_LIMITED_BY);
	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	model->denied++;
	if (limited_by >= 0 && limited_by < RL_NUM_LIMITED_BY)
		model->stats.denied_by[limited_by]++;
	model->version++;
	if (job_type && job_type->in_use && job_type->generation == request->job_type_generation)
	{
		RlShare    *share = pgrl_share(slot, request->job_type_slot);

		if (share->model_generation == model->generation &&
			share->job_type_generation == request->job_type_generation)
		{
			share->denied++;
			share->version++;
		}
	}
	LWLockRelease(&model->lock);
}

/*
 * A call that waited on a model ended (acquire.c): count how, and how long
 * it waited.  Nothing when the slot no longer holds the model of that
 * generation.  Not on the way of an acquire that does not wait.  Caller
 * holds config_lock.
 */
void
pgrl_ledger_count_wait(int slot, uint32 generation, RlWaitOutcome outcome, int64 waited_us)
{
	RlModel    *model = &pgrl_models[slot];

	Assert(pgrl_config_lock_held(LW_SHARED));
	Assert(outcome >= 0 && outcome < RL_NUM_WAIT_OUTCOMES);
	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	if (model->in_use && model->generation == generation)
	{
		model->stats.waits[outcome]++;
		model->stats.wait_us[outcome] =
			pgrl_add_saturating(model->stats.wait_us[outcome], Max(waited_us, 0));
		model->version++;
	}
	LWLockRelease(&model->lock);
}

/*
 * A lease leaves: free its concurrency slot on the model and on its job
 * type's share.  The one place a slot is given back (release and expiry).
 * Returns whether the worker needs waking.  Caller holds the model's lock.
 */
static bool
pgrl_free_slot(RlModel *model, RlShare *share, const RlLease *lease, TimestampTz now)
{
	AssertModelLocked(model, LW_EXCLUSIVE);
	pgrl_mark_free_slot(model, lease, now);
	/* no lease left whose overage the provider may have counted already */
	if (model->used[RL_DIM_CONCURRENCY] == 0)
		memset(model->provider.advance, 0, sizeof(model->provider.advance));
	if (share)
	{
		if (share->used[RL_DIM_CONCURRENCY] > 0)
			share->used[RL_DIM_CONCURRENCY]--;
		share->version++;
	}
	model->version++;
	return pgrl_note_capacity_freed(model, RL_NOTIFY_RELEASE, now);
}

/*
 * An expired lease frees its concurrency slot and keeps its window
 * reservation (nothing when its model was dropped meanwhile).
 */
void
pgrl_ledger_expire(const RlLease *lease, TimestampTz now)
{
	RlModel    *model = &pgrl_models[lease->model_slot];
	bool		known;
	bool		notify = false;

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	known = model->in_use && model->generation == lease->model_generation;
	if (known)
	{
		notify = pgrl_free_slot(model, pgrl_lease_share(lease), lease, now);
		model->expired++;
	}
	LWLockRelease(&model->lock);
	if (known && pgrl_model_waiters(lease->model_slot) > 0)
		pgrl_wake_waiters(lease->model_slot);
	if (notify)
		pgrl_wake_worker();
}

/* price (per million tokens) x tokens, added to sum */
static Numeric
pgrl_add_cost(Numeric sum, const RlNumeric *price, int64 tokens)
{
	Datum		part;

	if (tokens == 0)
		return sum;
	part = DirectFunctionCall2(numeric_mul,
							   NumericGetDatum((Numeric) price->data),
							   DirectFunctionCall1(int8_numeric, Int64GetDatum(tokens)));
	return DatumGetNumeric(DirectFunctionCall2(numeric_add, NumericGetDatum(sum), part));
}

/* Cost of a release: input, output and cached tokens at per-million prices */
static Numeric
pgrl_cost(const RlUsage *usage, const RlNumeric *price_input,
		  const RlNumeric *price_output, const RlNumeric *price_cached)
{
	Numeric		sum = int64_to_numeric(0);

	sum = pgrl_add_cost(sum, price_input, usage->input);
	sum = pgrl_add_cost(sum, price_output, usage->output);
	sum = pgrl_add_cost(sum, price_cached, usage->cached);
	/* multiplying by 10^-6 is exact, where dividing could round */
	sum = DatumGetNumeric(DirectFunctionCall2(numeric_mul, NumericGetDatum(sum),
											  NumericGetDatum(int64_div_fast_to_numeric(1, 6))));
	return DatumGetNumeric(DirectFunctionCall1(numeric_trim_scale, NumericGetDatum(sum)));
}

/* A release's usage (and its overage, when positive) added to a day */
static void
pgrl_add_day_usage(RlDayUsage *day, const RlUsage *usage, int64 overage)
{
	if (usage->has_tokens)
	{
		day->input = pgrl_add_saturating(day->input, usage->input);
		day->output = pgrl_add_saturating(day->output, usage->output);
		day->cached = pgrl_add_saturating(day->cached, usage->cached);
	}
	if (overage > 0)
	{
		day->overage_events++;
		day->overage_tokens = pgrl_add_saturating(day->overage_tokens, overage);
	}
}

/* Add cost to an inline sum; false when the sum has too many digits to keep */
static bool
pgrl_add_cost_to(RlNumeric *sum, Numeric cost)
{
	Datum		total = DirectFunctionCall2(numeric_add,
											NumericGetDatum(pgrl_numeric_load(sum)),
											NumericGetDatum(cost));

	total = DirectFunctionCall1(numeric_trim_scale, total);
	return pgrl_numeric_store(sum, DatumGetNumeric(total));
}

/*
 * A lease's cost, added to today's cost of its model and job type, and to
 * the model's running total
 */
static void
pgrl_add_cost_today(const RlLease *lease, Numeric cost, TimestampTz now)
{
	RlModel    *model = &pgrl_models[lease->model_slot];
	bool		kept = true;
	bool		kept_total = true;
	char		name[RL_NAME_MAX_LEN + 1];

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	if (model->in_use && model->generation == lease->model_generation)
	{
		RlShare    *share = pgrl_lease_share(lease);

		pgrl_roll_windows(model, now);
		kept = pgrl_add_cost_to(&model->usage.cost, cost);
		kept_total = pgrl_add_cost_to(&model->stats.cost, cost);
		strlcpy(name, model->name, sizeof(name));
		if (share)
		{
			AssertShareDay(share, model);
			(void) pgrl_add_cost_to(&share->usage.cost, cost);
			share->version++;
		}
		model->version++;
	}
	LWLockRelease(&model->lock);
	/* reported only now: never with an LWLock held */
	if (!kept)
		elog(WARNING, "pg_ratelimit cost of the day of model \"%s\" has too many digits to keep",
			 name);
	if (!kept_total)
		elog(WARNING, "pg_ratelimit total cost of model \"%s\" has too many digits to keep",
			 name);
}

/* What settling a lease under the model's lock found */
typedef struct RlSettleLocked
{
	bool		expired;		/* due already: settled as an expiry */
	bool		wake_worker;
	bool		any_window_current;
	int64		actual_tokens;
	RlNumeric	price_input;
	RlNumeric	price_output;
	RlNumeric	price_cached;
	bool		priced;
} RlSettleLocked;

/* The body of pgrl_ledger_settle, with the model locked and in use */
static void
pgrl_settle_locked(RlModel *model, const RlLease *lease, const RlUsage *usage,
				   TimestampTz now, RlSettleLocked *out)
{
	RlShare    *share = pgrl_lease_share(lease);
	int32		actual_requests;
	int64		actual_output;
	int64		overage;

	AssertModelLocked(model, LW_EXCLUSIVE);
	if (lease->expires_at <= now)
	{
		out->expired = true;
		out->wake_worker = pgrl_free_slot(model, share, lease, now);
		model->expired++;
		return;
	}

	pgrl_roll_windows(model, now);
	out->actual_tokens = !usage->has_tokens ? lease->tokens :
		model->count_cached ? usage->tokens_with_cached : usage->tokens_without_cached;
	actual_requests = usage->has_requests ? usage->requests : lease->requests;
	/* of them output: the rest counts as input (itpm), cached included */
	actual_output = !usage->has_tokens ? lease->output_tokens :
		Min(usage->output, out->actual_tokens);
	overage = out->actual_tokens - lease->tokens;
	/* an overage may give the share usage to refill */
	if (share)
		model->shares_idle = false;

	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
	{
		int64		delta = pgrl_dimension_amount(d, out->actual_tokens, actual_output,
												  actual_requests) -
			pgrl_dimension_amount(d, lease->tokens, lease->output_tokens, lease->requests);

		/* a bucket takes refunds back whenever they come, up to full */
		bool		same_window = pgrl_is_bucket(model, d) ||
			(pgrl_dimension_is_daily(d) ?
			 lease->day_start == model->day_start :
			 lease->minute_start == model->minute_start);

		/* an overage the provider reported (rl_observe) counts once */
		int64		model_delta = delta - pgrl_absorb_overage(model, d, delta);

		out->any_window_current |= same_window;
		/* the job type's share moves with the model */
		if (same_window)
		{
			model->used[d] = Max(0, pgrl_add_saturating(model->used[d], model_delta));
			if (share)
				share->used[d] = Max(0, pgrl_add_saturating(share->used[d], delta));
		}
		else if (delta > 0)
		{
			model->used[d] = pgrl_add_saturating(model->used[d], model_delta);
			if (share)
				share->used[d] = pgrl_add_saturating(share->used[d], delta);
		}
	}
	out->wake_worker = pgrl_free_slot(model, share, lease, now);
	if (share && pgrl_note_share_release(model))
		out->wake_worker = true;
	if (overage > 0)
	{
		model->overage_events++;
		model->overage_tokens = pgrl_add_saturating(model->overage_tokens, overage);
	}
	pgrl_add_day_usage(&model->usage, usage, overage);
	if (usage->has_tokens)
	{
		model->stats.input = pgrl_add_saturating(model->stats.input, usage->input);
		model->stats.output = pgrl_add_saturating(model->stats.output, usage->output);
		model->stats.cached = pgrl_add_saturating(model->stats.cached, usage->cached);
	}
	if (share)
	{
		AssertShareDay(share, model);
		pgrl_add_day_usage(&share->usage, usage, overage);
	}
	out->price_input = model->price_input;
	out->price_output = model->price_output;
	out->price_cached = model->price_cached;
	out->priced = model->priced;
	/* an overage past the mark: have a mark cover it soon */
	if (pgrl_mark_note_usage(model))
		out->wake_worker = true;
}

/*
 * Settle a lease taken from the lease table, with the usage its release
 * reported.  In the window it was acquired in, counters move by actual -
 * estimate (never below zero); once that window has ended there is no
 * refund, and an overage is charged to the current window.  Minute and day
 * windows are judged separately.  A lease that was due is settled as an
 * expiry.
 */
void
pgrl_ledger_settle(const RlLease *lease, const RlUsage *usage, TimestampTz now,
				   RlSettlement *result)
{
	RlModel    *model = &pgrl_models[lease->model_slot];
	RlSettleLocked settled;

	memset(result, 0, sizeof(*result));
	memset(&settled, 0, sizeof(settled));
	result->tokens_estimated = lease->tokens;

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	result->model_known = model->in_use && model->generation == lease->model_generation;
	if (result->model_known)
	{
		strlcpy(result->model, model->name, sizeof(result->model));
		pgrl_settle_locked(model, lease, usage, now, &settled);
	}
	LWLockRelease(&model->lock);
	if (!result->model_known)
		return;
	if (pgrl_model_waiters(lease->model_slot) > 0)
		pgrl_wake_waiters(lease->model_slot);
	if (settled.wake_worker)
		pgrl_wake_worker();
	if (settled.expired)
		return;

	result->released = true;
	if (!usage->has_tokens)
		return;
	result->has_actual = true;
	result->tokens_actual = settled.actual_tokens;
	result->overage = Max(0, settled.actual_tokens - lease->tokens);
	result->tokens_refunded = settled.any_window_current && settled.actual_tokens < lease->tokens ?
		lease->tokens - settled.actual_tokens : 0;
	if (!settled.priced)
	{
		result->cost = int64_to_numeric(0);
		return;
	}
	result->cost = pgrl_cost(usage, &settled.price_input, &settled.price_output,
							 &settled.price_cached);
	if (DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(result->cost),
										  NumericGetDatum(int64_to_numeric(0)))) != 0)
		pgrl_add_cost_today(lease, result->cost, now);
}

/*
 * What rl_capacity shows of a model for a request of this size: per
 * limit, what is used, when it resets, and how many such requests fit
 * (also in the job type's share); total_dim is the limit with the fewest.
 * False when the model is not in use.  Caller holds config_lock.
 */
bool
pgrl_ledger_capacity(int slot, const RlRequest *request, TimestampTz now,
					 RlCapacity *capacity)
{
	RlModel    *model = &pgrl_models[slot];
	RlShare    *share = pgrl_request_share(slot, request);
	RlShareRoom share_room;

	Assert(pgrl_config_lock_held(LW_SHARED));
	/* exclusive: the windows of the model and its shares may need rolling */
	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	if (!model->in_use)
	{
		LWLockRelease(&model->lock);
		return false;
	}
	pgrl_roll_windows(model, now);
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		capacity->limit[d] = model->limit[d];
		capacity->used[d] = model->used[d];
		capacity->resets_at[d] = pgrl_resets_at(model, d, now);
	}
	if (share)
		pgrl_share_room(model, share, &share_room);
	LWLockRelease(&model->lock);

	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		amount = pgrl_request_amount(d, request);

		capacity->slots[d] = -1;
		if (capacity->limit[d] == RL_UNLIMITED || amount == 0)
			continue;
		capacity->slots[d] = Max(0, capacity->limit[d] - capacity->used[d]) / amount;
		/* a job type also counts what its share leaves */
		if (share)
			capacity->slots[d] = Min(capacity->slots[d],
									 Max(Max(0, share_room.room[d]) / amount,
										 share_room.guaranteed[d]));
	}
	capacity->total_dim = pgrl_min_dimension(capacity->slots);
	return true;
}

/* A model's row of rl_status; false when the slot is not in use */
bool
pgrl_ledger_model_status(int slot, TimestampTz now, RlModelStatus *status)
{
	RlModel    *model = &pgrl_models[slot];
	TimestampTz minute_start;
	TimestampTz day_start;

	if (!model->in_use)
		return false;
	LWLockAcquire(&model->lock, LW_SHARED);
	if (!model->in_use)
	{
		LWLockRelease(&model->lock);
		return false;
	}
	strlcpy(status->name, model->name, sizeof(status->name));
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		status->limit[d] = model->limit[d];
		status->used[d] = pgrl_used_now(model, d, now);
	}
	/* the windows do not move back when the clock does */
	minute_start = pgrl_window_at(model->minute_start, now, USECS_PER_MINUTE);
	day_start = pgrl_window_at(model->day_start, now, USECS_PER_DAY);
	status->minute_resets_at = pgrl_window_reset(minute_start, RL_DIM_RPM);
	status->day_resets_at = pgrl_window_reset(day_start, RL_DIM_RPD);
	status->granted = model->granted;
	status->denied = model->denied;
	status->expired = model->expired;
	status->overage_events = model->overage_events;
	status->overage_tokens = model->overage_tokens;
	if (model->usage.day_start == day_start)
		status->cost_today = model->usage.cost;
	else
		memset(&status->cost_today, 0, sizeof(status->cost_today));
	status->window_type = model->window_type;
	status->provider = model->provider;
	LWLockRelease(&model->lock);
	return true;
}

/* A model's row of rl_stats; false when the slot is not in use */
bool
pgrl_ledger_model_stats(int slot, RlModelStatsRow *row)
{
	RlModel    *model = &pgrl_models[slot];

	if (!model->in_use)
		return false;
	LWLockAcquire(&model->lock, LW_SHARED);
	if (!model->in_use)
	{
		LWLockRelease(&model->lock);
		return false;
	}
	strlcpy(row->name, model->name, sizeof(row->name));
	row->granted = model->granted;
	row->denied = model->denied;
	row->expired = model->expired;
	row->overage_events = model->overage_events;
	row->overage_tokens = model->overage_tokens;
	row->stats = model->stats;
	LWLockRelease(&model->lock);
	return true;
}

/*
 * For rl_allocation: a model's name and limits, and the ratio in force of
 * each of the given job types on it.  False when the slot is not in use.
 */
bool
pgrl_ledger_model_limits(int slot, char *name, int64 *limits, const int *job_type_slots,
						 int num_job_types, double *ratios)
{
	RlModel    *model = &pgrl_models[slot];
	bool		in_use;

	LWLockAcquire(&model->lock, LW_SHARED);
	in_use = model->in_use;
	if (in_use)
	{
		strlcpy(name, model->name, RL_NAME_MAX_LEN + 1);
		memcpy(limits, model->limit, sizeof(model->limit));
		for (int k = 0; k < num_job_types; k++)
			ratios[k] = pgrl_share(slot, job_type_slots[k])->ratio;
	}
	LWLockRelease(&model->lock);
	return in_use;
}

/*
 * Roll a model's windows to now and take its pending rl_capacity notice,
 * unless it is a release or config notice and hold_release says it must
 * wait (then notice->held).  Wakes the waiters when slots held after a
 * restore came free.  Worker only (notify.c).
 */
void
pgrl_ledger_roll(int slot, TimestampTz now, bool hold_release, RlNotice *notice)
{
	RlModel    *model = &pgrl_models[slot];
	bool		wake = false;

	/* called for every slot each round: cheap for the free ones */
	notice->reason = RL_NOTIFY_NONE;
	notice->held = false;
	notice->refill_at = DT_NOEND;
	if (!model->in_use)
		return;
	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	if (model->in_use)
	{
		pgrl_roll_windows(model, now);
		/* slots held after a restore just came free: waiters look again */
		wake = model->marks.held_released;
		model->marks.held_released = false;

		/*
		 * a bucket refilled for what it refused, a cooldown ended: waiters
		 * look
		 */
		if (model->notify_reason == RL_NOTIFY_REFILL ||
			model->notify_reason == RL_NOTIFY_COOLDOWN_END)
			wake = true;
		if (model->notice_due_at != 0)
			notice->refill_at = model->notice_due_at;
		if (model->notify_reason != RL_NOTIFY_NONE &&
			model->notify_reason != RL_NOTIFY_WINDOW_RESET && hold_release)
			notice->held = true;
		else if (model->notify_reason != RL_NOTIFY_NONE)
		{
			notice->reason = model->notify_reason;
			notice->at = model->notify_at;
			strlcpy(notice->model, model->name, sizeof(notice->model));
			model->notify_reason = RL_NOTIFY_NONE;
			model->denied_since_notify = false;
		}
	}
	LWLockRelease(&model->lock);
	if (wake)
		pgrl_wake_waiters(slot);
}

/*
 * Copy a model, and those of its shares that changed since they were saved
 * (saved_share_versions, by job type slot), for saving; false when the
 * model is not in use or has not changed since saved_generation and
 * saved_version.  job_types are the job types in use; a share copy's
 * job_type indexes them.  shares has room for num_job_types.
 */
bool
pgrl_ledger_snapshot(int slot, uint32 saved_generation, uint64 saved_version,
					 const RlJobTypeName *job_types, int num_job_types,
					 const uint64 *saved_share_versions, RlModelSnapshot *snapshot,
					 RlShareSnapshot *shares, int *num_shares)
{
	RlModel    *model = &pgrl_models[slot];

	*num_shares = 0;
	if (!model->in_use)
		return false;
	LWLockAcquire(&model->lock, LW_SHARED);
	if (!model->in_use ||
		(saved_generation == model->generation && saved_version == model->version))
	{
		LWLockRelease(&model->lock);
		return false;
	}
	strlcpy(snapshot->name, model->name, sizeof(snapshot->name));
	snapshot->generation = model->generation;
	snapshot->version = model->version;
	snapshot->minute_start = model->minute_start;
	snapshot->day_start = model->day_start;
	snapshot->refilled_at = model->window_type == RL_WINDOW_BUCKET ? model->refilled_at :
		RL_NO_WINDOW;
	memcpy(snapshot->used, model->used, sizeof(model->used));
	snapshot->granted = model->granted;
	snapshot->denied = model->denied;
	snapshot->expired = model->expired;
	snapshot->overage_events = model->overage_events;
	snapshot->overage_tokens = model->overage_tokens;
	snapshot->usage = model->usage;
	snapshot->usage_ended = model->usage_ended;
	snapshot->stats = model->stats;
	for (int k = 0; k < num_job_types; k++)
	{
		RlShare    *share = pgrl_share(slot, job_types[k].slot);
		RlShareSnapshot *copy = &shares[*num_shares];

		if (share->job_type_generation != job_types[k].generation ||
			share->model_generation != model->generation ||
			share->version == saved_share_versions[job_types[k].slot])
			continue;
		copy->job_type = k;
		copy->version = share->version;
		copy->base_ratio = share->base_ratio;
		copy->ratio = share->ratio;
		copy->refilled_at = snapshot->refilled_at;
		memcpy(copy->used, share->used, sizeof(share->used));
		copy->jobs_minute = share->jobs_minute;
		copy->jobs_day = share->jobs_day;
		copy->granted = share->granted;
		copy->denied = share->denied;
		copy->usage = share->usage;
		copy->usage_ended = share->usage_ended;
		(*num_shares)++;
	}
	LWLockRelease(&model->lock);
	return true;
}

/*
 * Restoring.  A full load (config.c, persist.c) clears shared memory,
 * applies the configuration, and then puts the saved state back, with
 * config_lock held exclusively and nothing admitted meanwhile: windows
 * (restore_begin), each saved counter, mark and share, each saved lease,
 * and at the end the floors the leases set and the slots held for leases a
 * crash forgot (restore_end).  What is restored fails closed: every current
 * window counts at least its saved mark and the reservations of the
 * restored leases made in it, and concurrency its saved mark
 * (ledger_marks.c); after a clean stop the marks are exact and nothing is
 * over-counted.  config_lock, held exclusively, keeps every other user of
 * the ledger out meanwhile.
 */
static TimestampTz restore_now;
static TimestampTz restore_minute_start;
static TimestampTz restore_day_start;
static int64 *restore_floor;	/* [model slot * RL_DIM_CONCURRENCY + dim] */

/* Scratch space a restore needs, allocated by the caller before locking */
Size
pgrl_ledger_restore_scratch_size(void)
{
	return mul_size(mul_size(pgrl_max_models, RL_DIM_CONCURRENCY), sizeof(int64));
}

/* Begin a restore into these windows; scratch from the caller, zeroed */
void
pgrl_ledger_restore_begin(TimestampTz now, TimestampTz minute_start, TimestampTz day_start,
						  int64 *scratch)
{
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	restore_now = now;
	restore_minute_start = minute_start;
	restore_day_start = day_start;
	restore_floor = scratch;
}

/*
 * The model a saved row names, with the restore's windows set, or NULL
 * when it is no longer configured.
 */
static RlModel *
pgrl_restored_model(const char *name)
{
	int			slot = pgrl_name_index_find(model_index, name);
	RlModel    *model;

	if (slot < 0)
		return NULL;
	model = &pgrl_models[slot];
	/* a bucket's usage is as of the restore, whatever the window */
	model->refilled_at = Max(model->refilled_at, restore_now);
	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
		if (pgrl_dimension_is_daily(d) ? model->day_start != restore_day_start :
			model->minute_start != restore_minute_start)
			model->used[d] = 0;
	model->minute_start = restore_minute_start;
	model->day_start = restore_day_start;
	return model;
}

/*
 * A bucket model's saved usage (as of refilled_at), refilled from then to
 * the restore: what it lacked then can only have refilled since, and what
 * was granted after the save is bounded by the marks (restored after).
 * With a share, the share's buckets (its part of each limit).
 */
static void
pgrl_restore_buckets(const RlModel *model, const RlShare *share, int64 *used, int64 *carry,
					 const int64 *saved, TimestampTz refilled_at)
{
	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
	{
		if (!pgrl_is_bucket(model, d))
			continue;
		used[d] = saved[d];
		carry[d] = 0;
		if (restore_now > refilled_at)
			pgrl_refill_bucket(&used[d], &carry[d],
							   share ? pgrl_share_limit(model, share, d) : model->limit[d],
							   d, restore_now - refilled_at);
	}
}

/* A saved row's usage, by limit */
static void
pgrl_saved_usage(int64 *used, int64 requests_minute, int64 tokens_minute,
				 int64 input_tokens_minute, int64 output_tokens_minute,
				 int64 requests_day, int64 tokens_day)
{
	used[RL_DIM_RPM] = requests_minute;
	used[RL_DIM_TPM] = tokens_minute;
	used[RL_DIM_ITPM] = input_tokens_minute;
	used[RL_DIM_OTPM] = output_tokens_minute;
	used[RL_DIM_RPD] = requests_day;
	used[RL_DIM_TPD] = tokens_day;
}

/* A model's saved counters, for windows that are still current */
void
pgrl_ledger_restore_counter(const RlSavedCounter *c)
{
	RlModel    *model = pgrl_restored_model(c->model);
	int64		saved[RL_DIM_CONCURRENCY];

	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	if (model == NULL)
		return;
	pgrl_saved_usage(saved, c->requests_minute, c->tokens_minute, c->input_tokens_minute,
					 c->output_tokens_minute, c->requests_day, c->tokens_day);
	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
		if (pgrl_dimension_is_daily(d) ? c->day_start == restore_day_start :
			c->minute_start == restore_minute_start)
			model->used[d] = saved[d];
	if (model->window_type == RL_WINDOW_BUCKET && c->refilled_at != RL_NO_WINDOW)
		pgrl_restore_buckets(model, NULL, model->used, model->refill_carry, saved,
							 c->refilled_at);
	model->granted = c->granted;
	model->denied = c->denied;
	model->expired = c->expired;
	model->overage_events = c->overage_events;
	model->overage_tokens = c->overage_tokens;
	if (c->has_stats)
	{
		TimestampTz since = model->stats.since;

		model->stats = c->stats;
		/* a row saved before 1.1 was updated to it: counting starts now */
		if (c->stats.since == DT_NOBEGIN)
			model->stats.since = since;
	}
	if (c->usage.day_start == restore_day_start)
		model->usage = c->usage;
	else
	{
		/* a day that ended while we were down: rl_usage_daily gets it */
		model->usage_ended = c->usage;
		model->usage.day_start = restore_day_start;
	}
}

/*
 * A model's saved marks: each current window counts as used up to its mark
 * (what may have been granted after the last save of the counters), and
 * the marks are in force again.
 */
void
pgrl_ledger_restore_marks(const char *name, const RlMarkSet *saved)
{
	RlModel    *model = pgrl_restored_model(name);
	RlMarkSet	marks;

	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	if (model == NULL)
		return;
	marks = *saved;
	marks.bucket = model->window_type == RL_WINDOW_BUCKET;
	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
	{
		if (model->limit[d] == RL_UNLIMITED)
			continue;
		/* after a clean stop a bucket is as saved, refilled since */
		if (pgrl_is_bucket(model, d) && marks.clean)
			continue;
		model->used[d] = Max(model->used[d],
							 pgrl_mark_bound(&marks, d, restore_minute_start,
											 restore_day_start));
	}
	model->marks.saved = marks;
	/* exact marks of a clean stop: nothing more until new ones are saved */
	model->marks.closed = saved->clean;
}

/*
 * A job type's saved counters on a model, for windows that are still
 * current; its saved ratio too, when the configured ratio it moved from is
 * still the configured one.  The shares were just reset to the
 * configuration (pgrl_ledger_apply_shares).
 */
void
pgrl_ledger_restore_share(const RlSavedShare *saved)
{
	int			model_slot = pgrl_name_index_find(model_index, saved->model);
	int			job_type_slot = pgrl_job_type_slot(saved->job_type);
	RlShare    *share;
	int64		used[RL_DIM_CONCURRENCY];

	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	if (model_slot < 0 || job_type_slot < 0)
		return;
	share = pgrl_share(model_slot, job_type_slot);
	pgrl_models[model_slot].shares_idle = false;
	pgrl_saved_usage(used, saved->requests_minute, saved->tokens_minute,
					 saved->input_tokens_minute, saved->output_tokens_minute,
					 saved->requests_day, saved->tokens_day);
	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
		if (pgrl_dimension_is_daily(d) ? saved->day_start == restore_day_start :
			saved->minute_start == restore_minute_start)
			share->used[d] = used[d];
	if (saved->minute_start == restore_minute_start)
		share->jobs_minute = saved->jobs_minute;
	if (saved->day_start == restore_day_start)
		share->jobs_day = saved->jobs_day;
	share->granted = saved->granted;
	share->denied = saved->denied;
	if (saved->usage.day_start == restore_day_start)
		share->usage = saved->usage;
	else if (pgrl_day_used(&saved->usage))
	{
		/* a day that ended while we were down: rl_usage_daily gets it */
		share->usage_ended = saved->usage;
		share->usage.day_start = restore_day_start;
	}
	if (share->flexible && saved->base_ratio == share->base_ratio &&
		saved->ratio >= 0 && saved->ratio <= 1)
		share->ratio = saved->ratio;
	if (pgrl_models[model_slot].window_type == RL_WINDOW_BUCKET &&
		saved->refilled_at != RL_NO_WINDOW)
		pgrl_restore_buckets(&pgrl_models[model_slot], share, share->used,
							 share->refill_carry, used, saved->refilled_at);
}

/*
 * A saved lease of a model (by name): fill in what the ledger knows of it
 * (its model's slot and generation, its job type, whether its slot stays
 * held) before the caller puts it in the lease table.  False when the
 * model is no longer configured.
 */
bool
pgrl_ledger_restore_lease(const char *name, RlLease *lease)
{
	RlModel    *model = pgrl_restored_model(name);

	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	if (model == NULL)
		return false;
	lease->model_slot = model - pgrl_models;
	lease->model_generation = model->generation;
	if (lease->job_type_slot >= 0)
		lease->job_type_generation = pgrl_job_type(lease->job_type_slot)->generation;
	lease->restored = !model->marks.saved.clean;
	return true;
}

/*
 * A restored lease is in the lease table: it is in flight, for its job
 * type too, and its reservation counts in the windows it was made in when
 * they are current.
 */
void
pgrl_ledger_restore_lease_counted(const RlLease *lease)
{
	RlModel    *model = &pgrl_models[lease->model_slot];
	RlShare    *share;

	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	share = pgrl_lease_share(lease);
	model->used[RL_DIM_CONCURRENCY]++;
	if (share)
		share->used[RL_DIM_CONCURRENCY]++;
	LWLockRelease(&model->lock);
	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
	{
		bool		current = pgrl_dimension_is_daily(d) ?
			lease->day_start == restore_day_start :
			lease->minute_start == restore_minute_start;
		int64	   *floor = &restore_floor[(Size) lease->model_slot * RL_DIM_CONCURRENCY + d];

		/* a bucket's saved usage and marks hold it already, refilled since */
		if (current && !pgrl_is_bucket(model, d))
			*floor = pgrl_add_saturating(*floor,
										 pgrl_dimension_amount(d, lease->tokens, lease->output_tokens, lease->requests));
	}
}

/*
 * A saved lease there is no room for (ratelimit.max_leases was lowered):
 * it may still be in use, so its slot is held until it expires.
 */
void
pgrl_ledger_restore_lease_left_out(const RlLease *lease)
{
	RlModel    *model = &pgrl_models[lease->model_slot];

	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	model->used[RL_DIM_CONCURRENCY]++;
	model->marks.held++;
	model->marks.held_until = Max(model->marks.held_until, lease->expires_at);
	LWLockRelease(&model->lock);
}

/*
 * After a stop that was not clean, leases granted after the last save of
 * the leases are unknown.  Hold the concurrency slots the marks allow for
 * them until the latest any of them can expire (the marks' lease horizon),
 * and let no restored lease give its slot back before then either: it may
 * have been released already, its slot taken by one of the unknown ones
 * (ledger_marks.c).  Returns how many slots are held.
 */
static int64
pgrl_restore_held_slots(RlModel *model, TimestampTz now)
{
	int64		unknown;

	if (model->limit[RL_DIM_CONCURRENCY] == RL_UNLIMITED || model->marks.saved.clean ||
		model->marks.saved.horizon <= now)
		return model->marks.held;
	unknown = Max(0, model->marks.saved.mark[RL_DIM_CONCURRENCY] -
				  model->used[RL_DIM_CONCURRENCY]);
	model->marks.held += unknown;
	model->marks.held_until = Max(model->marks.held_until, model->marks.saved.horizon);
	model->used[RL_DIM_CONCURRENCY] += unknown;
	return model->marks.held;
}

/*
 * End a restore: each current window counts at least the reservations of
 * the restored leases made in it, slots are held for leases a crash
 * forgot, and every share's day is its model's.  Reports the slots held
 * (*held_slots, until *held_until).
 */
void
pgrl_ledger_restore_end(TimestampTz now, int64 *held_slots, TimestampTz *held_until)
{
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	*held_slots = 0;
	*held_until = 0;
	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		RlModel    *model = &pgrl_models[slot];
		int64		held;

		if (!model->in_use)
			continue;
		for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
			model->used[d] = Max(model->used[d],
								 restore_floor[(Size) slot * RL_DIM_CONCURRENCY + d]);
		held = pgrl_restore_held_slots(model, now);
		if (held > 0)
		{
			*held_slots += held;
			*held_until = Max(*held_until, model->marks.held_until);
		}
		/* shares without a saved row start their day with the model's */
		for (int j = 0; j < pgrl_max_job_types; j++)
		{
			RlShare    *share = pgrl_share(slot, j);

			if (share->usage.day_start == RL_NO_WINDOW)
				share->usage.day_start = model->day_start;
		}
	}
	restore_floor = NULL;
}
