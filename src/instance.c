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
 * partition lock is held; nothing is taken under it.  The in-flight counters are atomics.  Two version
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
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "instance.h"
#include "limits.h"
#include "names.h"
#include "pg_ratelimit.h"
#include "settings.h"
#include "wait.h"


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
static pg_atomic_uint32 *memory_in_flight = NULL;	/* [instance *
													 * max_job_types + job
													 * type] */

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
	return add_size(size, pgrl_name_index_size(pgrl_max_instances));
}

/* Create or attach; caller holds AddinShmemInitLock */
void
pgrl_instances_shmem_init(int tranche_id)
{
	bool		found;
	bool		found_memory;

	table = ShmemInitStruct("pg_ratelimit instances",
							add_size(offsetof(RlInstanceTable, instances),
									 mul_size(pgrl_max_instances, sizeof(RlInstance))),
							&found);
	memory_in_flight = ShmemInitStruct("pg_ratelimit instance memory",
									   pgrl_memory_matrix_size(), &found_memory);
	if (!found)
	{
		LWLockInitialize(&table->instances_lock, tranche_id);
		pg_atomic_init_u64(&table->membership_version, 0);
		pg_atomic_init_u64(&table->heartbeat_version, 0);
		memset(table->instances, 0, mul_size(pgrl_max_instances, sizeof(RlInstance)));
		for (Size i = 0; i < (Size) pgrl_max_instances * pgrl_max_job_types; i++)
			pg_atomic_init_u32(&memory_in_flight[i], 0);
	}
	instance_index = pgrl_name_index_init("pg_ratelimit instance index", pgrl_max_instances);
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

	Assert(LWLockHeldByMe(&table->instances_lock));
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

	Assert(LWLockHeldByMe(&table->instances_lock));
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
	int			slot = pgrl_name_index_find(instance_index, name);
	RlInstance *instance;

	Assert(LWLockHeldByMeInMode(&table->instances_lock, LW_EXCLUSIVE));
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
		if (slot == pgrl_max_instances ||
			!pgrl_name_index_insert(instance_index, name, slot))
			return RL_INSTANCES_FULL;
		instance = &table->instances[slot];
		instance->in_use = true;
		instance->generation++;
		strlcpy(instance->name, name, sizeof(instance->name));
		instance->registered_at = registered_at;
		instance->role = role;
		for (int j = 0; j < pgrl_max_job_types; j++)
			pg_atomic_write_u32(pgrl_memory_counter(slot, j), 0);
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
	slot = pgrl_name_index_find(instance_index, name);
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

	Assert(LWLockHeldByMeInMode(&table->instances_lock, LW_EXCLUSIVE));
	pgrl_name_index_remove(instance_index, instance->name);
	instance->in_use = false;
}

/*
 * Register or refresh an instance for the current role (rl_heartbeat);
 * memory_kb -1 when not reported.  Returns the number of live instances.
 */
int
pgrl_instance_heartbeat(const char *name, int64 memory_kb, TimestampTz now)
{
	bool		joined;
	int			live;
	int			slot;
	Oid			role = GetUserId();
	int			role_cap = pgrl_max_instances_per_role;
	Oid			allowed_owner = InvalidOid;

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
	return live;
}

/*
 * Drop an instance (rl_unregister); the caller expires its open leases and
 * then calls pgrl_instances_changed.  Returns false when no such instance
 * is registered.
 */
