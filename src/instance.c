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
 * job type, for clients that admit locally: each instance a part of every
 * limit, the parts of the live instances adding up to the limit exactly
 * (see rl_allocation_internal).
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
#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/acl.h"
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
	Oid			role;			/* that registered it: counts against its
								 * ratelimit.max_instances_per_role */
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
pgrl_memory_matrix_size(void)
{
	return mul_size(mul_size(pgrl_max_instances, pgrl_max_job_types), sizeof(pg_atomic_uint32));
}

Size
pgrl_instances_shmem_size(void)
{
	Size		size = add_size(offsetof(RlInstanceTable, instances),
								mul_size(pgrl_max_instances, sizeof(RlInstance)));

	size = add_size(MAXALIGN(size), MAXALIGN(pgrl_memory_matrix_size()));
	return add_size(size, hash_estimate_size(pgrl_max_instances, sizeof(RlNameEntry)));
}

/* Create or attach; caller holds AddinShmemInitLock */
void
pgrl_instances_shmem_init(bool unused)
{
	bool		found;
	bool		found_memory;
	HASHCTL		info;

	table = ShmemInitStruct("pg_ratelimit instances",
							add_size(offsetof(RlInstanceTable, instances),
									 mul_size(pgrl_max_instances, sizeof(RlInstance))),
							&found);
	memory_in_flight = ShmemInitStruct("pg_ratelimit instance memory",
									   pgrl_memory_matrix_size(), &found_memory);
	if (!found)
	{
		LWLockInitialize(&table->instances_lock, pgrl_state->tranche_id);
		pg_atomic_init_u64(&table->membership_version, 0);
		pg_atomic_init_u64(&table->heartbeat_version, 0);
		memset(table->instances, 0, mul_size(pgrl_max_instances, sizeof(RlInstance)));
		for (Size i = 0; i < (Size) pgrl_max_instances * pgrl_max_job_types; i++)
			pg_atomic_init_u32(&memory_in_flight[i], 0);
	}
	info.keysize = RL_NAME_MAX_LEN + 1;
	info.entrysize = sizeof(RlNameEntry);
	instance_index = ShmemInitHash("pg_ratelimit instance index", pgrl_max_instances,
								   pgrl_max_instances, &info, HASH_ELEM | HASH_STRINGS);
}

static pg_atomic_uint32 *
pgrl_memory_counter(int instance_slot, int job_type_slot)
{
	return &memory_in_flight[(Size) instance_slot * pgrl_max_job_types + job_type_slot];
}

static bool
pgrl_is_live(const RlInstance *instance, TimestampTz now)
{
	return instance->in_use &&
		now - instance->last_heartbeat < (int64) pgrl_instance_timeout_s * USECS_PER_SEC;
}

/* Live instances by the limiter's clock; caller holds instances_lock */
static int
pgrl_count_live(TimestampTz now)
{
	int			live = 0;

	for (int i = 0; i < pgrl_max_instances; i++)
		if (pgrl_is_live(&table->instances[i], now))
			live++;
	return live;
}

int
pgrl_live_instances(TimestampTz now)
{
	int			live;

	LWLockAcquire(&table->instances_lock, LW_SHARED);
	live = pgrl_count_live(now);
	LWLockRelease(&table->instances_lock);
	return live;
}

uint64
pgrl_instances_membership_version(void)
{
	return pg_atomic_read_u64(&table->membership_version);
}

uint64
pgrl_instances_heartbeat_version(void)
{
	return pg_atomic_read_u64(&table->heartbeat_version);
}

/* Registered by role, or by the role whose membership was checked (or by none known) */
static bool
pgrl_instance_owned(const RlInstance *instance, Oid role, Oid allowed_owner)
{
	return !OidIsValid(instance->role) || instance->role == role ||
		instance->role == allowed_owner;
}

/* pgrl_register_instance could not: the table is full, or the role at its cap */
#define RL_INSTANCES_FULL		(-1)
#define RL_ROLE_INSTANCES_FULL	(-2)
#define RL_INSTANCE_NOT_OWNED	(-3)

/* Registered instances of a role; caller holds instances_lock */
static int
pgrl_role_instances(Oid role)
{
	int			count = 0;

	for (int i = 0; i < pgrl_max_instances; i++)
		if (table->instances[i].in_use && table->instances[i].role == role)
			count++;
	return count;
}

