/*-------------------------------------------------------------------------
 *
 * lease.c
 *		The lease table: inserting, taking, expiring and settling leases.
 *
 * A lease lives in the partitioned shared hash rl_lease_table, keyed by its
 * id.  Whoever removes a lease from the table settles it, so a lease is
 * settled exactly once: release settles it with actual usage, the expiry
 * sweep frees its concurrency slot and keeps its window reservation, and
 * dropping its model discards it.
 *
 * earliest_expiry is a hint: no open lease expires before it.  It lets
 * every acquire and release check for due expiries with one atomic read.
 * The sweep resets it before scanning, so an acquire that lowers it during
 * a sweep is never lost.  Timestamps are stored with the sign bit flipped,
 * which makes unsigned order agree with signed order.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"

#include "admission.h"
#include "holders.h"
#include "instance.h"
#include "lease.h"
#include "mark.h"
#include "pg_ratelimit.h"
#include "share.h"
#include "wait.h"
#include "worker.h"

#define RL_SIGN_BIT		(UINT64CONST(1) << 63)

static inline uint64
rl_encode_time(TimestampTz t)
{
	return ((uint64) t) ^ RL_SIGN_BIT;
}

static inline TimestampTz
rl_decode_time(uint64 v)
{
	return (TimestampTz) (v ^ RL_SIGN_BIT);
}

static bool rl_take_lease_checked(int64 lease_id, int session_pid, RlLease *lease);

/* The partition lock of a lease id, and its hash code */
static LWLock *
rl_lease_partition(int64 lease_id, uint32 *hashcode)
{
	*hashcode = get_hash_value(rl_lease_table, &lease_id);
	return &rl_state->lease_locks[*hashcode % RL_LEASE_PARTITIONS];
}

static void
rl_lock_all_partitions(LWLockMode mode)
{
	for (int i = 0; i < RL_LEASE_PARTITIONS; i++)
		LWLockAcquire(&rl_state->lease_locks[i], mode);
}

static void
rl_unlock_all_partitions(void)
{
	for (int i = RL_LEASE_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&rl_state->lease_locks[i]);
}

/* No open lease expires before this time */
TimestampTz
rl_earliest_expiry(void)
{
	return rl_decode_time(pg_atomic_read_u64(&rl_state->earliest_expiry));
}

/* Lower the earliest-expiry hint to cover a new lease */
void
rl_note_lease_expiry(TimestampTz expires_at)
{
	uint64		encoded = rl_encode_time(expires_at);
	uint64		current = pg_atomic_read_u64(&rl_state->earliest_expiry);

	while (encoded < current &&
		   !pg_atomic_compare_exchange_u64(&rl_state->earliest_expiry,
										   &current, encoded))
		;
}

/*
 * Put a lease in the table; false when its id is there already or the
 * table is full (it is preallocated for max_leases, and the caller has
 * counted the lease in open_leases).  Never errors: callers hold
 * config_lock.
 */
bool
rl_put_lease(const RlLease *lease)
{
	uint32		hashcode;
	LWLock	   *partition = rl_lease_partition(lease->lease_id, &hashcode);
	RlLease    *entry;
	bool		found;
	bool		stored;

	LWLockAcquire(partition, LW_EXCLUSIVE);
	entry = hash_search_with_hash_value(rl_lease_table, &lease->lease_id,
										hashcode, HASH_ENTER_NULL, &found);
	stored = entry != NULL && !found;
	if (stored)
		memcpy(entry, lease, sizeof(RlLease));
	LWLockRelease(partition);
	if (!stored)
		return false;
	pg_atomic_fetch_add_u64(&rl_state->lease_version, 1);
	rl_note_lease_expiry(lease->expires_at);
	return true;
}

/*
 * Remove a lease from the table and return a copy of it; false when there
 * is no such lease.  Only the role that acquired it (or a member of that
 * role) may take it.
 */
bool
rl_take_lease(int64 lease_id, RlLease *lease)
{
	return rl_take_lease_checked(lease_id, 0, lease);
}

/*
 * The same for a backend that exits: takes a session-bound lease of that
 * backend only, whatever the current role.  Never errors.
 */
bool
rl_take_session_lease(int64 lease_id, int session_pid, RlLease *lease)
{
	return rl_take_lease_checked(lease_id, session_pid, lease);
}

/* Is this lease open? */
bool
rl_lease_is_open(int64 lease_id)
{
	uint32		hashcode;
	LWLock	   *partition = rl_lease_partition(lease_id, &hashcode);
	bool		found;

	LWLockAcquire(partition, LW_SHARED);
	(void) hash_search_with_hash_value(rl_lease_table, &lease_id, hashcode,
									   HASH_FIND, &found);
	LWLockRelease(partition);
	return found;
}

