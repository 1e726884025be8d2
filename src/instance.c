/*-------------------------------------------------------------------------
 *
 * instance.c
 *		Application instances: heartbeats, stale-instance cleanup, memory
 *		slots and fair per-instance allocations.
 *
 * An instance announces itself with rl_heartbeat(instance, memory_kb) and
 * is live while its last heartbeat is younger than ratelimit.instance_timeout
 * (by the limiter's clock).  The background worker drops instances that
 * went stale and expires their leases; rl_unregister does the same at once.
 * rl_allocation gives each live instance its fair share of every model and
 * job type, for clients that admit locally.
 *
 * An instance that reported its memory caps its in-flight jobs of a job type
 * with a memory estimate at floor(memory_kb x ratio / est_memory_kb), where
 * ratio is the job type's configured ratio (memory belongs to the instance,
 * not to one model).  Acquires naming the instance enforce the cap: each
 * (instance, job type) has an atomic in-flight counter, taken with a
 * compare-and-swap under the model's lock as the last step of admission, so
 * the cap holds across models and concurrent acquires.
 *
 * Locking: instances_lock protects the instance array and the name index.
 * It is taken after config_lock and never while a model lock or a lease
 * partition lock is held.  The in-flight counters are atomics.  Two version
 * counters (atomics) tell the worker when the live set changed (for NOTIFY
 * rl_allocation) and when anything needs saving.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "admission.h"
#include "instance.h"
#include "lease.h"
#include "pg_ratelimit.h"
#include "share.h"
#include "wait.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(rl_heartbeat);
PG_FUNCTION_INFO_V1(rl_unregister);
PG_FUNCTION_INFO_V1(rl_instances_internal);
PG_FUNCTION_INFO_V1(rl_allocation_internal);

/* pool_slots of a model none of whose limits the estimates consume */
#define RL_UNLIMITED_POOL_SLOTS		100

typedef struct RlInstance
{
	bool		in_use;
	uint32		generation;		/* bumped whenever the slot is (re)assigned */
	char		name[RL_NAME_MAX_LEN + 1];
	int64		memory_kb;		/* -1 when not reported */
	TimestampTz registered_at;	/* limiter's clock */
	TimestampTz last_heartbeat; /* limiter's clock */
} RlInstance;

typedef struct RlInstanceTable
{
	LWLock		instances_lock;
	pg_atomic_uint64 membership_version;	/* an instance joined or left */
	pg_atomic_uint64 heartbeat_version; /* anything changed, for saving */
	RlInstance	instances[FLEXIBLE_ARRAY_MEMBER];
} RlInstanceTable;

static RlInstanceTable *table = NULL;
static HTAB *instance_index = NULL;
static pg_atomic_uint32 *memory_in_flight = NULL;	/* [instance * max_job_types
													 * + job type] */

static Size
rl_memory_matrix_size(void)
{
	return mul_size(mul_size(rl_max_instances, rl_max_job_types), sizeof(pg_atomic_uint32));
}

Size
rl_instances_shmem_size(void)
{
	Size		size = add_size(offsetof(RlInstanceTable, instances),
								mul_size(rl_max_instances, sizeof(RlInstance)));

	size = add_size(MAXALIGN(size), MAXALIGN(rl_memory_matrix_size()));
	return add_size(size, hash_estimate_size(rl_max_instances, sizeof(RlNameEntry)));
}

/* Create or attach; caller holds AddinShmemInitLock */
void
rl_instances_shmem_init(bool unused)
{
	bool		found;
	bool		found_memory;
	HASHCTL		info;

	table = ShmemInitStruct("pg_ratelimit instances",
							add_size(offsetof(RlInstanceTable, instances),
									 mul_size(rl_max_instances, sizeof(RlInstance))),
							&found);
	memory_in_flight = ShmemInitStruct("pg_ratelimit instance memory",
									   rl_memory_matrix_size(), &found_memory);
	if (!found)
	{
		LWLockInitialize(&table->instances_lock, rl_state->tranche_id);
		pg_atomic_init_u64(&table->membership_version, 0);
		pg_atomic_init_u64(&table->heartbeat_version, 0);
		memset(table->instances, 0, mul_size(rl_max_instances, sizeof(RlInstance)));
		for (Size i = 0; i < (Size) rl_max_instances * rl_max_job_types; i++)
			pg_atomic_init_u32(&memory_in_flight[i], 0);
	}
	info.keysize = RL_NAME_MAX_LEN + 1;
	info.entrysize = sizeof(RlNameEntry);
	instance_index = ShmemInitHash("pg_ratelimit instance index", rl_max_instances,
								   rl_max_instances, &info, HASH_ELEM | HASH_STRINGS);
}

