/*-------------------------------------------------------------------------
 *
 * lease.c
 *		The lease table: inserting, taking and removing leases, and what the
 *		worker needs to save them.
 *
 * A lease lives in a partitioned shared hash, keyed by its id.  This file
 * only keeps the table: whoever takes a lease out of it settles it
 * (grant.c), so a lease is settled exactly once.  Every removal of many
 * leases (the expiry sweep, an instance's leases, the leases of dropped
 * models, all of them) is one walk, pgrl_leases_remove_next, that hands
 * the removed leases back in batches; nothing but the table itself is
 * touched under the partition locks (no allocation, no latch, no other
 * lock but gone_lock).
 *
 * Locking: each partition has its own lock, chosen by the hash of the
 * lease id, protecting its leases and its list of leases to save.
 * sweep_lock lets one backend at a time sweep due leases (the others wait
 * for it, see below); it is held while the swept leases are settled
 * (model locks), and nothing waits for it holding another of our locks.  A
 * walk locks all partitions, in order, for one batch at a time.  gone_lock
 * is a spinlock over the gone ids and the save book, always the innermost
 * lock.  The counters (next id, open leases, version, earliest expiry,
 * sweep generation) are atomics.
 *
 * Walks.  Everything that looks at every lease (the expiry sweep, an
 * instance's leases, the rl_leases and rl_instances views, a full save)
 * walks the table in batches of about RL_LEASE_BATCH leases, with every
 * partition locked only during a batch, so that neither the memory it
 * needs nor the time it holds the partitions grows with the table.  A walk
 * is a dynahash sequential scan that stops only between two buckets: a
 * partitioned shared table never splits its buckets, so the number of the
 * next bucket is all it keeps while it holds no lock.  A lease that stays
 * in the table for the whole walk is visited exactly once; one inserted or
 * removed meanwhile may or may not be.
 *
 * earliest_expiry is a hint: no open lease expires before it.  It lets
 * every acquire and release check for due expiries with a few atomic
 * reads.  A sweep resets it before scanning, so an acquire that lowers it
 * during a sweep is never lost; while a sweep runs (sweep_generation is
 * odd) the hint proves nothing, so a caller waits for the sweep (the sweep
 * runs because the hint has passed: so has the callers' time, as a rule)
 * and then sweeps itself unless the hint shows that the finished sweep
 * covered its time: the other sweeper may have read an older time.  So
 * when any call returns, no lease due at the time it read counts anywhere.
 * Timestamps are stored with the sign bit flipped, which makes unsigned
 * order agree with signed order.
 *
 * Saving.  The worker saves the table incrementally (persist.c): each
 * partition keeps a list of the leases it has not copied for saving yet,
 * in insertion order, and the ids of saved leases that left the table are
 * kept in the gone array; the worker inserts the first and deletes the
 * second.  A save copies what was listed when it began (up to a marker
 * node it puts at the end of each list), one partition and one batch at a
 * time.  A lease counts as saved once copied, which holds once the save's
 * transaction commits; a save that never committed (its worker died) is
 * followed by a full save, which writes the table again from scratch, and
 * so is a full gone array.  A full load of shared memory restores the
 * saved leases as saved when it read the table as the last committed save
 * left it, and otherwise asks for a full save.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "lease.h"
#include "pg_ratelimit.h"
#include "settings.h"

#define RL_SIGN_BIT		(UINT64CONST(1) << 63)

/* A lease in the table, with its place in the list of leases to save */
typedef struct RlLeaseEntry
{
	RlLease		lease;			/* lease.lease_id is the hash key: first */
	dlist_node	unsaved;		/* in its partition's list until copied for
								 * saving; both links NULL once copied */
} RlLeaseEntry;

/* Saving state of one partition, protected by the partition's lock */
typedef struct RlLeasePartition
{
	dlist_head	unsaved;		/* leases not copied for saving, oldest first */
	dlist_node	save_end;		/* marks where the save in progress stops;
								 * both links NULL when not in the list */
} RlLeasePartition;

