/*-------------------------------------------------------------------------
 *
 * holders.c
 *		Who holds leases: the open leases of each role, for
 *		ratelimit.max_leases_per_role, and the session-bound leases of this
 *		backend, released when it exits.
 *
 * Roles: a shared array of RL_MAX_ROLES records {role, open leases},
 * found by a shared name-less hash role -> record.  Records are added
 * under roles_lock held exclusively and never removed until the server
 * restarts, so a lease keeps the index of its role's record
 * (RlLease.role_slot) and giving its count back needs no lock and no
 * lookup: the counts are atomics.  A role the array has no room for is not
 * counted (role_slot -1), unless a cap applies to it: then the request is
 * refused.  roles_lock is taken after config_lock and the lease partition
 * locks, never before them, and nothing else is taken under it.
 *
 * Session-bound leases: a backend keeps the ids of the leases it took with
 * session_bound => true in a local array and releases those still open in
 * a before_shmem_exit callback, which runs however the session ends
 * (disconnect, FATAL, pg_terminate_backend); they are never saved, so a
 * restart does not bring them back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "holders.h"
#include "lease.h"
#include "pg_ratelimit.h"

/* Roles whose open leases are counted at once */
#define RL_MAX_ROLES			4096

typedef struct RlRoleLeases
{
	Oid			role;
	pg_atomic_uint32 open;
} RlRoleLeases;

typedef struct RlRoleIndexEntry
{
	Oid			role;			/* hash key: must be first */
	int			slot;
} RlRoleIndexEntry;

typedef struct RlRoles
{
	LWLock		lock;			/* the index and num_used */
	int			num_used;
	RlRoleLeases records[RL_MAX_ROLES];
} RlRoles;

static RlRoles *roles = NULL;
static HTAB *role_index = NULL;

/* This backend's role record, found once */
static Oid	cached_role = InvalidOid;
static int	cached_slot = -1;

/*
 * The count this backend's running acquire added for its role, given back
 * unless a lease is stored.  An error in between leaves it set: the next
 * acquire or the exit gives it back, so a role is never under-counted.
 */
static bool role_reserved = false;
static int	reserved_slot = -1;

/* Ids of the session-bound leases this backend took */
static int64 *session_leases = NULL;
static int	num_session_leases = 0;
static int	session_leases_room = 0;
static bool exit_registered = false;

Size
rl_holders_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(RlRoles)),
					hash_estimate_size(RL_MAX_ROLES, sizeof(RlRoleIndexEntry)));
}