static pg_atomic_uint32 *
rl_memory_counter(int instance_slot, int job_type_slot)
{
	return &memory_in_flight[(Size) instance_slot * rl_max_job_types + job_type_slot];
}

static bool
rl_is_live(const RlInstance *instance, TimestampTz now)
{
	return instance->in_use &&
		now - instance->last_heartbeat < (int64) rl_instance_timeout_s * USECS_PER_SEC;
}

/* Live instances by the limiter's clock; caller holds instances_lock */
static int
rl_count_live(TimestampTz now)
{
	int			live = 0;

	for (int i = 0; i < rl_max_instances; i++)
		if (rl_is_live(&table->instances[i], now))
			live++;
	return live;
}

int
rl_live_instances(TimestampTz now)
{
	int			live;

	LWLockAcquire(&table->instances_lock, LW_SHARED);
	live = rl_count_live(now);
	LWLockRelease(&table->instances_lock);
	return live;
}

uint64
rl_instances_membership_version(void)
{
	return pg_atomic_read_u64(&table->membership_version);
}

uint64
rl_instances_heartbeat_version(void)
{
	return pg_atomic_read_u64(&table->heartbeat_version);
}

/*
 * Register an instance (or refresh it).  Caller holds instances_lock
 * exclusively.  Returns its slot, or -1 when the table is full.
 */
static int
rl_register_instance(const char *name, int64 memory_kb, TimestampTz now,
					 TimestampTz registered_at, bool *joined)
{
	int			slot = rl_lookup_slot(instance_index, name);
	RlInstance *instance;
	RlNameEntry *entry;
	char		key[RL_NAME_MAX_LEN + 1];

	*joined = false;
	if (slot < 0)
	{
		for (slot = 0; slot < rl_max_instances && table->instances[slot].in_use; slot++)
			;
		if (slot == rl_max_instances)
			return -1;
		instance = &table->instances[slot];
		instance->in_use = true;
		instance->generation++;
		strlcpy(instance->name, name, sizeof(instance->name));
		instance->registered_at = registered_at;
		for (int j = 0; j < rl_max_job_types; j++)
			pg_atomic_write_u32(rl_memory_counter(slot, j), 0);
		memset(key, 0, sizeof(key));
		strlcpy(key, name, sizeof(key));
		entry = hash_search(instance_index, key, HASH_ENTER, NULL);
		entry->slot = slot;
		*joined = true;
	}
	instance = &table->instances[slot];
	/* a heartbeat after the timeout, before the worker noticed, rejoins */
	if (!rl_is_live(instance, now))
		*joined = true;
	instance->memory_kb = memory_kb;
	instance->last_heartbeat = now;
	return slot;
}

/* Forget an instance; caller holds instances_lock exclusively */
static void
rl_forget_instance(int slot)
{
	RlInstance *instance = &table->instances[slot];

	hash_search(instance_index, instance->name, HASH_REMOVE, NULL);
	instance->in_use = false;
}

/*
 * rl_heartbeat(instance, memory_kb) RETURNS integer: register or refresh an
 * instance; returns the number of live instances.
 */
Datum
rl_heartbeat(PG_FUNCTION_ARGS)
{
	char		name[RL_NAME_MAX_LEN + 1];
	int64		memory_kb = -1;
	TimestampTz now;
	bool		joined;
	int			live;

	rl_require_primary("register instances");
	rl_require_ready();
	rl_copy_name_arg(fcinfo, 0, name, "instance");
	if (!PG_ARGISNULL(1))
	{
		memory_kb = PG_GETARG_INT64(1);
		if (memory_kb < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("memory_kb must not be negative")));
	}

	now = rl_now();
	LWLockAcquire(&table->instances_lock, LW_EXCLUSIVE);
	if (rl_register_instance(name, memory_kb, now, now, &joined) < 0)
	{
		LWLockRelease(&table->instances_lock);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many pg_ratelimit instances"),
				 errdetail("ratelimit.max_instances is %d.", rl_max_instances),
				 errhint("Unregister instances that are gone, or raise ratelimit.max_instances and restart the server.")));
	}
	live = rl_count_live(now);
	LWLockRelease(&table->instances_lock);

	pg_atomic_fetch_add_u64(&table->heartbeat_version, 1);
	if (joined)
	{
		pg_atomic_fetch_add_u64(&table->membership_version, 1);
		rl_wake_worker();
	}
	PG_RETURN_INT32(live);
}