/* Partitions are written by different backends: one cache line each */
typedef union RlLeasePartitionPadded
{
	RlLeasePartition partition;
	char		pad[PG_CACHE_LINE_SIZE];
} RlLeasePartitionPadded;

/* What the lease table keeps besides the leases */
typedef struct RlLeaseBook
{
	LWLock		sweep_lock;		/* one sweep at a time */
	LWLock		partition_locks[RL_LEASE_PARTITIONS];
	char		pad_locks[PG_CACHE_LINE_SIZE];	/* lock words change on every
												 * call */

	/* read on every call */
	pg_atomic_uint64 sweep_generation;	/* odd while a sweep runs */
	pg_atomic_uint64 earliest_expiry;	/* encoded, see the top of this file */
	char		pad_hint[PG_CACHE_LINE_SIZE];

	/* written on every acquire and release */
	pg_atomic_uint64 next_lease_id;
	pg_atomic_uint32 open_leases;	/* in the table, or about to be */
	pg_atomic_uint64 lease_version; /* bumped by every change of the table */
	char		pad_counters[PG_CACHE_LINE_SIZE];

	RlLeasePartitionPadded partitions[RL_LEASE_PARTITIONS];

	slock_t		gone_lock;		/* protects the rest */
	bool		resave;			/* the saved table must be written anew */
	bool		saving;			/* a round saving leases has not committed */
	TransactionId save_xid;		/* the transaction of the last save */
	uint64		saves;			/* saves committed */
	Oid			saved_extension;	/* the extension whose table is saved */
	int			num_gone;
	int			max_gone;
	int64		gone[FLEXIBLE_ARRAY_MEMBER];	/* ids of saved leases that
												 * left the table since */
} RlLeaseBook;

static RlLeaseBook *book = NULL;
static HTAB *lease_table = NULL;

static bool pgrl_take_lease_checked(int64 lease_id, int session_pid, RlLease *lease);

/*
 * A walk's visitor: false when it has no room for this lease, which ends
 * the batch; the next batch visits the lease's bucket again from its head,
 * so a visitor that copies must give back what it took from that bucket
 * (bucket_start tells where a bucket begins).
 */
typedef bool (*RlLeaseVisitor) (RlLeaseEntry *entry, bool bucket_start, void *arg);

static inline uint64
pgrl_encode_time(TimestampTz t)
{
	return ((uint64) t) ^ RL_SIGN_BIT;
}

static inline TimestampTz
pgrl_decode_time(uint64 v)
{
	return (TimestampTz) (v ^ RL_SIGN_BIT);
}

/* Shared memory for the lease table and its book */
Size
pgrl_leases_shmem_size(void)
{
	Size		size = hash_estimate_size(pgrl_max_leases, sizeof(RlLeaseEntry));

	size = add_size(size, MAXALIGN(offsetof(RlLeaseBook, gone)));
	return add_size(size, mul_size(pgrl_max_leases, sizeof(int64)));
}

/* Create or attach to the lease table; caller holds AddinShmemInitLock */
void
pgrl_leases_shmem_init(int tranche_id)
{
	HASHCTL		info;
	bool		found;

	info.keysize = sizeof(int64);
	info.entrysize = sizeof(RlLeaseEntry);
	info.num_partitions = RL_LEASE_PARTITIONS;
	lease_table = ShmemInitHash("pg_ratelimit leases",
								pgrl_max_leases, pgrl_max_leases, &info,
								HASH_ELEM | HASH_BLOBS | HASH_PARTITION);
	book = ShmemInitStruct("pg_ratelimit lease book",
						   add_size(offsetof(RlLeaseBook, gone),
									mul_size(pgrl_max_leases, sizeof(int64))),
						   &found);
	if (!found)
	{
		LWLockInitialize(&book->sweep_lock, tranche_id);
		for (int i = 0; i < RL_LEASE_PARTITIONS; i++)
			LWLockInitialize(&book->partition_locks[i], tranche_id);
		pg_atomic_init_u64(&book->sweep_generation, 0);
		pg_atomic_init_u64(&book->earliest_expiry, PG_UINT64_MAX);

		/*
		 * Seed lease ids from the real clock so that ids handed out before a
		 * restart are never handed out again after it.
		 */
		pg_atomic_init_u64(&book->next_lease_id, (uint64) GetCurrentTimestamp());
		pg_atomic_init_u32(&book->open_leases, 0);
		pg_atomic_init_u64(&book->lease_version, 0);
		for (int i = 0; i < RL_LEASE_PARTITIONS; i++)
		{
			RlLeasePartition *partition = &book->partitions[i].partition;

			dlist_init(&partition->unsaved);
			partition->save_end.prev = partition->save_end.next = NULL;
		}
		SpinLockInit(&book->gone_lock);
		book->resave = false;
		book->saving = false;
		book->save_xid = InvalidTransactionId;
		book->saves = 0;
		book->saved_extension = InvalidOid;
		book->num_gone = 0;
		book->max_gone = pgrl_max_leases;
	}
}