/*
 * Register an instance for a role, or refresh it.  Only the role that
 * registered an instance may refresh it, or a role whose membership in
 * that one the caller checked (allowed_owner); else returns
 * RL_INSTANCE_NOT_OWNED with the owner in *owner.  A new instance is
 * refused when the role has role_cap instances already (0: no cap).
 * Caller holds instances_lock exclusively.  Returns its slot,
 * RL_INSTANCES_FULL or RL_ROLE_INSTANCES_FULL.
 */
static int
pgrl_register_instance(const char *name, int64 memory_kb, TimestampTz now,
					 TimestampTz registered_at, Oid role, int role_cap,
					 Oid allowed_owner, Oid *owner, bool *joined)
{
	int			slot = pgrl_lookup_slot(instance_index, name);
	RlInstance *instance;
	RlNameEntry *entry;
	char		key[RL_NAME_MAX_LEN + 1];

	*joined = false;
	if (slot >= 0 && !pgrl_instance_owned(&table->instances[slot], role, allowed_owner))
	{
		*owner = table->instances[slot].role;
		return RL_INSTANCE_NOT_OWNED;
	}
	if (slot < 0)
	{
		if (role_cap > 0 && pgrl_role_instances(role) >= role_cap)
			return RL_ROLE_INSTANCES_FULL;
		for (slot = 0; slot < pgrl_max_instances && table->instances[slot].in_use; slot++)
			;
		if (slot == pgrl_max_instances)
			return RL_INSTANCES_FULL;
		instance = &table->instances[slot];
		instance->in_use = true;
		instance->generation++;
		strlcpy(instance->name, name, sizeof(instance->name));
		instance->registered_at = registered_at;
		instance->role = role;
		for (int j = 0; j < pgrl_max_job_types; j++)
			pg_atomic_write_u32(pgrl_memory_counter(slot, j), 0);
		memset(key, 0, sizeof(key));
		strlcpy(key, name, sizeof(key));
		entry = hash_search(instance_index, key, HASH_ENTER, NULL);
		entry->slot = slot;
		*joined = true;
	}
	instance = &table->instances[slot];
	/* a heartbeat after the timeout, before the worker noticed, rejoins */
	if (!pgrl_is_live(instance, now))
		*joined = true;
	instance->memory_kb = memory_kb;
	instance->last_heartbeat = now;
	return slot;
}

/*
 * The current role may act on an instance registered by owner: it is that
 * role or a member of it.  Reads catalogs: never under an LWLock.
 */
static void
pgrl_require_instance_privilege(const char *name, Oid owner)
{
	char	   *owner_name;

	if (has_privs_of_role(GetUserId(), owner))
		return;
	owner_name = GetUserNameFromId(owner, true);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for pg_ratelimit instance \"%s\"", name),
			 errdetail("It was registered by role \"%s\".", owner_name ? owner_name : "?"),
			 errhint("Use an instance name of your own, or connect as a member of that role.")));
}

/*
 * An acquire may name an instance only when its role may act on it (its
 * leases count against the instance's memory, and end with it).
 */
void
pgrl_check_instance_privilege(const char *name)
{
	int			slot;
	Oid			owner = InvalidOid;

	if (name[0] == '\0')
		return;
	LWLockAcquire(&table->instances_lock, LW_SHARED);
	slot = pgrl_lookup_slot(instance_index, name);
	if (slot >= 0 && !pgrl_instance_owned(&table->instances[slot], GetUserId(), InvalidOid))
		owner = table->instances[slot].role;
	LWLockRelease(&table->instances_lock);
	if (OidIsValid(owner))
		pgrl_require_instance_privilege(name, owner);
}