/* Called at shared memory startup, with AddinShmemInitLock held */
void
rl_holders_shmem_init(int tranche_id)
{
	HASHCTL		info;
	bool		found_roles;

	roles = ShmemInitStruct("pg_ratelimit roles", sizeof(RlRoles), &found_roles);
	if (!found_roles)
	{
		LWLockInitialize(&roles->lock, tranche_id);
		roles->num_used = 0;
		for (int i = 0; i < RL_MAX_ROLES; i++)
			pg_atomic_init_u32(&roles->records[i].open, 0);
	}
	info.keysize = sizeof(Oid);
	info.entrysize = sizeof(RlRoleIndexEntry);
	role_index = ShmemInitHash("pg_ratelimit role index", RL_MAX_ROLES, RL_MAX_ROLES,
							   &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

/* The record of a role, added when missing; -1 when there is no room */
static int
rl_role_slot(Oid role)
{
	RlRoleIndexEntry *entry;
	int			slot = -1;
	bool		found;

	if (role == cached_role)
		return cached_slot;

	LWLockAcquire(&roles->lock, LW_SHARED);
	entry = hash_search(role_index, &role, HASH_FIND, NULL);
	if (entry)
		slot = entry->slot;
	LWLockRelease(&roles->lock);

	if (slot < 0)
	{
		LWLockAcquire(&roles->lock, LW_EXCLUSIVE);
		if (roles->num_used < RL_MAX_ROLES)
		{
			entry = hash_search(role_index, &role, HASH_ENTER_NULL, &found);
			if (entry && !found)
			{
				entry->slot = roles->num_used++;
				roles->records[entry->slot].role = role;
			}
			if (entry)
				slot = entry->slot;
		}
		LWLockRelease(&roles->lock);
	}
	if (slot >= 0 && role == GetUserId())
	{
		cached_role = role;
		cached_slot = slot;
	}
	return slot;
}

/*
 * Count a new lease of a role against its cap (0: none).  Returns the
 * role's record for RlLease.role_slot, -1 when the lease is not counted,
 * or RL_ROLE_AT_CAP / RL_ROLE_NO_ROOM when a cap refuses it.  Takes
 * roles_lock only the first time a role is seen: callers may hold
 * config_lock, never a model lock.
 */
int
rl_role_lease_add(Oid role, int cap)
{
	int			slot = rl_role_slot(role);
	pg_atomic_uint32 *open;
	uint32		current;

	if (slot < 0)
		return cap > 0 ? RL_ROLE_NO_ROOM : -1;
	open = &roles->records[slot].open;
	if (cap <= 0)
	{
		pg_atomic_fetch_add_u32(open, 1);
		return slot;
	}
	current = pg_atomic_read_u32(open);
	do
	{
		if (current >= (uint32) cap)
			return RL_ROLE_AT_CAP;
	} while (!pg_atomic_compare_exchange_u32(open, &current, current + 1));
	return slot;
}

/* A lease counted against its role is gone (any lock may be held) */
void
rl_role_lease_gone(const RlLease *lease)
{
	if (lease->role_slot >= 0)
		pg_atomic_fetch_sub_u32(&roles->records[lease->role_slot].open, 1);
}

/* Open leases of a role, as counted */
int64
rl_role_open_leases(Oid role)
{
	RlRoleIndexEntry *entry;
	int64		open = 0;

	LWLockAcquire(&roles->lock, LW_SHARED);
	entry = hash_search(role_index, &role, HASH_FIND, NULL);
	if (entry)
		open = pg_atomic_read_u32(&roles->records[entry->slot].open);
	LWLockRelease(&roles->lock);
	return open;
}

/*
 * Before the backend detaches from shared memory: give back the count of
 * an acquire an error interrupted, and release the session-bound leases
 * still open, each settled as a release without actual usage.
 */
static void
rl_holders_exit(int code, Datum arg)
{
	int			released = 0;

	/* a FATAL error may have left a lock held: ProcKill would free it */
	LWLockReleaseAll();
	rl_holders_end_acquire();
	for (int i = 0; i < num_session_leases; i++)
	{
		RlLease		lease;

		if (rl_take_session_lease(session_leases[i], MyProcPid, &lease))
		{
			RlUsage		no_usage;
			RlSettlement result;

			memset(&no_usage, 0, sizeof(no_usage));
			rl_settle_lease(&lease, &no_usage, rl_now(), &result);
			released++;
		}
	}
	num_session_leases = 0;
	if (released > 0)
		elog(DEBUG1, "pg_ratelimit released %d session-bound leases at backend exit",
			 released);
}

/* Room for one more session-bound lease id; may error */
static void
rl_session_lease_make_room(void)
{
	int			kept = 0;

	if (num_session_leases < session_leases_room)
		return;
	/* forget leases released elsewhere or expired before growing */
	for (int i = 0; i < num_session_leases; i++)
		if (rl_lease_is_open(session_leases[i]))
			session_leases[kept++] = session_leases[i];
	num_session_leases = kept;
	/* grow unless that freed half the room: adding stays cheap on average */
	if (num_session_leases < session_leases_room / 2)
		return;
	if (session_leases == NULL)
	{
		session_leases_room = 16;
		session_leases = MemoryContextAlloc(TopMemoryContext,
											sizeof(int64) * session_leases_room);
	}
	else
	{
		session_leases_room *= 2;
		session_leases = repalloc(session_leases, sizeof(int64) * session_leases_room);
	}
}

/*
 * Before an acquire looks at any model: count the lease it may take
 * against the current role's cap (ratelimit.max_leases_per_role), and for
 * a session-bound lease make room to remember it.  Returns the role record
 * for RlLease.role_slot (-1: not counted), or RL_ROLE_AT_CAP /
 * RL_ROLE_NO_ROOM when the cap refuses the request; may error.
 */
int
rl_holders_start_acquire(bool session_bound)
{
	int			slot;

	if (!exit_registered)
	{
		before_shmem_exit(rl_holders_exit, (Datum) 0);
		exit_registered = true;
	}
	rl_holders_end_acquire();
	if (session_bound)
		rl_session_lease_make_room();
	slot = rl_role_lease_add(GetUserId(), rl_max_leases_per_role);
	if (slot >= 0)
	{
		role_reserved = true;
		reserved_slot = slot;
	}
	return slot;
}

/* The acquire stored lease_id: its role count is the lease's now.  Never errors. */
void
rl_holders_granted(int64 lease_id, bool session_bound)
{
	role_reserved = false;
	if (session_bound)
	{
		Assert(num_session_leases < session_leases_room);
		session_leases[num_session_leases++] = lease_id;
	}
}

/* The acquire ends without a lease: give its role count back */
void
rl_holders_end_acquire(void)
{
	if (role_reserved)
		pg_atomic_fetch_sub_u32(&roles->records[reserved_slot].open, 1);
	role_reserved = false;
}

/* A session-bound lease of this backend was released */
void
rl_session_lease_forget(int64 lease_id)
{
	for (int i = 0; i < num_session_leases; i++)
		if (session_leases[i] == lease_id)
		{
			session_leases[i] = session_leases[--num_session_leases];
			return;
		}
}