/* The partition of a lease id, and its hash code */
static int
pgrl_lease_partition(int64 lease_id, uint32 *hashcode)
{
	*hashcode = get_hash_value(lease_table, &lease_id);
	return *hashcode % RL_LEASE_PARTITIONS;
}

static void
pgrl_lock_all_partitions(LWLockMode mode)
{
	for (int i = 0; i < RL_LEASE_PARTITIONS; i++)
		LWLockAcquire(&book->partition_locks[i], mode);
}

static void
pgrl_unlock_all_partitions(void)
{
	for (int i = RL_LEASE_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&book->partition_locks[i]);
}

/* Start a walk over the lease table (see the top of this file) */
void
pgrl_lease_walk_begin(RlLeaseWalk *walk)
{
	hash_seq_init(&walk->status, lease_table);
	walk->done = false;
}

/*
 * One batch of a walk: with every partition locked in the given mode, pass
 * leases to visit until about RL_LEASE_BATCH were visited, ending between
 * two buckets, or until the visitor has no room.  A visitor may remove the
 * lease it is given (only that one).  Returns false once the walk is over.
 */
static bool
pgrl_walk_batch(RlLeaseWalk *walk, LWLockMode mode, RlLeaseVisitor visit, void *arg)
{
	int			visited = 0;

	if (walk->done)
		return false;
	pgrl_lock_all_partitions(mode);
	for (;;)
	{
		bool		bucket_start = walk->status.curEntry == NULL;
		RlLeaseEntry *entry = hash_seq_search(&walk->status);

		if (entry == NULL)
		{
			/* hash_seq_search has ended the scan */
			walk->done = true;
			break;
		}
		if (!visit(entry, bucket_start, arg))
		{
			/* start this lease's bucket again next time (it was its last?) */
			if (walk->status.curEntry == NULL)
				walk->status.curBucket--;
			walk->status.curEntry = NULL;
			break;
		}
		/* stop only between buckets: nothing of a bucket is kept unlocked */
		if (++visited >= RL_LEASE_BATCH && walk->status.curEntry == NULL)
			break;
	}
	pgrl_unlock_all_partitions();
	return !walk->done;
}

/* Copy a lease into the batch, or give back its bucket when full */
static bool
pgrl_copy_visitor(RlLeaseEntry *entry, bool bucket_start, void *arg)
{
	RlLeaseBatch *batch = (RlLeaseBatch *) arg;

	if (bucket_start)
		batch->bucket_first = batch->count;
	if (batch->count == batch->room)
	{
		batch->count = batch->bucket_first;
		return false;
	}
	batch->leases[batch->count++] = entry->lease;
	return true;
}

/*
 * Copy the next batch of open leases into batch (allocated on first use);
 * false when the walk is over and nothing was copied.  No lock is held
 * between calls; see the top of this file for what a walk sees.
 */