bool
pgrl_drop_instance(const char *name)
{
	int			slot;
	Oid			allowed_owner = InvalidOid;

	for (;;)
	{
		Oid			owner = InvalidOid;

		LWLockAcquire(&table->instances_lock, LW_EXCLUSIVE);
		slot = pgrl_name_index_find(instance_index, name);
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
	return slot >= 0;
}

/*
 * Instances left (and their leases are expired): the worker saves the set
 * and sends NOTIFY rl_allocation.
 */
void
pgrl_instances_changed(void)
{
	pg_atomic_fetch_add_u64(&table->membership_version, 1);
	pg_atomic_fetch_add_u64(&table->heartbeat_version, 1);
	pgrl_wake_worker();
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
 * Drop every instance whose last heartbeat is older than the timeout.
 * Returns how many were dropped, their names in *names (RL_NAME_MAX_LEN + 1
 * bytes apart, valid until the next call): the caller expires their leases
 * and then calls pgrl_instances_changed.  Sets *next to when the next live instance goes stale (limiter's
 * clock), or DT_NOEND.  Worker only.
 */
int
pgrl_drop_stale_instances(TimestampTz now, const char **names, TimestampTz *next)
{
	static char *stale = NULL;	/* no allocation under instances_lock */
	int			num_stale = 0;
	int			num_dropped = 0;
	int64		timeout = (int64) pgrl_instance_timeout_s * USECS_PER_SEC;

	if (stale == NULL)
		stale = MemoryContextAlloc(TopMemoryContext,
								   (Size) (RL_NAME_MAX_LEN + 1) * pgrl_max_instances);
	*next = DT_NOEND;
	LWLockAcquire(&table->instances_lock, LW_SHARED);
	for (int i = 0; i < pgrl_max_instances; i++)
	{
		RlInstance *instance = &table->instances[i];

		if (!instance->in_use)
			continue;
		if (pgrl_is_live(instance, now))
			*next = Min(*next, instance->last_heartbeat + timeout);
		else
			strlcpy(stale + (Size) num_stale++ * (RL_NAME_MAX_LEN + 1), instance->name,
					RL_NAME_MAX_LEN + 1);
	}
	LWLockRelease(&table->instances_lock);

	for (int i = 0; i < num_stale; i++)
	{
		const char *name = stale + (Size) i * (RL_NAME_MAX_LEN + 1);
		int			slot;
		bool		dropped;

		/* it may have sent a heartbeat since: look again under the lock */
		LWLockAcquire(&table->instances_lock, LW_EXCLUSIVE);
		slot = pgrl_name_index_find(instance_index, name);
		dropped = slot >= 0 && !pgrl_is_live(&table->instances[slot], now);
		if (dropped)
			pgrl_forget_instance(slot);
		LWLockRelease(&table->instances_lock);
		if (!dropped)
			continue;
		/* keep the dropped ones first */
		if (num_dropped != i)
			memmove(stale + (Size) num_dropped * (RL_NAME_MAX_LEN + 1), name,
					RL_NAME_MAX_LEN + 1);
		num_dropped++;
		elog(LOG, "pg_ratelimit dropped instance \"%s\": no heartbeat for %d s",
			 name, pgrl_instance_timeout_s);
	}
	*names = stale;
	return num_dropped;
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
	const RlJobType *job_type = job_type_slot >= 0 ? pgrl_job_type(job_type_slot) : NULL;

	Assert(pgrl_config_lock_held(LW_SHARED));
	memset(cap, 0, sizeof(*cap));
	cap->instance_slot = -1;
	if (name[0] == '\0')
		return;
	LWLockAcquire(&table->instances_lock, LW_SHARED);
	slot = pgrl_name_index_find(instance_index, name);
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

/* Is a listed instance live at now?  The same rule as for the table. */
bool
pgrl_instance_info_live(const RlInstanceInfo *info, TimestampTz now)
{
	return now - info->last_heartbeat < (int64) pgrl_instance_timeout_s * USECS_PER_SEC;
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
 * For rl_allocation: how many instances are live (*live), the rank of the
 * named one among them by registered_at, then name (*rank, from 0), and
 * the memory it reported (*memory_kb, -1 when none).  False when it is not
 * registered or not live.
 */
bool
pgrl_instance_rank(const char *name, TimestampTz now, int *live, int *rank,
				   int64 *memory_kb)
{
	int			slot;

	*live = 0;
	*rank = 0;
	LWLockAcquire(&table->instances_lock, LW_SHARED);
	slot = pgrl_name_index_find(instance_index, name);
	if (slot < 0 || !pgrl_is_live(&table->instances[slot], now))
	{
		LWLockRelease(&table->instances_lock);
		return false;
	}
	*memory_kb = table->instances[slot].memory_kb;
	for (int i = 0; i < pgrl_max_instances; i++)
	{
		if (!pgrl_is_live(&table->instances[i], now))
			continue;
		(*live)++;
		if (pgrl_ranks_before(&table->instances[i], &table->instances[slot]))
			(*rank)++;
	}
	LWLockRelease(&table->instances_lock);
	return true;
}