/* Forget an instance; caller holds instances_lock exclusively */
static void
pgrl_forget_instance(int slot)
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
	int			slot;
	Oid			role = GetUserId();
	int			role_cap = pgrl_max_instances_per_role;
	Oid			allowed_owner = InvalidOid;

	pgrl_require_primary("register instances");
	pgrl_require_ready();
	pgrl_copy_name_arg(fcinfo, 0, name, "instance");
	if (!PG_ARGISNULL(1))
	{
		memory_kb = PG_GETARG_INT64(1);
		if (memory_kb < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("memory_kb must not be negative")));
	}

	now = pgrl_now();
	for (;;)
	{
		Oid			owner;

		LWLockAcquire(&table->instances_lock, LW_EXCLUSIVE);
		slot = pgrl_register_instance(name, memory_kb, now, now, role, role_cap,
									allowed_owner, &owner, &joined);
		if (slot != RL_INSTANCE_NOT_OWNED)
			break;
		/* membership is read from the catalogs: not under our lock */
		LWLockRelease(&table->instances_lock);
		pgrl_require_instance_privilege(name, owner);
		allowed_owner = owner;
	}
	if (slot == RL_ROLE_INSTANCES_FULL)
	{
		LWLockRelease(&table->instances_lock);
		/* the role's name comes from the catalogs: never under an LWLock */
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("role \"%s\" has too many pg_ratelimit instances",
						GetUserNameFromId(role, false)),
				 errdetail("ratelimit.max_instances_per_role is %d.", role_cap),
				 errhint("Unregister instances that are gone with rl_unregister(), or raise ratelimit.max_instances_per_role and reload the configuration.")));
	}
	if (slot < 0)
	{
		LWLockRelease(&table->instances_lock);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many pg_ratelimit instances"),
				 errdetail("ratelimit.max_instances is %d.", pgrl_max_instances),
				 errhint("Unregister instances that are gone, or raise ratelimit.max_instances and restart the server.")));
	}
	live = pgrl_count_live(now);
	LWLockRelease(&table->instances_lock);

	pg_atomic_fetch_add_u64(&table->heartbeat_version, 1);
	if (joined)
	{
		pg_atomic_fetch_add_u64(&table->membership_version, 1);
		pgrl_wake_worker();
	}
	PG_RETURN_INT32(live);
}

/*
 * Drop an instance and expire its open leases.  Returns false when no such
 * instance is registered.
 */
static bool
pgrl_drop_instance(const char *name)
{
	int			slot;
	Oid			allowed_owner = InvalidOid;

	for (;;)
	{
		Oid			owner = InvalidOid;

		LWLockAcquire(&table->instances_lock, LW_EXCLUSIVE);
		slot = pgrl_lookup_slot(instance_index, name);
		if (slot >= 0 &&
			!pgrl_instance_owned(&table->instances[slot], GetUserId(), allowed_owner))
			owner = table->instances[slot].role;
		else if (slot >= 0)
			pgrl_forget_instance(slot);
		LWLockRelease(&table->instances_lock);
		if (!OidIsValid(owner))
			break;
		pgrl_require_instance_privilege(name, owner);
		allowed_owner = owner;
	}
	if (slot < 0)
		return false;
	pgrl_expire_instance_leases(name);
	pg_atomic_fetch_add_u64(&table->membership_version, 1);
	pg_atomic_fetch_add_u64(&table->heartbeat_version, 1);
	return true;
}

/*
 * Forget every instance: a new installation of the extension starts with
 * none (the old one's models, and with them their leases, go at commit).
 */
void
pgrl_forget_all_instances(void)
{
	LWLockAcquire(&table->instances_lock, LW_EXCLUSIVE);
	for (int slot = 0; slot < pgrl_max_instances; slot++)
		if (table->instances[slot].in_use)
			pgrl_forget_instance(slot);
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

	pgrl_require_primary("unregister instances");
	pgrl_require_ready();
	pgrl_copy_name_arg(fcinfo, 0, name, "instance");
	if (pgrl_drop_instance(name))
		pgrl_wake_worker();
	PG_RETURN_VOID();
}

/*
 * Drop every instance whose last heartbeat is older than the timeout, with
 * its leases.  Returns when the next live instance goes stale (limiter's
 * clock), or DT_NOEND.  Worker only.
 */