bool
pgrl_lease_walk_next(RlLeaseWalk *walk, RlLeaseBatch *batch)
{
	if (batch->leases == NULL)
	{
		batch->room = 2 * RL_LEASE_BATCH;
		batch->leases = palloc(sizeof(RlLease) * batch->room);
	}
	for (;;)
	{
		bool		more;

		batch->count = 0;
		more = pgrl_walk_batch(walk, LW_SHARED, pgrl_copy_visitor, batch);
		if (batch->count > 0 || !more)
			return batch->count > 0;
		/* a bucket longer than the batch (never seen): make room for it */
		batch->room *= 2;
		batch->leases = repalloc(batch->leases, sizeof(RlLease) * batch->room);
	}
}

/* No open lease expires before this time (while no sweep runs) */
TimestampTz
pgrl_earliest_expiry(void)
{
	return pgrl_decode_time(pg_atomic_read_u64(&book->earliest_expiry));
}

/* Lower the earliest-expiry hint to cover a new lease */
static void
pgrl_note_lease_expiry(TimestampTz expires_at)
{
	uint64		encoded = pgrl_encode_time(expires_at);
	uint64		current = pg_atomic_read_u64(&book->earliest_expiry);

	while (encoded < current &&
		   !pg_atomic_compare_exchange_u64(&book->earliest_expiry,
										   &current, encoded))
		;
}

/*
 * Note that a saved lease left the table: the worker deletes its row.  When
 * there is no room to note it, the table is saved anew instead.
 */
static void
pgrl_note_gone(int64 lease_id)
{
	SpinLockAcquire(&book->gone_lock);
	if (book->num_gone < book->max_gone)
		book->gone[book->num_gone++] = lease_id;
	else
		book->resave = true;
	SpinLockRelease(&book->gone_lock);
}

/*
 * Remove an entry from the table, and from what the worker saves: from its
 * list when it was not copied yet, else noted as gone (unless note_gone is
 * false: the whole table is saved anew).  Caller holds the entry's
 * partition lock exclusively (or all of them).
 */
static void
pgrl_remove_entry(RlLeaseEntry *entry, uint32 hashcode, bool note_gone)
{
	int64		lease_id = entry->lease.lease_id;

	Assert(LWLockHeldByMeInMode(&book->partition_locks[hashcode % RL_LEASE_PARTITIONS],
								LW_EXCLUSIVE));
	if (entry->unsaved.next != NULL)
		dlist_delete(&entry->unsaved);
	else if (note_gone && !entry->lease.session_bound)
		pgrl_note_gone(lease_id);
	hash_search_with_hash_value(lease_table, &lease_id, hashcode, HASH_REMOVE, NULL);
}

/*
 * Put a lease in the table, listed for saving unless saved; false when its
 * id is there already or the table is full.
 */
static bool
pgrl_insert_lease(const RlLease *lease, bool saved)
{
	uint32		hashcode;
	int			partition = pgrl_lease_partition(lease->lease_id, &hashcode);
	LWLock	   *lock = &book->partition_locks[partition];
	RlLeaseEntry *entry;
	bool		found;
	bool		stored;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	entry = hash_search_with_hash_value(lease_table, &lease->lease_id,
										hashcode, HASH_ENTER_NULL, &found);
	stored = entry != NULL && !found;
	if (stored)
	{
		entry->lease = *lease;
		/* a session-bound lease ends with its session: never saved */
		if (saved || lease->session_bound)
			entry->unsaved.prev = entry->unsaved.next = NULL;
		else
			dlist_push_tail(&book->partitions[partition].partition.unsaved, &entry->unsaved);
	}
	LWLockRelease(lock);
	if (!stored)
		return false;
	pg_atomic_fetch_add_u64(&book->lease_version, 1);
	pgrl_note_lease_expiry(lease->expires_at);
	return true;
}

/*
 * Put a new lease in the table; false when its id is there already or the
 * table is full (it is preallocated for max_leases, and the caller has
 * counted the lease in open_leases).  Never errors: callers hold
 * config_lock.
 */
bool
pgrl_put_lease(const RlLease *lease)
{
	return pgrl_insert_lease(lease, false);
}