/*
 * Drop an instance and expire its open leases.  Returns false when no such
 * instance is registered.
 */
static bool
rl_drop_instance(const char *name)
{
	int			slot;

	LWLockAcquire(&table->instances_lock, LW_EXCLUSIVE);
	slot = rl_lookup_slot(instance_index, name);
	if (slot >= 0)
		rl_forget_instance(slot);
	LWLockRelease(&table->instances_lock);
	if (slot < 0)
		return false;
	rl_expire_instance_leases(name);
	pg_atomic_fetch_add_u64(&table->membership_version, 1);
	pg_atomic_fetch_add_u64(&table->heartbeat_version, 1);
	return true;
}

/*
 * Forget every instance: a new installation of the extension starts with
 * none (the old one's models, and with them their leases, go at commit).
 */
void
rl_forget_all_instances(void)
{
	LWLockAcquire(&table->instances_lock, LW_EXCLUSIVE);
	for (int slot = 0; slot < rl_max_instances; slot++)
		if (table->instances[slot].in_use)
			rl_forget_instance(slot);
	LWLockRelease(&table->instances_lock);
	pg_atomic_fetch_add_u64(&table->membership_version, 1);
	pg_atomic_fetch_add_u64(&table->heartbeat_version, 1);
}

/*
 * rl_unregister(instance): the instance leaves now; its open leases are
 * expired.  Unregistering an instance that is not registered does nothing,
 * so it is safe to retry.
 */
Datum
rl_unregister(PG_FUNCTION_ARGS)
{
	char		name[RL_NAME_MAX_LEN + 1];

	rl_require_primary("unregister instances");
	rl_require_ready();
	rl_copy_name_arg(fcinfo, 0, name, "instance");
	if (rl_drop_instance(name))
		rl_wake_worker();
	PG_RETURN_VOID();
}

/*
 * Drop every instance whose last heartbeat is older than the timeout, with
 * its leases.  Returns when the next live instance goes stale (limiter's
 * clock), or DT_NOEND.  Worker only.
 */
TimestampTz
rl_drop_stale_instances(TimestampTz now)
{
	char	   *stale = NULL;
	int			num_stale = 0;
	TimestampTz next = DT_NOEND;
	int64		timeout = (int64) rl_instance_timeout_s * USECS_PER_SEC;

	LWLockAcquire(&table->instances_lock, LW_SHARED);
	for (int i = 0; i < rl_max_instances; i++)
	{
		RlInstance *instance = &table->instances[i];

		if (!instance->in_use)
			continue;
		if (rl_is_live(instance, now))
			next = Min(next, instance->last_heartbeat + timeout);
		else
		{
			if (stale == NULL)
				stale = palloc(sizeof(char) * (RL_NAME_MAX_LEN + 1) * rl_max_instances);
			strlcpy(stale + num_stale * (RL_NAME_MAX_LEN + 1), instance->name,
					RL_NAME_MAX_LEN + 1);
			num_stale++;
		}
	}
	LWLockRelease(&table->instances_lock);

	for (int i = 0; i < num_stale; i++)
	{
		const char *name = stale + i * (RL_NAME_MAX_LEN + 1);
		bool		dropped;

		/* it may have sent a heartbeat since: look again under the lock */
		LWLockAcquire(&table->instances_lock, LW_EXCLUSIVE);
		{
			int			slot = rl_lookup_slot(instance_index, name);

			dropped = slot >= 0 && !rl_is_live(&table->instances[slot], now);
			if (dropped)
				rl_forget_instance(slot);
		}
		LWLockRelease(&table->instances_lock);
		if (!dropped)
			continue;
		rl_expire_instance_leases(name);
		pg_atomic_fetch_add_u64(&table->membership_version, 1);
		pg_atomic_fetch_add_u64(&table->heartbeat_version, 1);
		elog(LOG, "pg_ratelimit dropped instance \"%s\": no heartbeat for %d s",
			 name, rl_instance_timeout_s);
	}
	return next;
}