TimestampTz
pgrl_drop_stale_instances(TimestampTz now)
{
	char	   *stale = NULL;
	int			num_stale = 0;
	TimestampTz next = DT_NOEND;
	int64		timeout = (int64) pgrl_instance_timeout_s * USECS_PER_SEC;

	LWLockAcquire(&table->instances_lock, LW_SHARED);
	for (int i = 0; i < pgrl_max_instances; i++)
	{
		RlInstance *instance = &table->instances[i];

		if (!instance->in_use)
			continue;
		if (pgrl_is_live(instance, now))
			next = Min(next, instance->last_heartbeat + timeout);
		else
		{
			if (stale == NULL)
				stale = palloc(sizeof(char) * (RL_NAME_MAX_LEN + 1) * pgrl_max_instances);
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
			int			slot = pgrl_lookup_slot(instance_index, name);

			dropped = slot >= 0 && !pgrl_is_live(&table->instances[slot], now);
			if (dropped)
				pgrl_forget_instance(slot);
		}
		LWLockRelease(&table->instances_lock);
		if (!dropped)
			continue;
		pgrl_expire_instance_leases(name);
		pg_atomic_fetch_add_u64(&table->membership_version, 1);
		pg_atomic_fetch_add_u64(&table->heartbeat_version, 1);
		elog(LOG, "pg_ratelimit dropped instance \"%s\": no heartbeat for %d s",
			 name, pgrl_instance_timeout_s);
	}
	return next;
}

/*
 * The memory cap an acquire naming an instance is held to for its job type
 * (none when the instance is not registered, did not report memory, or the
 * job type has no memory estimate).  Caller holds config_lock (shared).
 */
void
pgrl_memory_cap(const char *name, int job_type_slot, RlMemoryCap *cap)
{
	int			slot;
	RlJobType  *job_type = job_type_slot >= 0 ? &pgrl_job_types[job_type_slot] : NULL;

	memset(cap, 0, sizeof(*cap));
	cap->instance_slot = -1;
	if (name[0] == '\0')
		return;
	LWLockAcquire(&table->instances_lock, LW_SHARED);
	slot = pgrl_lookup_slot(instance_index, name);
	if (slot >= 0)
	{
		RlInstance *instance = &table->instances[slot];

		cap->instance_slot = slot;
		cap->instance_generation = instance->generation;
		if (job_type && instance->memory_kb >= 0 && job_type->est_memory_kb > 0)
		{
			cap->in_flight = pgrl_memory_counter(slot, job_type_slot);
			cap->cap = pgrl_share_of(instance->memory_kb, job_type->base_ratio) /
				job_type->est_memory_kb;
		}
	}
	LWLockRelease(&table->instances_lock);
}

/* Count one more job against the cap; false when the cap is reached */
bool
pgrl_memory_take(const RlMemoryCap *cap)
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
pgrl_instance_lease_gone(const RlLease *lease)
{
	pg_atomic_uint32 *counter;
	uint32		current;

	if (!lease->memory_counted || lease->job_type_slot < 0)
		return;
	/* a re-assigned slot started again from zero: not ours to decrement */
	if (table->instances[lease->instance_slot].generation != lease->instance_generation)
		return;
	counter = pgrl_memory_counter(lease->instance_slot, lease->job_type_slot);
	current = pg_atomic_read_u32(counter);
	while (current > 0 &&
		   !pg_atomic_compare_exchange_u32(counter, &current, current - 1))
		;
	pgrl_wake_memory_waiters();
}