static bool
rl_take_lease_checked(int64 lease_id, int session_pid, RlLease *lease)
{
	uint32		hashcode;
	LWLock	   *partition = rl_lease_partition(lease_id, &hashcode);
	RlLease    *entry;
	bool		checked_role = false;

	LWLockAcquire(partition, LW_EXCLUSIVE);
	for (;;)
	{
		entry = hash_search_with_hash_value(rl_lease_table, &lease_id, hashcode,
											HASH_FIND, NULL);
		if (entry == NULL ||
			(session_pid != 0 && (!entry->session_bound || entry->pid != session_pid)))
		{
			LWLockRelease(partition);
			return false;
		}
		if (session_pid != 0 || entry->role == GetUserId() || checked_role)
			break;

		/* Checking role membership reads catalogs: not under our lock */
		{
			Oid			owner = entry->role;

			LWLockRelease(partition);
			if (!has_privs_of_role(GetUserId(), owner))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to release a lease of role \"%s\"",
								GetUserNameFromId(owner, true)),
						 errdetail("Lease " INT64_FORMAT " was acquired by that role.",
								   lease_id)));
			checked_role = true;
			LWLockAcquire(partition, LW_EXCLUSIVE);
		}
	}
	memcpy(lease, entry, sizeof(RlLease));
	hash_search_with_hash_value(rl_lease_table, &lease_id, hashcode,
								HASH_REMOVE, NULL);
	LWLockRelease(partition);
	rl_instance_lease_gone(lease);
	rl_role_lease_gone(lease);
	pg_atomic_fetch_sub_u32(&rl_state->open_leases, 1);
	pg_atomic_fetch_add_u64(&rl_state->lease_version, 1);
	return true;
}

/*
 * An expired lease frees its concurrency slot and keeps its window
 * reservation.  Returns the model's generation matched (false when the
 * model was dropped meanwhile).
 */
static bool
rl_expire_lease(const RlLease *lease)
{
	RlModel    *model = &rl_models[lease->model_slot];
	bool		known;
	bool		waiters = false;
	bool		notify = false;

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	known = model->in_use && model->generation == lease->model_generation;
	if (known)
	{
		RlShare    *share = rl_lease_share(lease);

		rl_mark_free_slot(model, lease, rl_now());
		if (share && share->used[RL_DIM_CONCURRENCY] > 0)
		{
			share->used[RL_DIM_CONCURRENCY]--;
			share->version++;
		}
		model->expired++;
		model->version++;
		waiters = pg_atomic_read_u32(&model->num_waiters) > 0;
		notify = rl_note_capacity_freed(model, RL_NOTIFY_RELEASE, rl_now());
	}
	LWLockRelease(&model->lock);
	if (waiters)
		rl_wake_waiters(lease->model_slot);
	if (notify)
		rl_wake_worker();
	return known;
}

/* Expire every lease whose time is up, unless another backend is at it */
void
rl_expire_due_leases(TimestampTz now)
{
	HASH_SEQ_STATUS scan;
	RlLease    *entry;
	RlLease    *expired;
	int			num_expired = 0;
	TimestampTz next_expiry = DT_NOEND;

	if (now < rl_earliest_expiry())
		return;
	if (!LWLockConditionalAcquire(&rl_state->sweep_lock, LW_EXCLUSIVE))
		return;

	rl_lock_all_partitions(LW_EXCLUSIVE);
	expired = palloc(sizeof(RlLease) * Max(hash_get_num_entries(rl_lease_table), 1));
	pg_atomic_write_u64(&rl_state->earliest_expiry, PG_UINT64_MAX);
	hash_seq_init(&scan, rl_lease_table);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		if (entry->expires_at > now)
			next_expiry = Min(next_expiry, entry->expires_at);
		else
		{
			expired[num_expired++] = *entry;
			rl_instance_lease_gone(entry);
			rl_role_lease_gone(entry);
			hash_search(rl_lease_table, &entry->lease_id, HASH_REMOVE, NULL);
		}
	}
	rl_unlock_all_partitions();
	pg_atomic_fetch_sub_u32(&rl_state->open_leases, num_expired);
	pg_atomic_fetch_add_u64(&rl_state->lease_version, 1);
	rl_note_lease_expiry(next_expiry);

	for (int i = 0; i < num_expired; i++)
		rl_expire_lease(&expired[i]);
	LWLockRelease(&rl_state->sweep_lock);

	if (num_expired > 0)
		elog(DEBUG1, "pg_ratelimit expired %d leases", num_expired);
	pfree(expired);
}

/*
 * Discard the open leases of dropped models (dropped[slot]), or all of
 * them (dropped NULL).  Called while applying a configuration change, with
 * config_lock held exclusively; must not fail.
 */
