/*-------------------------------------------------------------------------
 *
 * holders.c
 *		Who holds leases: the open leases of each role, for
 *		ratelimit.max_leases_per_role, and the session-bound leases of this
 *		backend, released when it exits.
 *
 * Roles: a shared array of RL_MAX_ROLES records {role, open leases},
 * found through a shared hash role -> record; roles_lock protects the hash
 * and which role a record is for.  A lease is counted against the login
 * role (session user) of the session that takes it, the role whose
 * ratelimit.max_leases_per_role is in force there.  Counting up happens
 * under roles_lock held shared (the counts are atomics); a record changes
 * hands only under it held exclusively, and only while it counts nothing.
 * So a lease keeps the index of its record (RlLease.role_slot), and giving
 * its count back needs no lock and no lookup.  When every record counts
 * leases, a new role's leases are not counted (role_slot -1), unless a cap
 * applies to it: then the request is refused.  roles_lock is taken only
 * by an acquire before it looks at any model, and by a restore under
 * config_lock; nothing else is taken under it.
 *
 * Session-bound leases: a backend keeps the ids of the leases it took with
 * session_bound => true in a local array; grant.c releases those still open
 * in a before_shmem_exit callback, which runs however the session ends
 * (disconnect, FATAL, pg_terminate_backend).  They are never saved, so a
 * restart does not bring them back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "holders.h"
#include "lease.h"
#include "pg_ratelimit.h"
#include "settings.h"

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

/*
 * The count this backend's running acquire added for its role, given back
 * unless a lease is stored: when the call ends without one, when its
 * (sub)transaction aborts (an error, a cancel), or when the backend exits.
 */
static bool role_reserved = false;
static int	reserved_slot = -1;

/* Ids of the session-bound leases this backend took */
static int64 *session_leases = NULL;
static int	num_session_leases = 0;
static int	session_leases_room = 0;
static bool callbacks_registered = false;

Size
pgrl_holders_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(RlRoles)),
					hash_estimate_size(RL_MAX_ROLES, sizeof(RlRoleIndexEntry)));
}

/* Called at shared memory startup, with AddinShmemInitLock held */
void
pgrl_holders_shmem_init(int tranche_id)
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

/* Count one more under a record unless cap (> 0) is reached; caller holds roles_lock */
static int
pgrl_role_count(int slot, int cap)
{
	pg_atomic_uint32 *open = &roles->records[slot].open;
	uint32		current;

	Assert(LWLockHeldByMe(&roles->lock));
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

/*
 * A record for a new role: an unused one, else one whose role counts no
 * lease (nothing refers to it).  -1 when every record counts leases.
 * Caller holds roles_lock exclusively.
 */
static int
pgrl_role_free_record(void)
{
	Assert(LWLockHeldByMeInMode(&roles->lock, LW_EXCLUSIVE));
	if (roles->num_used < RL_MAX_ROLES)
		return roles->num_used++;
	for (int slot = 0; slot < RL_MAX_ROLES; slot++)
		if (pg_atomic_read_u32(&roles->records[slot].open) == 0)
		{
			hash_search(role_index, &roles->records[slot].role, HASH_REMOVE, NULL);
			return slot;
		}
	return -1;
}

/*
 * Count a new lease of a role against its cap (0: none).  Returns the
 * role's record for RlLease.role_slot, -1 when the lease is not counted
 * (no record free, no cap), or RL_ROLE_AT_CAP / RL_ROLE_NO_ROOM when a cap
 * refuses it.  Counts under roles_lock held shared, so that a record is
 * given to another role only while nothing counts on it; giving a count
 * back needs no lock (the record cannot change hands before).  Callers may
 * hold config_lock, never a model lock.
 */
int
pgrl_role_lease_add(Oid role, int cap)
{
	RlRoleIndexEntry *entry;
	int			result = -1;
	bool		found;

	LWLockAcquire(&roles->lock, LW_SHARED);
	entry = hash_search(role_index, &role, HASH_FIND, NULL);
	if (entry)
		result = pgrl_role_count(entry->slot, cap);
	LWLockRelease(&roles->lock);
	if (entry)
		return result;

	LWLockAcquire(&roles->lock, LW_EXCLUSIVE);
	entry = hash_search(role_index, &role, HASH_FIND, NULL);
	if (entry == NULL)
	{
		int			slot = pgrl_role_free_record();

		if (slot >= 0)
		{
			/* a free record leaves room in the index: it is sized alike */
			entry = hash_search(role_index, &role, HASH_ENTER_NULL, &found);
			if (entry)
			{
				entry->slot = slot;
				roles->records[slot].role = role;
			}
		}
	}
	if (entry)
		result = pgrl_role_count(entry->slot, cap);
	else
		result = cap > 0 ? RL_ROLE_NO_ROOM : -1;
	LWLockRelease(&roles->lock);
	return result;
}

/* A lease counted against its role is gone (any lock may be held) */
void
pgrl_role_lease_gone(const RlLease *lease)
{
	if (lease->role_slot >= 0)
		pg_atomic_fetch_sub_u32(&roles->records[lease->role_slot].open, 1);
}

/*
 * Before the backend detaches from shared memory: give back the count of
 * an acquire an error interrupted.
 */
static void
pgrl_holders_exit(int code, Datum arg)
{
	pgrl_holders_end_acquire();
}

/* An acquire that errors gives its role count back with its (sub)transaction */
static void
pgrl_holders_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		pgrl_holders_end_acquire();
}

static void
pgrl_holders_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		pgrl_holders_end_acquire();
}

/* Room for one more session-bound lease id; may error */
static void
pgrl_session_lease_make_room(void)
{
	int			kept = 0;

	if (num_session_leases < session_leases_room)
		return;
	/* forget leases released elsewhere or expired before growing */
	for (int i = 0; i < num_session_leases; i++)
		if (pgrl_lease_is_open(session_leases[i]))
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
pgrl_holders_start_acquire(bool session_bound)
{
	int			slot;

	if (!callbacks_registered)
	{
		before_shmem_exit(pgrl_holders_exit, (Datum) 0);
		RegisterXactCallback(pgrl_holders_xact_callback, NULL);
		RegisterSubXactCallback(pgrl_holders_subxact_callback, NULL);
		callbacks_registered = true;
	}
	pgrl_holders_end_acquire();
	if (session_bound)
		pgrl_session_lease_make_room();
	/* the login role's: its setting is the cap in force (ALTER ROLE ... SET) */
	slot = pgrl_role_lease_add(GetSessionUserId(), pgrl_max_leases_per_role);
	if (slot >= 0)
	{
		role_reserved = true;
		reserved_slot = slot;
	}
	return slot;
}

/* The acquire stored lease_id: its role count is the lease's now.  Never errors. */
void
pgrl_holders_granted(int64 lease_id, bool session_bound)
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
pgrl_holders_end_acquire(void)
{
	if (role_reserved)
		pg_atomic_fetch_sub_u32(&roles->records[reserved_slot].open, 1);
	role_reserved = false;
}

/*
 * The session-bound leases this backend took and may still hold (some may
 * have been released or expired since): *ids points at them, until the
 * next call here.  Their releasing is grant.c's, at backend exit.
 */
int
pgrl_session_leases(const int64 **ids)
{
	*ids = session_leases;
	return num_session_leases;
}

/* A session-bound lease of this backend was released */
void
pgrl_session_lease_forget(int64 lease_id)
{
	for (int i = 0; i < num_session_leases; i++)
		if (session_leases[i] == lease_id)
		{
			session_leases[i] = session_leases[--num_session_leases];
			return;
		}
}