/*
 * Put a lease read back from the saved table in the table (see
 * pgrl_leases_restore_begin for saved); false as pgrl_put_lease.  Caller holds
 * config_lock exclusively.
 */
bool
pgrl_put_restored_lease(const RlLease *lease, bool saved)
{
	return pgrl_insert_lease(lease, saved);
}

/*
 * Remove a lease from the table and return a copy of it; false when there
 * is no such lease.  Only the role that acquired it (or a member of that
 * role) may take it.
 */
bool
pgrl_take_lease(int64 lease_id, RlLease *lease)
{
	return pgrl_take_lease_checked(lease_id, 0, lease);
}

/*
 * The same for a backend that exits: takes a session-bound lease of that
 * backend only, whatever the current role.  Never errors.
 */
bool
pgrl_take_session_lease(int64 lease_id, int session_pid, RlLease *lease)
{
	return pgrl_take_lease_checked(lease_id, session_pid, lease);
}

/* Is this lease open? */
bool
pgrl_lease_is_open(int64 lease_id)
{
	uint32		hashcode;
	LWLock	   *partition = &book->partition_locks[pgrl_lease_partition(lease_id, &hashcode)];
	bool		found;

	LWLockAcquire(partition, LW_SHARED);
	(void) hash_search_with_hash_value(lease_table, &lease_id, hashcode,
									   HASH_FIND, &found);
	LWLockRelease(partition);
	return found;
}