void
rl_remove_model_leases(const bool *dropped)
{
	HASH_SEQ_STATUS scan;
	RlLease    *entry;
	uint32		removed = 0;

	rl_lock_all_partitions(LW_EXCLUSIVE);
	hash_seq_init(&scan, rl_lease_table);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		if (dropped == NULL || dropped[entry->model_slot])
		{
			rl_instance_lease_gone(entry);
			rl_role_lease_gone(entry);
			hash_search(rl_lease_table, &entry->lease_id, HASH_REMOVE, NULL);
			removed++;
		}
	}
	rl_unlock_all_partitions();
	pg_atomic_fetch_sub_u32(&rl_state->open_leases, removed);
	pg_atomic_fetch_add_u64(&rl_state->lease_version, 1);
}

/*
 * Expire the open leases of an instance that left or went stale (by
 * name): each frees its concurrency slot and keeps its window reservation.
 * Returns how many.
 */
int
rl_expire_instance_leases(const char *instance)
{
	HASH_SEQ_STATUS scan;
	RlLease    *entry;
	RlLease    *expired;
	int			num_expired = 0;

	rl_lock_all_partitions(LW_EXCLUSIVE);
	expired = palloc(sizeof(RlLease) * Max(hash_get_num_entries(rl_lease_table), 1));
	hash_seq_init(&scan, rl_lease_table);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		if (strcmp(entry->instance, instance) != 0)
			continue;
		expired[num_expired++] = *entry;
		rl_instance_lease_gone(entry);
		rl_role_lease_gone(entry);
		hash_search(rl_lease_table, &entry->lease_id, HASH_REMOVE, NULL);
	}
	rl_unlock_all_partitions();
	if (num_expired > 0)
	{
		pg_atomic_fetch_sub_u32(&rl_state->open_leases, num_expired);
		pg_atomic_fetch_add_u64(&rl_state->lease_version, 1);
	}
	for (int i = 0; i < num_expired; i++)
		rl_expire_lease(&expired[i]);
	pfree(expired);
	return num_expired;
}

/* Copy every open lease into a palloc'd array; returns how many */
int
rl_copy_open_leases(RlLease **leases)
{
	HASH_SEQ_STATUS scan;
	RlLease    *entry;
	int			count = 0;
	long		room;

	rl_lock_all_partitions(LW_SHARED);
	room = Max(hash_get_num_entries(rl_lease_table), 1);
	*leases = palloc(sizeof(RlLease) * room);
	hash_seq_init(&scan, rl_lease_table);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		if (count < room)
			(*leases)[count++] = *entry;
	}
	rl_unlock_all_partitions();
	return count;
}

/* price (per million tokens) x tokens, added to sum */
static Numeric
rl_add_cost(Numeric sum, const RlNumeric *price, int64 tokens)
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
rl_cost(const RlUsage *usage, const RlNumeric *price_input,
		const RlNumeric *price_output, const RlNumeric *price_cached)
{
	Numeric		sum = int64_to_numeric(0);

	sum = rl_add_cost(sum, price_input, usage->input);
	sum = rl_add_cost(sum, price_output, usage->output);
	sum = rl_add_cost(sum, price_cached, usage->cached);
	/* multiplying by 10^-6 is exact, where dividing could round */
	sum = DatumGetNumeric(DirectFunctionCall2(numeric_mul, NumericGetDatum(sum),
											  NumericGetDatum(int64_div_fast_to_numeric(1, 6))));
	return DatumGetNumeric(DirectFunctionCall1(numeric_trim_scale, NumericGetDatum(sum)));
}

/* Add a settled cost to the model's usage of the day */
/* A release's usage (and its overage, when positive) added to a day */
static void
rl_add_day_usage(RlDayUsage *day, const RlUsage *usage, int64 overage)
{
	if (usage->has_tokens)
	{
		day->input = rl_add_saturating(day->input, usage->input);
		day->output = rl_add_saturating(day->output, usage->output);
		day->cached = rl_add_saturating(day->cached, usage->cached);
	}
	if (overage > 0)
	{
		day->overage_events++;
		day->overage_tokens = rl_add_saturating(day->overage_tokens, overage);
	}
}

/* Add cost to a day's cost; false when the sum has too many digits to keep */
static bool
rl_add_day_cost(RlDayUsage *day, Numeric cost)
{
	Datum		total = DirectFunctionCall2(numeric_add,
											NumericGetDatum(rl_numeric_load(&day->cost)),
											NumericGetDatum(cost));

	total = DirectFunctionCall1(numeric_trim_scale, total);
	return rl_numeric_store(&day->cost, DatumGetNumeric(total));
}