/*
 * The memory cap an acquire naming an instance is held to for its job type
 * (none when the instance is not registered, did not report memory, or the
 * job type has no memory estimate).  Caller holds config_lock (shared).
 */
void
rl_memory_cap(const char *name, int job_type_slot, RlMemoryCap *cap)
{
	int			slot;
	RlJobType  *job_type = job_type_slot >= 0 ? &rl_job_types[job_type_slot] : NULL;

	memset(cap, 0, sizeof(*cap));
	cap->instance_slot = -1;
	if (name[0] == '\0')
		return;
	LWLockAcquire(&table->instances_lock, LW_SHARED);
	slot = rl_lookup_slot(instance_index, name);
	if (slot >= 0)
	{
		RlInstance *instance = &table->instances[slot];

		cap->instance_slot = slot;
		cap->instance_generation = instance->generation;
		if (job_type && instance->memory_kb >= 0 && job_type->est_memory_kb > 0)
		{
			cap->in_flight = rl_memory_counter(slot, job_type_slot);
			cap->cap = rl_share_of(instance->memory_kb, job_type->base_ratio) /
				job_type->est_memory_kb;
		}
	}
	LWLockRelease(&table->instances_lock);
}

/* Count one more job against the cap; false when the cap is reached */
bool
rl_memory_take(const RlMemoryCap *cap)
{
	uint32		current = pg_atomic_read_u32(cap->in_flight);

	for (;;)
	{
		if ((int64) current >= cap->cap)
			return false;
		if (pg_atomic_compare_exchange_u32(cap->in_flight, &current, current + 1))
			return true;
	}
}

/* A lease left the lease table: give back its memory slot */
void
rl_instance_lease_gone(const RlLease *lease)
{
	pg_atomic_uint32 *counter;
	uint32		current;

	if (!lease->memory_counted || lease->job_type_slot < 0)
		return;
	/* a re-assigned slot started again from zero: not ours to decrement */
	if (table->instances[lease->instance_slot].generation != lease->instance_generation)
		return;
	counter = rl_memory_counter(lease->instance_slot, lease->job_type_slot);
	current = pg_atomic_read_u32(counter);
	while (current > 0 &&
		   !pg_atomic_compare_exchange_u32(counter, &current, current - 1))
		;
	rl_wake_memory_waiters();
}

/* Copy every registered instance into a palloc'd array; returns how many */
int
rl_copy_instances(RlInstanceInfo **instances)
{
	int			count = 0;

	*instances = palloc(sizeof(RlInstanceInfo) * rl_max_instances);
	LWLockAcquire(&table->instances_lock, LW_SHARED);
	for (int i = 0; i < rl_max_instances; i++)
	{
		RlInstance *instance = &table->instances[i];
		RlInstanceInfo *info = &(*instances)[count];

		if (!instance->in_use)
			continue;
		strlcpy(info->name, instance->name, sizeof(info->name));
		info->memory_kb = instance->memory_kb;
		info->registered_at = instance->registered_at;
		info->last_heartbeat = instance->last_heartbeat;
		count++;
	}
	LWLockRelease(&table->instances_lock);
	return count;
}

/*
 * Put a saved instance back while shared memory is restored (config_lock
 * held exclusively, nothing admitted yet); false when there is no room.
 */
bool
rl_restore_instance(const RlInstanceInfo *info)
{
	bool		joined;
	int			slot;

	LWLockAcquire(&table->instances_lock, LW_EXCLUSIVE);
	slot = rl_register_instance(info->name, info->memory_kb, info->last_heartbeat,
								info->registered_at, &joined);
	LWLockRelease(&table->instances_lock);
	return slot >= 0;
}

/* A restored lease naming a registered instance counts against its memory */
void
rl_restore_instance_lease(RlLease *lease)
{
	RlMemoryCap cap;

	lease->instance_slot = -1;
	lease->memory_counted = false;
	rl_memory_cap(lease->instance, lease->job_type_slot, &cap);
	lease->instance_slot = cap.instance_slot;
	lease->instance_generation = cap.instance_generation;
	if (cap.in_flight)
	{
		pg_atomic_fetch_add_u32(cap.in_flight, 1);
		lease->memory_counted = true;
	}
}