static bool
pgrl_take_lease_checked(int64 lease_id, int session_pid, RlLease *lease)
{
	uint32		hashcode;
	LWLock	   *partition = &book->partition_locks[pgrl_lease_partition(lease_id, &hashcode)];
	RlLeaseEntry *entry;
	bool		checked_role = false;

	LWLockAcquire(partition, LW_EXCLUSIVE);
	for (;;)
	{
		entry = hash_search_with_hash_value(lease_table, &lease_id, hashcode,
											HASH_FIND, NULL);
		if (entry == NULL ||
			(session_pid != 0 &&
			 (!entry->lease.session_bound || entry->lease.pid != session_pid)))
		{
			LWLockRelease(partition);
			return false;
		}
		if (session_pid != 0 || entry->lease.role == GetUserId() || checked_role)
			break;

		/* Checking role membership reads catalogs: not under our lock */
		{
			Oid			owner = entry->lease.role;

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
	*lease = entry->lease;
	pgrl_remove_entry(entry, hashcode, true);
	LWLockRelease(partition);
	pg_atomic_fetch_sub_u32(&book->open_leases, 1);
	pg_atomic_fetch_add_u64(&book->lease_version, 1);
	return true;
}

/*
 * Can nothing be due at now?  True only when the hint says so and no sweep
 * ran while we read it (a sweep resets the hint first).
 */
bool
pgrl_leases_nothing_due(TimestampTz now)
{
	uint64		generation = pg_atomic_read_u64(&book->sweep_generation);
	bool		nothing;

	pg_read_barrier();
	nothing = now < pgrl_earliest_expiry();
	pg_read_barrier();
	return nothing && generation % 2 == 0 &&
		pg_atomic_read_u64(&book->sweep_generation) == generation;
}

/* Does a removal take this lease? */
static bool
pgrl_removal_matches(const RlLeaseRemoval *removal, const RlLease *lease)
{
	switch (removal->what)
	{
		case RL_REMOVE_DUE:
			return lease->expires_at <= removal->now;
		case RL_REMOVE_INSTANCE:
			/* only leases taken while it was registered (they have an owner) */
			return lease->instance_slot >= 0 &&
				strcmp(lease->instance, removal->instance) == 0;
		case RL_REMOVE_MODELS:
			return removal->models[lease->model_slot];
		case RL_REMOVE_ALL:
			return true;
	}
	return false;
}

/*
 * Take the leases a removal wants out of the table into its batch; keep
 * the earliest expiry of the others.  All partitions are locked
 * exclusively (pgrl_walk_batch): no allocation, no latch, no other lock.
 */
static bool
pgrl_remove_visitor(RlLeaseEntry *entry, bool bucket_start, void *arg)
{
	RlLeaseRemoval *removal = (RlLeaseRemoval *) arg;

	if (!pgrl_removal_matches(removal, &entry->lease))
	{
		removal->next_expiry = Min(removal->next_expiry, entry->lease.expires_at);
		return true;
	}
	if (removal->count == lengthof(removal->leases))
		return false;
	removal->leases[removal->count++] = entry->lease;
	pgrl_remove_entry(entry, get_hash_value(lease_table, &entry->lease.lease_id),
					  removal->what != RL_REMOVE_ALL);
	return true;
}

/*
 * Begin a removal of the leases of an instance (RL_REMOVE_INSTANCE, by
 * name), of the models marked in models[slot] (RL_REMOVE_MODELS), or of
 * all (RL_REMOVE_ALL: the saved table is then written anew).  Sweeps of
 * due leases begin with pgrl_leases_sweep_begin instead.  The caller
 * allocates the removal (it is large) before taking any lock.
 */
void
pgrl_leases_removal_begin(RlLeaseRemoval *removal, RlLeaseRemove what,
						  const char *instance, const bool *models)
{
	removal->what = what;
	removal->now = 0;
	removal->instance = instance;
	removal->models = models;
	removal->next_expiry = DT_NOEND;
	removal->sweeping = false;
	removal->count = 0;
	pgrl_lease_walk_begin(&removal->walk);

	/*
	 * All go: the saved table is written anew, so no gone id is needed. Done
	 * before the walk (whose leases then note none), under config_lock held
	 * exclusively: nothing is inserted meanwhile.
	 */
	if (what == RL_REMOVE_ALL)
	{
		SpinLockAcquire(&book->gone_lock);
		book->num_gone = 0;
		book->resave = true;
		SpinLockRelease(&book->gone_lock);
	}
}

/*
 * The next batch of a removal: the leases taken out of the table, in
 * removal->leases (removal->count of them); false once the walk is over
 * and the batch is empty.  The caller settles each lease it is given (see
 * grant.c), with no lease lock held.
 */
bool
pgrl_leases_remove_next(RlLeaseRemoval *removal)
{
	bool		more;

	do
	{
		removal->count = 0;
		more = pgrl_walk_batch(&removal->walk, LW_EXCLUSIVE, pgrl_remove_visitor, removal);
	} while (removal->count == 0 && more);
	if (removal->count == 0)
		return false;
	pg_atomic_fetch_sub_u32(&book->open_leases, removal->count);
	pg_atomic_fetch_add_u64(&book->lease_version, 1);
	return true;
}

/*
 * Begin a sweep of the leases due at now, unless nothing can be due.  When
 * another backend is sweeping, wait for it: it may have read an older
 * time, and the caller must not go on while a lease due at now still
 * counts.  Returns false when there is nothing to sweep; otherwise the
 * caller takes the batches (pgrl_leases_remove_next), settles them, and
 * calls pgrl_leases_sweep_end, holding sweep_lock all along.
 */
bool
pgrl_leases_sweep_begin(RlLeaseRemoval *removal, TimestampTz now)
{
	if (pgrl_leases_nothing_due(now))
		return false;
	LWLockAcquire(&book->sweep_lock, LW_EXCLUSIVE);

	/*
	 * no sweep runs now: the hint holds, and says whether the last covered
	 * now
	 */
	if (now < pgrl_earliest_expiry())
	{
		LWLockRelease(&book->sweep_lock);
		return false;
	}
	pgrl_leases_removal_begin(removal, RL_REMOVE_DUE, NULL, NULL);
	removal->now = now;
	removal->sweeping = true;
	pg_atomic_fetch_add_u64(&book->sweep_generation, 1);
	pg_atomic_write_u64(&book->earliest_expiry, PG_UINT64_MAX);
	return true;
}

/* The sweep is over: its leases are settled */
void
pgrl_leases_sweep_end(RlLeaseRemoval *removal)
{
	Assert(removal->sweeping);
	Assert(LWLockHeldByMeInMode(&book->sweep_lock, LW_EXCLUSIVE));
	pgrl_note_lease_expiry(removal->next_expiry);
	pg_atomic_fetch_add_u64(&book->sweep_generation, 1);
	LWLockRelease(&book->sweep_lock);
}

/* A new lease id: never handed out before, also across restarts */
int64
pgrl_leases_next_id(void)
{
	return (int64) pg_atomic_fetch_add_u64(&book->next_lease_id, 1);
}

/* Restored leases are there: no new id may be one of theirs */
void
pgrl_leases_restored(uint32 count, int64 max_lease_id)
{
	if ((uint64) max_lease_id >= pg_atomic_read_u64(&book->next_lease_id))
		pg_atomic_write_u64(&book->next_lease_id, (uint64) max_lease_id + 1);
	pg_atomic_fetch_add_u32(&book->open_leases, count);
}

/*
 * Claim room for one more lease, before anything is reserved for it; false
 * when ratelimit.max_leases are open.  pgrl_leases_return_room gives it
 * back when no lease is stored.  Never errors, takes no lock.
 */
bool
pgrl_leases_claim_room(void)
{
	if (pg_atomic_fetch_add_u32(&book->open_leases, 1) < (uint32) pgrl_max_leases)
		return true;
	pg_atomic_fetch_sub_u32(&book->open_leases, 1);
	return false;
}

void
pgrl_leases_return_room(void)
{
	pg_atomic_fetch_sub_u32(&book->open_leases, 1);
}

/* Bumped by every change of the set of leases, for the worker's saves */
uint64
pgrl_leases_version(void)
{
	return pg_atomic_read_u64(&book->lease_version);
}

/* List a lease that was copied for saving again (a full save) */
static bool
pgrl_unsave_visitor(RlLeaseEntry *entry, bool bucket_start, void *arg)
{
	uint32		hashcode;

	if (entry->unsaved.next == NULL && !entry->lease.session_bound)
		dlist_push_tail(&book->partitions[pgrl_lease_partition(entry->lease.lease_id,
															   &hashcode)].partition.unsaved,
						&entry->unsaved);
	return true;
}

/*
 * A round of the worker saves leases, in its transaction, into the table of
 * the given extension.  Returns true when the saved table must be written
 * anew (asked for, another extension's table, or a round that never
 * committed: what it copied is not in the table); the caller then empties
 * the table and begins a save that lists every open lease again.
 * pgrl_leases_save_committed() once the transaction has committed.  Worker
 * only.
 */
bool
pgrl_leases_save_round(Oid extension)
{
	TransactionId xid = GetTopTransactionId();
	bool		full;

	SpinLockAcquire(&book->gone_lock);
	full = book->resave || book->saving || book->saved_extension != extension;
	book->saving = true;
	book->save_xid = xid;
	if (full)
	{
		book->num_gone = 0;
		book->resave = false;
		book->saved_extension = extension;
	}
	SpinLockRelease(&book->gone_lock);
	return full;
}

/*
 * Begin a save: what is listed now is what it copies
 * (pgrl_leases_next_unsaved, over one round or more).  relist: every open
 * lease is listed again (the saved table was emptied).  Worker only.
 */
void
pgrl_leases_begin_save(RlLeaseSave *save, bool relist)
{
	save->partition = 0;
	save->gone_left = -1;
	if (relist)
	{
		RlLeaseWalk walk;

		pgrl_lease_walk_begin(&walk);
		while (pgrl_walk_batch(&walk, LW_EXCLUSIVE, pgrl_unsave_visitor, NULL))
			;
	}
	for (int i = 0; i < RL_LEASE_PARTITIONS; i++)
	{
		RlLeasePartition *partition = &book->partitions[i].partition;

		LWLockAcquire(&book->partition_locks[i], LW_EXCLUSIVE);
		/* a save a worker did not finish left its marker behind */
		if (partition->save_end.next != NULL)
			dlist_delete(&partition->save_end);
		dlist_push_tail(&partition->unsaved, &partition->save_end);
		LWLockRelease(&book->partition_locks[i]);
	}
}

/* The transaction of the save in progress has committed.  Worker only. */
void
pgrl_leases_save_committed(void)
{
	SpinLockAcquire(&book->gone_lock);
	book->saving = false;
	book->saves++;
	SpinLockRelease(&book->gone_lock);
}

/*
 * A full load reads the saved leases with snapshot: note whether that
 * snapshot shows the table exactly as the lease table's bookkeeping has it
 * (no save in progress, the last one committed before the snapshot).
 */
void
pgrl_leases_restore_seen(RlLeaseRestore *seen, Snapshot snapshot, Oid extension)
{
	TransactionId xid;
	bool		saving;

	SpinLockAcquire(&book->gone_lock);
	saving = book->saving;
	xid = book->save_xid;
	seen->saves = book->saves;
	SpinLockRelease(&book->gone_lock);
	seen->extension = extension;
	seen->exact = !saving &&
		(!TransactionIdIsValid(xid) ||
		 (!XidInMVCCSnapshot(xid, snapshot) && TransactionIdDidCommit(xid)));
}

/*
 * The lease table was just emptied for a full load (the saved table is to
 * be written anew): when no save committed or began since the saved leases
 * were read and that read was exact, the saved table holds exactly the
 * leases about to be restored (pgrl_put_restored_lease with saved true, and
 * pgrl_leases_note_not_restored for the others), and need not be written
 * anew.  Returns whether so.  Caller holds config_lock exclusively.
 */
bool
pgrl_leases_restore_begin(const RlLeaseRestore *seen)
{
	bool		exact;

	SpinLockAcquire(&book->gone_lock);
	exact = seen->exact && !book->saving && book->saves == seen->saves;
	if (exact)
	{
		book->resave = false;
		book->saved_extension = seen->extension;
	}
	SpinLockRelease(&book->gone_lock);
	return exact;
}

/* A saved lease was not restored: its row goes at the next save */
void
pgrl_leases_note_not_restored(int64 lease_id)
{
	pgrl_note_gone(lease_id);
}

/*
 * Copy up to room leases that the save in progress must write, one
 * partition at a time; from now on they count as saved.  Returns how many;
 * 0 when all are copied.  Worker only.
 */
int
pgrl_leases_next_unsaved(RlLeaseSave *save, RlLease *leases, int room)
{
	int			count = 0;

	while (count < room && save->partition < RL_LEASE_PARTITIONS)
	{
		RlLeasePartition *partition = &book->partitions[save->partition].partition;
		bool		partition_done = false;

		LWLockAcquire(&book->partition_locks[save->partition], LW_EXCLUSIVE);
		while (count < room && !partition_done)
		{
			dlist_node *node;

			if (dlist_is_empty(&partition->unsaved))
				break;
			node = dlist_pop_head_node(&partition->unsaved);
			node->prev = node->next = NULL;
			if (node == &partition->save_end)
				partition_done = true;
			else
				leases[count++] = dlist_container(RlLeaseEntry, unsaved, node)->lease;
		}
		if (dlist_is_empty(&partition->unsaved))
			partition_done = true;
		LWLockRelease(&book->partition_locks[save->partition]);
		if (partition_done)
			save->partition++;
	}
	return count;
}

/*
 * Take up to room ids of saved leases that left the table, of those gone
 * when this round started taking them (gone_left -1).  Returns how many; 0
 * when done.  Worker only.
 */
int
pgrl_leases_next_gone(RlLeaseSave *save, int64 *ids, int room)
{
	int			count;

	SpinLockAcquire(&book->gone_lock);
	if (save->gone_left < 0)
		save->gone_left = book->num_gone;
	count = Min(Min(room, save->gone_left), book->num_gone);
	for (int i = 0; i < count; i++)
		ids[i] = book->gone[--book->num_gone];
	save->gone_left -= count;
	SpinLockRelease(&book->gone_lock);
	return count;
}