/* A lease's cost, added to today's cost of its model and job type */
static void
rl_add_cost_today(const RlLease *lease, Numeric cost, TimestampTz now)
{
	RlModel    *model = &rl_models[lease->model_slot];
	bool		kept = true;
	char		name[RL_NAME_MAX_LEN + 1];

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	if (model->in_use && model->generation == lease->model_generation)
	{
		RlShare    *share = rl_lease_share(lease);

		rl_roll_windows(model, now);
		kept = rl_add_day_cost(&model->usage, cost);
		strlcpy(name, model->name, sizeof(name));
		if (share)
		{
			(void) rl_add_day_cost(rl_share_usage(share, model), cost);
			share->version++;
		}
		model->version++;
	}
	LWLockRelease(&model->lock);
	/* reported only now: never with an LWLock held */
	if (!kept)
		elog(WARNING, "pg_ratelimit cost of the day of model \"%s\" has too many digits to keep",
			 name);
}

/*
 * Settle a lease taken from the table.  In the window it was acquired in,
 * counters move by actual - estimate (never below zero); once that window
 * has ended there is no refund, and an overage is charged to the current
 * window.  Minute and day windows are judged separately.
 */
void
rl_settle_lease(const RlLease *lease, const RlUsage *usage, TimestampTz now,
				RlSettlement *result)
{
	RlModel    *model = &rl_models[lease->model_slot];
	RlNumeric	price_input;
	RlNumeric	price_output;
	RlNumeric	price_cached;
	bool		priced;
	bool		waiters;
	bool		notify;
	int64		actual_tokens;
	int32		actual_requests;
	bool		any_window_current = false;
	RlShare    *share;
	bool		adjust_ratios;

	memset(result, 0, sizeof(*result));
	result->tokens_estimated = lease->tokens;

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	if (!model->in_use || model->generation != lease->model_generation)
	{
		LWLockRelease(&model->lock);
		return;
	}
	result->model_known = true;
	strlcpy(result->model, model->name, sizeof(result->model));

	if (lease->expires_at <= now)
	{
		LWLockRelease(&model->lock);
		rl_expire_lease(lease);
		return;
	}

	rl_roll_windows(model, now);
	actual_tokens = !usage->has_tokens ? lease->tokens :
		model->count_cached ? usage->tokens_with_cached : usage->tokens_without_cached;
	actual_requests = usage->has_requests ? usage->requests : lease->requests;
	share = rl_lease_share(lease);

	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
	{
		int64		delta = rl_dimension_amount(d, actual_tokens, actual_requests) -
			rl_dimension_amount(d, lease->tokens, lease->requests);
		bool		same_window = rl_dimension_is_daily(d) ?
			lease->day_start == model->day_start :
			lease->minute_start == model->minute_start;

		any_window_current |= same_window;
		/* the job type's share moves with the model */
		if (same_window)
		{
			model->used[d] = Max(0, rl_add_saturating(model->used[d], delta));
			if (share)
				share->used[d] = Max(0, rl_add_saturating(share->used[d], delta));
		}
		else if (delta > 0)
		{
			model->used[d] = rl_add_saturating(model->used[d], delta);
			if (share)
				share->used[d] = rl_add_saturating(share->used[d], delta);
		}
	}
	rl_mark_free_slot(model, lease, now);
	if (share && share->used[RL_DIM_CONCURRENCY] > 0)
		share->used[RL_DIM_CONCURRENCY]--;
	if (share)
		share->version++;
	adjust_ratios = share && rl_note_share_release(model);

	if (actual_tokens > lease->tokens)
	{
		model->overage_events++;
		model->overage_tokens = rl_add_saturating(model->overage_tokens,
												  actual_tokens - lease->tokens);
	}
	rl_add_day_usage(&model->usage, usage, actual_tokens - lease->tokens);
	if (share)
		rl_add_day_usage(rl_share_usage(share, model), usage, actual_tokens - lease->tokens);
	model->version++;
	price_input = model->price_input;
	price_output = model->price_output;
	price_cached = model->price_cached;
	priced = model->priced;
	waiters = pg_atomic_read_u32(&model->num_waiters) > 0;
	notify = rl_note_capacity_freed(model, RL_NOTIFY_RELEASE, now);
	/* an overage past the mark: have a mark cover it soon */
	notify |= rl_mark_note_usage(model);
	LWLockRelease(&model->lock);
	if (waiters)
		rl_wake_waiters(lease->model_slot);
	if (notify || adjust_ratios)
		rl_wake_worker();

	result->released = true;
	if (!usage->has_tokens)
		return;

	result->has_actual = true;
	result->tokens_actual = actual_tokens;
	result->overage = Max(0, actual_tokens - lease->tokens);
	result->tokens_refunded = any_window_current && actual_tokens < lease->tokens ?
		lease->tokens - actual_tokens : 0;
	if (!priced)
	{
		result->cost = int64_to_numeric(0);
		return;
	}
	result->cost = rl_cost(usage, &price_input, &price_output, &price_cached);
	if (DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(result->cost),
										  NumericGetDatum(int64_to_numeric(0)))) != 0)
		rl_add_cost_today(lease, result->cost, now);
}