/* Open leases of one instance, for rl_instances */
typedef struct RlLeaseCount
{
	char		instance[RL_NAME_MAX_LEN + 1];	/* hash key: must be first */
	int64		leases;
} RlLeaseCount;

/* rl_instances_internal(): one row per registered instance */
Datum
rl_instances_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RlInstanceInfo *instances;
	RlLeaseWalk walk;
	RlLeaseBatch batch;
	int			num_instances;
	TimestampTz now;
	HASHCTL		info;
	HTAB	   *held;

	rl_require_ready();
	InitMaterializedSRF(fcinfo, 0);
	now = rl_now();
	num_instances = rl_copy_instances(&instances);

	/* open leases per instance name, counted in one walk (a batch at a time) */
	info.keysize = RL_NAME_MAX_LEN + 1;
	info.entrysize = sizeof(RlLeaseCount);
	info.hcxt = CurrentMemoryContext;
	held = hash_create("pg_ratelimit leases per instance", Max(num_instances, 16), &info,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	/* only registered instances are counted: the hash stays that small */
	for (int i = 0; i < num_instances; i++)
		((RlLeaseCount *) hash_search(held, instances[i].name, HASH_ENTER, NULL))->leases = 0;
	memset(&batch, 0, sizeof(batch));
	rl_lease_walk_begin(&walk);
	while (rl_lease_walk_next(&walk, &batch))
	{
		for (int l = 0; l < batch.count; l++)
		{
			RlLeaseCount *count;

			if (batch.leases[l].instance[0] == '\0')
				continue;
			count = hash_search(held, batch.leases[l].instance, HASH_FIND, NULL);
			if (count)
				count->leases++;
		}
	}

	for (int i = 0; i < num_instances; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};
		RlLeaseCount *count = hash_search(held, instances[i].name, HASH_FIND, NULL);

		values[0] = CStringGetTextDatum(instances[i].name);
		values[1] = TimestampTzGetDatum(instances[i].registered_at);
		values[2] = TimestampTzGetDatum(instances[i].last_heartbeat);
		values[3] = Int64GetDatum(instances[i].memory_kb);
		nulls[3] = instances[i].memory_kb < 0;
		values[4] = BoolGetDatum(now - instances[i].last_heartbeat <
								 (int64) rl_instance_timeout_s * USECS_PER_SEC);
		values[5] = Int64GetDatum(count ? count->leases : 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	hash_destroy(held);
	return (Datum) 0;
}

/*
 * pool_slots of a model for n instances: the minimum over its limits of
 * floor(floor(limit / n) / mean estimate), ties toward the longer window;
 * RL_UNLIMITED_POOL_SLOTS when no limit applies.  Sets *limited_by (or -1).
 */
static int64
rl_pool_slots(const RlModel *model, int n, int64 avg_tokens, int32 avg_requests,
			  int *limited_by)
{
	int64		pool = -1;

	*limited_by = -1;
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		estimate = rl_dimension_amount(d, avg_tokens, avg_requests);
		int64		fit;

		if (model->limit[d] == RL_UNLIMITED || estimate <= 0)
			continue;
		fit = model->limit[d] / n / estimate;
		/* dimensions come longest window first: a tie keeps the earlier */
		if (pool < 0 || fit < pool)
		{
			pool = fit;
			*limited_by = d;
		}
	}
	return pool < 0 ? RL_UNLIMITED_POOL_SLOTS : pool;
}

/*
 * slots of a job type on a model for one of n instances:
 * min(floor(floor(limit / n) x ratio / estimate) over the limits,
 * floor(pool_slots x ratio)), at least min_job_type_slots, ties toward the
 * longer window; then capped by the instance's memory.
 */
static int64
rl_job_type_slots(const RlModel *model, const RlJobType *job_type, double ratio, int n,
				  int64 pool, int pool_limited_by, int64 memory_kb, int *limited_by)
{
	int64		slots = rl_job_type_fit(model, job_type, ratio, n, limited_by);
	int64		from_pool = rl_share_of(pool, ratio);

	/* the pool's part, ranked by the window that limits the pool */
	if (slots < 0 || from_pool < slots ||
		(from_pool == slots && pool_limited_by >= 0 && pool_limited_by < *limited_by))
	{
		slots = from_pool;
		*limited_by = pool_limited_by;
	}
	slots = Max(slots, (int64) rl_min_job_type_slots);
	if (memory_kb >= 0 && job_type->est_memory_kb > 0)
	{
		int64		memory_slots = rl_share_of(memory_kb, job_type->base_ratio) /
			job_type->est_memory_kb;

		if (memory_slots < slots)
		{
			slots = memory_slots;
			*limited_by = RL_LIMITED_BY_MEMORY;
		}
	}
	return slots;
}