/* Copy every registered instance into a palloc'd array; returns how many */
int
pgrl_copy_instances(RlInstanceInfo **instances)
{
	int			count = 0;

	*instances = palloc(sizeof(RlInstanceInfo) * pgrl_max_instances);
	LWLockAcquire(&table->instances_lock, LW_SHARED);
	for (int i = 0; i < pgrl_max_instances; i++)
	{
		RlInstance *instance = &table->instances[i];
		RlInstanceInfo *info = &(*instances)[count];

		if (!instance->in_use)
			continue;
		strlcpy(info->name, instance->name, sizeof(info->name));
		info->memory_kb = instance->memory_kb;
		info->registered_at = instance->registered_at;
		info->last_heartbeat = instance->last_heartbeat;
		info->role = instance->role;
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
pgrl_restore_instance(const RlInstanceInfo *info)
{
	bool		joined;
	int			slot;
	Oid			owner;

	LWLockAcquire(&table->instances_lock, LW_EXCLUSIVE);
	/* what was registered stays registered: no cap on a restore */
	slot = pgrl_register_instance(info->name, info->memory_kb, info->last_heartbeat,
								info->registered_at, info->role, 0, info->role, &owner,
								&joined);
	LWLockRelease(&table->instances_lock);
	return slot >= 0;
}

/* A restored lease naming a registered instance counts against its memory */
void
pgrl_restore_instance_lease(RlLease *lease)
{
	RlMemoryCap cap;

	lease->instance_slot = -1;
	lease->memory_counted = false;
	pgrl_memory_cap(lease->instance, lease->job_type_slot, &cap);
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

	pgrl_require_ready();
	InitMaterializedSRF(fcinfo, 0);
	now = pgrl_now();
	num_instances = pgrl_copy_instances(&instances);

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
	pgrl_lease_walk_begin(&walk);
	while (pgrl_lease_walk_next(&walk, &batch))
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
		Datum		values[7];
		bool		nulls[7] = {false, false, false, false, false, false, false};
		RlLeaseCount *count = hash_search(held, instances[i].name, HASH_FIND, NULL);
		char	   *role = OidIsValid(instances[i].role) ?
			GetUserNameFromId(instances[i].role, true) : NULL;

		values[0] = CStringGetTextDatum(instances[i].name);
		values[1] = TimestampTzGetDatum(instances[i].registered_at);
		values[2] = TimestampTzGetDatum(instances[i].last_heartbeat);
		values[3] = Int64GetDatum(instances[i].memory_kb);
		nulls[3] = instances[i].memory_kb < 0;
		values[4] = BoolGetDatum(now - instances[i].last_heartbeat <
								 (int64) pgrl_instance_timeout_s * USECS_PER_SEC);
		values[5] = Int64GetDatum(count ? count->leases : 0);
		values[6] = role ? CStringGetTextDatum(role) : (Datum) 0;
		nulls[6] = role == NULL;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	hash_destroy(held);
	return (Datum) 0;
}

/*
 * An instance's part of each limit of a model: the limit split among the n
 * live instances exactly, floor(limit / n) each and one more unit for each
 * of the first limit mod n instances in rank order, so that the parts add
 * up to the limit.  RL_UNLIMITED where the model has no limit.
 */
static void
pgrl_instance_part(const RlModel *model, int n, int rank, int64 *part)
{
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		limit = model->limit[d];

		part[d] = limit == RL_UNLIMITED ? RL_UNLIMITED :
			limit / n + (rank < limit % n ? 1 : 0);
	}
}

/*
 * pool_slots of one instance: the minimum over the limits of
 * floor(part / mean estimate), ties toward the longer window;
 * RL_UNLIMITED_POOL_SLOTS when no limit applies.  Sets *limited_by (or -1).
 */
static int64
pgrl_pool_slots(const int64 *part, int64 avg_tokens, int32 avg_requests, int *limited_by)
{
	int64		pool = -1;

	*limited_by = -1;
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		estimate = pgrl_dimension_amount(d, avg_tokens, avg_requests);
		int64		fit;

		if (part[d] == RL_UNLIMITED || estimate <= 0)
			continue;
		fit = part[d] / estimate;
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
 * The ratio part of a job type's slots on one instance:
 * min(floor(floor(part x ratio) / estimate) over the limits,
 * floor(pool_slots x ratio)), ties toward the longer window.
 */
static int64
pgrl_job_type_slots(const int64 *part, const RlJobType *job_type, double ratio,
				  int64 pool, int pool_limited_by, int *limited_by)
{
	int64		slots = pgrl_job_type_fit(part, job_type, ratio, limited_by);
	int64		from_pool = pgrl_share_of(pool, ratio);

	/* the pool's part, ranked by the window that limits the pool */
	if (slots < 0 || from_pool < slots ||
		(from_pool == slots && pool_limited_by >= 0 && pool_limited_by < *limited_by))
	{
		slots = from_pool;
		*limited_by = pool_limited_by;
	}
	return slots;
}

/*
 * want, capped by the jobs of the type an instance's memory holds
 * (floor(memory_kb x configured ratio / est_memory_kb)) when it reported
 * memory; *limited_by says 'memory' when the cap decides.
 */
static int64
pgrl_memory_slots(const RlJobType *job_type, int64 memory_kb, int64 want, int *limited_by)
{
	int64		memory_slots;

	if (memory_kb < 0 || job_type->est_memory_kb <= 0)
		return want;
	memory_slots = pgrl_share_of(memory_kb, job_type->base_ratio) / job_type->est_memory_kb;
	if (memory_slots >= want)
		return want;
	*limited_by = RL_LIMITED_BY_MEMORY;
	return memory_slots;
}

/*
 * Take up to want jobs of a job type from what is left of an instance's
 * part of the limits (left, per dimension; RL_UNLIMITED where none);
 * returns how many fit.  When fewer than want fit, *limited_by names the
 * first limit that ran out.
 */
static int64
pgrl_take_part(int64 *left, const RlJobType *job_type, int64 want, int *limited_by)
{
	int64		got = Max(want, 0);

	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		estimate = pgrl_dimension_amount(d, job_type->est_tokens,
												   job_type->est_requests);

		if (left[d] == RL_UNLIMITED || estimate <= 0 || left[d] / estimate >= got)
			continue;
		got = left[d] / estimate;
		*limited_by = d;
	}
	for (int d = 0; d < RL_NUM_DIMS; d++)
		if (left[d] != RL_UNLIMITED)
			left[d] -= got * pgrl_dimension_amount(d, job_type->est_tokens,
												 job_type->est_requests);
	return got;
}

static Datum
pgrl_limited_by_datum(int limited_by, bool *isnull)
{
	*isnull = limited_by < 0;
	if (limited_by < 0)
		return (Datum) 0;
	return CStringGetTextDatum(pgrl_dimension_names[limited_by]);
}

/* Does instance a come before instance b in rank order? */
static bool
pgrl_ranks_before(const RlInstance *a, const RlInstance *b)
{
	if (a->registered_at != b->registered_at)
		return a->registered_at < b->registered_at;
	return strcmp(a->name, b->name) < 0;
}

/*
 * rl_allocation_internal(instance): per model, the pool (job_type NULL) and
 * each job type's slots for one of the live instances.
 *
 * The slots of all live instances together never exceed any limit of a
 * model: each instance gets its part of every limit (pgrl_instance_part; the
 * parts add up to the limit), and the jobs its slots stand for never take
 * more than its part.  Within the part, each job type gets its ratio's
 * share (floored), and then, from what those shares leave, the jobs that
 * ratelimit.min_job_type_slots guarantees, as far as they fit: the job
 * types are served in name order, starting at a different one on each
 * instance (the instance of rank r starts at the (r mod J)-th of the J job
 * types), so that over the instances every job type gets some.  A job type
 * with no slot on an instance (or a pool of 0) is to be admitted centrally,
 * with rl_acquire: the admission column says so.  Rank is the order of the
 * live instances by registered_at, then name.
 */
Datum
rl_allocation_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char		name[RL_NAME_MAX_LEN + 1];
	TimestampTz now;
	int			slot;
	int			n = 0;
	int			rank = 0;
	int64		memory_kb;
	int128		sum_tokens = 0; /* of up to max_job_types bigints: no overflow */
	int64		sum_requests = 0;
	int			num_job_types = 0;
	int64		avg_tokens;
	int32		avg_requests;
	int		   *job_type_slots;
	RlJobType  *job_types;
	double	   *ratios;
	int64	   *slots;
	int		   *limited_by;

	pgrl_require_ready();
	pgrl_copy_name_arg(fcinfo, 0, name, "instance");
	InitMaterializedSRF(fcinfo, 0);
	now = pgrl_now();

	LWLockAcquire(&table->instances_lock, LW_SHARED);
	slot = pgrl_lookup_slot(instance_index, name);
	if (slot < 0 || !pgrl_is_live(&table->instances[slot], now))
	{
		LWLockRelease(&table->instances_lock);
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("instance \"%s\" is not registered", name),
				 errhint("Call rl_heartbeat('%s') first, and again more often than ratelimit.instance_timeout (%d s).",
						 name, pgrl_instance_timeout_s)));
	}
	memory_kb = table->instances[slot].memory_kb;
	/* the live instances, and our rank among them */
	for (int i = 0; i < pgrl_max_instances; i++)
	{
		if (!pgrl_is_live(&table->instances[i], now))
			continue;
		n++;
		if (pgrl_ranks_before(&table->instances[i], &table->instances[slot]))
			rank++;
	}
	LWLockRelease(&table->instances_lock);

	job_type_slots = palloc(sizeof(int) * pgrl_max_job_types);
	job_types = palloc(sizeof(RlJobType) * pgrl_max_job_types);
	ratios = palloc(sizeof(double) * pgrl_max_job_types);
	slots = palloc(sizeof(int64) * pgrl_max_job_types);
	limited_by = palloc(sizeof(int) * pgrl_max_job_types);

	/*
	 * Copies of the job types, and of each model under its lock: the rows
	 * go to the tuplestore, which may write a file (and fail), with no lock
	 * held.
	 */
	LWLockAcquire(&pgrl_state->config_lock, LW_SHARED);
	memcpy(job_types, pgrl_job_types, sizeof(RlJobType) * pgrl_max_job_types);
	LWLockRelease(&pgrl_state->config_lock);
	for (int j = 0; j < pgrl_max_job_types; j++)
	{
		if (!job_types[j].in_use)
			continue;
		sum_tokens += job_types[j].est_tokens;
		sum_requests += job_types[j].est_requests;
		job_type_slots[num_job_types++] = j;
	}
	/* in name order: the order the minimum slots go round in */
	for (int k = 1; k < num_job_types; k++)
		for (int i = k; i > 0 && strcmp(job_types[job_type_slots[i - 1]].name,
										job_types[job_type_slots[i]].name) > 0; i--)
		{
			int			swap = job_type_slots[i];

			job_type_slots[i] = job_type_slots[i - 1];
			job_type_slots[i - 1] = swap;
		}
	/* the floored mean estimate; without job types, an acquire's default */
	avg_tokens = num_job_types > 0 ? (int64) (sum_tokens / num_job_types) : 0;
	avg_requests = num_job_types > 0 ? (int32) (sum_requests / num_job_types) : 1;

	for (int m = 0; m < pgrl_max_models; m++)
	{
		RlModel    *model = &pgrl_models[m];
		RlModel		copy;
		int64		part[RL_NUM_DIMS];
		int64		left[RL_NUM_DIMS];
		int64		pool;
		int			pool_limited_by;
		Datum		values[7];
		bool		nulls[7] = {false, false, false, false, false, false, false};

		LWLockAcquire(&model->lock, LW_SHARED);
		memcpy(&copy, model, sizeof(RlModel));
		for (int k = 0; k < num_job_types && copy.in_use; k++)
			ratios[k] = pgrl_share(m, job_type_slots[k])->ratio;
		LWLockRelease(&model->lock);
		if (!copy.in_use)
			continue;

		pgrl_instance_part(&copy, n, rank, part);
		pool = pgrl_pool_slots(part, avg_tokens, avg_requests, &pool_limited_by);
		values[0] = CStringGetTextDatum(copy.name);
		nulls[1] = true;
		values[2] = Int32GetDatum(n);
		values[3] = Int64GetDatum(pool);
		values[4] = Int64GetDatum(pool);
		values[5] = pgrl_limited_by_datum(pool_limited_by, &nulls[5]);
		values[6] = CStringGetTextDatum(pool > 0 ? "local" : "central");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

		/*
		 * Each job type's ratio share of the part, then what the minimum
		 * slots add from what is left; a job type never takes more than is
		 * left (ratios in force can sum to a hair above 1).
		 */
		memcpy(left, part, sizeof(left));
		for (int k = 0; k < num_job_types; k++)
		{
			RlJobType  *job_type = &job_types[job_type_slots[k]];
			int64		want = pgrl_job_type_slots(part, job_type, ratios[k], pool,
												 pool_limited_by, &limited_by[k]);

			slots[k] = pgrl_take_part(left, job_type, pgrl_memory_slots(job_type, memory_kb,
																	want, &limited_by[k]),
									&limited_by[k]);
		}
		for (int i = 0; i < num_job_types; i++)
		{
			/* a different job type first on each instance */
			int			k = (rank + i) % num_job_types;
			RlJobType  *job_type = &job_types[job_type_slots[k]];
			int			ignored;
			int64		want;

			if (slots[k] >= pgrl_min_job_type_slots)
				continue;
			want = pgrl_memory_slots(job_type, memory_kb, pgrl_min_job_type_slots,
								   &ignored) - slots[k];
			slots[k] += pgrl_take_part(left, job_type, want, &ignored);
		}

		for (int k = 0; k < num_job_types; k++)
		{
			nulls[1] = false;
			values[1] = CStringGetTextDatum(job_types[job_type_slots[k]].name);
			values[4] = Int64GetDatum(slots[k]);
			values[5] = pgrl_limited_by_datum(limited_by[k], &nulls[5]);
			values[6] = CStringGetTextDatum(slots[k] > 0 ? "local" : "central");
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}