static Datum
rl_limited_by_datum(int limited_by, bool *isnull)
{
	*isnull = limited_by < 0;
	if (limited_by < 0)
		return (Datum) 0;
	return CStringGetTextDatum(rl_dimension_names[limited_by]);
}

/*
 * rl_allocation_internal(instance): per model, the pool (job_type NULL) and
 * each job type's slots for one of the live instances.
 */
Datum
rl_allocation_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char		name[RL_NAME_MAX_LEN + 1];
	TimestampTz now;
	int			slot;
	int			n;
	int64		memory_kb;
	int64		sum_tokens = 0;
	int64		sum_requests = 0;
	int			num_job_types = 0;
	int64		avg_tokens;
	int32		avg_requests;

	rl_require_ready();
	rl_copy_name_arg(fcinfo, 0, name, "instance");
	InitMaterializedSRF(fcinfo, 0);
	now = rl_now();

	LWLockAcquire(&table->instances_lock, LW_SHARED);
	slot = rl_lookup_slot(instance_index, name);
	if (slot < 0 || !rl_is_live(&table->instances[slot], now))
	{
		LWLockRelease(&table->instances_lock);
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("instance \"%s\" is not registered", name),
				 errhint("Call rl_heartbeat('%s') first, and again more often than ratelimit.instance_timeout (%d s).",
						 name, rl_instance_timeout_s)));
	}
	memory_kb = table->instances[slot].memory_kb;
	n = rl_count_live(now);
	LWLockRelease(&table->instances_lock);

	LWLockAcquire(&rl_state->config_lock, LW_SHARED);
	for (int j = 0; j < rl_max_job_types; j++)
	{
		if (!rl_job_types[j].in_use)
			continue;
		sum_tokens += rl_job_types[j].est_tokens;
		sum_requests += rl_job_types[j].est_requests;
		num_job_types++;
	}
	/* the floored mean estimate; without job types, an acquire's default */
	avg_tokens = num_job_types > 0 ? sum_tokens / num_job_types : 0;
	avg_requests = num_job_types > 0 ? (int32) (sum_requests / num_job_types) : 1;

	for (int m = 0; m < rl_max_models; m++)
	{
		RlModel    *model = &rl_models[m];
		RlModel		copy;
		double	   *ratios;
		int64		pool;
		int			pool_limited_by;
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		if (!model->in_use)
			continue;
		ratios = palloc(sizeof(double) * rl_max_job_types);
		LWLockAcquire(&model->lock, LW_SHARED);
		memcpy(&copy, model, sizeof(RlModel));
		for (int j = 0; j < rl_max_job_types; j++)
			ratios[j] = rl_share(m, j)->ratio;
		LWLockRelease(&model->lock);

		pool = rl_pool_slots(&copy, n, avg_tokens, avg_requests, &pool_limited_by);
		values[0] = CStringGetTextDatum(copy.name);
		nulls[1] = true;
		values[2] = Int32GetDatum(n);
		values[3] = Int64GetDatum(pool);
		values[4] = Int64GetDatum(pool);
		values[5] = rl_limited_by_datum(pool_limited_by, &nulls[5]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

		for (int j = 0; j < rl_max_job_types; j++)
		{
			RlJobType  *job_type = &rl_job_types[j];
			int			limited_by;

			if (!job_type->in_use)
				continue;
			nulls[1] = false;
			values[1] = CStringGetTextDatum(job_type->name);
			values[4] = Int64GetDatum(rl_job_type_slots(&copy, job_type, ratios[j], n, pool,
														pool_limited_by, memory_kb,
														&limited_by));
			values[5] = rl_limited_by_datum(limited_by, &nulls[5]);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		pfree(ratios);
	}
	LWLockRelease(&rl_state->config_lock);
	return (Datum) 0;
}
