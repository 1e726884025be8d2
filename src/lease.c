/*-------------------------------------------------------------------------
 *
 * lease.c
 *		The lease table: inserting, taking, expiring and settling leases, and
 *		what the worker needs to save them.
 *
 * A lease lives in the partitioned shared hash pgrl_lease_table, keyed by its
 * id.  Whoever removes a lease from the table settles it, so a lease is
 * settled exactly once: release settles it with actual usage, the expiry
 * sweep frees its concurrency slot and keeps its window reservation, and
 * dropping its model discards it.
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
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"

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
	pg_atomic_uint64 sweep_generation;	/* odd while a sweep runs; read on
										 * every call, apart from the lists */
	char		pad[PG_CACHE_LINE_SIZE - sizeof(pg_atomic_uint64)];
	RlLeasePartitionPadded partitions[RL_LEASE_PARTITIONS];

	slock_t		gone_lock;		/* protects the rest */
	bool		resave;			/* the saved table must be written anew */
	bool		saving;			/* a round saving leases has not committed */
	TransactionId save_xid;		/* the transaction of the last save */
	uint64		saves;			/* saves committed */
	Oid			saved_extension;	/* the extension whose table is saved */
	int			num_gone;
	int			max_gone;
	int64		gone[FLEXIBLE_ARRAY_MEMBER];	/* ids of saved leases that left
												 * the table since */
} RlLeaseBook;

static RlLeaseBook *book = NULL;

static bool pgrl_take_lease_checked(int64 lease_id, int session_pid, RlLease *lease);

/* A removing walk's batch: the leases it took out of the table */
typedef struct RlTaken
{
	TimestampTz now;			/* the sweep's time, or ... */
	const char *instance;		/* ... the instance whose leases go */
	TimestampTz next_expiry;	/* of the leases the sweep left */
	int			count;
	RlLease		leases[RL_LEASE_BATCH];
} RlTaken;

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
pgrl_leases_shmem_init(void)
{
	HASHCTL		info;
	bool		found;

	info.keysize = sizeof(int64);
	info.entrysize = sizeof(RlLeaseEntry);
	info.num_partitions = RL_LEASE_PARTITIONS;
	pgrl_lease_table = ShmemInitHash("pg_ratelimit leases",
								   pgrl_max_leases, pgrl_max_leases, &info,
								   HASH_ELEM | HASH_BLOBS | HASH_PARTITION);
	book = ShmemInitStruct("pg_ratelimit lease book",
						   add_size(offsetof(RlLeaseBook, gone),
									mul_size(pgrl_max_leases, sizeof(int64))),
						   &found);
	if (!found)
	{
		pg_atomic_init_u64(&book->sweep_generation, 0);
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
	*hashcode = get_hash_value(pgrl_lease_table, &lease_id);
	return *hashcode % RL_LEASE_PARTITIONS;
}

static void
pgrl_lock_all_partitions(LWLockMode mode)
{
	for (int i = 0; i < RL_LEASE_PARTITIONS; i++)
		LWLockAcquire(&pgrl_state->lease_locks[i], mode);
}

static void
pgrl_unlock_all_partitions(void)
{
	for (int i = RL_LEASE_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&pgrl_state->lease_locks[i]);
}

/* Start a walk over the lease table (see the top of this file) */
void
pgrl_lease_walk_begin(RlLeaseWalk *walk)
{
	hash_seq_init(&walk->status, pgrl_lease_table);
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
	return pgrl_decode_time(pg_atomic_read_u64(&pgrl_state->earliest_expiry));
}

/* Lower the earliest-expiry hint to cover a new lease */
void
pgrl_note_lease_expiry(TimestampTz expires_at)
{
	uint64		encoded = pgrl_encode_time(expires_at);
	uint64		current = pg_atomic_read_u64(&pgrl_state->earliest_expiry);

	while (encoded < current &&
		   !pg_atomic_compare_exchange_u64(&pgrl_state->earliest_expiry,
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

	if (entry->unsaved.next != NULL)
		dlist_delete(&entry->unsaved);
	else if (note_gone && !entry->lease.session_bound)
		pgrl_note_gone(lease_id);
	hash_search_with_hash_value(pgrl_lease_table, &lease_id, hashcode, HASH_REMOVE, NULL);
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
	LWLock	   *lock = &pgrl_state->lease_locks[partition];
	RlLeaseEntry *entry;
	bool		found;
	bool		stored;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	entry = hash_search_with_hash_value(pgrl_lease_table, &lease->lease_id,
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
	pg_atomic_fetch_add_u64(&pgrl_state->lease_version, 1);
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
	LWLock	   *partition = &pgrl_state->lease_locks[pgrl_lease_partition(lease_id, &hashcode)];
	bool		found;

	LWLockAcquire(partition, LW_SHARED);
	(void) hash_search_with_hash_value(pgrl_lease_table, &lease_id, hashcode,
									   HASH_FIND, &found);
	LWLockRelease(partition);
	return found;
}

static bool
pgrl_take_lease_checked(int64 lease_id, int session_pid, RlLease *lease)
{
	uint32		hashcode;
	LWLock	   *partition = &pgrl_state->lease_locks[pgrl_lease_partition(lease_id, &hashcode)];
	RlLeaseEntry *entry;
	bool		checked_role = false;

	LWLockAcquire(partition, LW_EXCLUSIVE);
	for (;;)
	{
		entry = hash_search_with_hash_value(pgrl_lease_table, &lease_id, hashcode,
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
	pgrl_instance_lease_gone(lease);
	pgrl_role_lease_gone(lease);
	pg_atomic_fetch_sub_u32(&pgrl_state->open_leases, 1);
	pg_atomic_fetch_add_u64(&pgrl_state->lease_version, 1);
	return true;
}

/*
 * An expired lease frees its concurrency slot and keeps its window
 * reservation.  Returns the model's generation matched (false when the
 * model was dropped meanwhile).
 */
static bool
pgrl_expire_lease(const RlLease *lease)
{
	RlModel    *model = &pgrl_models[lease->model_slot];
	bool		known;
	bool		waiters = false;
	bool		notify = false;

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	known = model->in_use && model->generation == lease->model_generation;
	if (known)
	{
		RlShare    *share = pgrl_lease_share(lease);

		pgrl_mark_free_slot(model, lease, pgrl_now());
		if (share && share->used[RL_DIM_CONCURRENCY] > 0)
		{
			share->used[RL_DIM_CONCURRENCY]--;
			share->version++;
		}
		model->expired++;
		model->version++;
		waiters = pg_atomic_read_u32(&model->num_waiters) > 0;
		notify = pgrl_note_capacity_freed(model, RL_NOTIFY_RELEASE, pgrl_now());
	}
	LWLockRelease(&model->lock);
	if (waiters)
		pgrl_wake_waiters(lease->model_slot);
	if (notify)
		pgrl_wake_worker();
	return known;
}

/*
 * Take a lease that is due (or of the instance) out of the table into the
 * batch; keep the earliest expiry of the others.
 */
static bool
pgrl_take_visitor(RlLeaseEntry *entry, bool bucket_start, void *arg)
{
	RlTaken    *taken = (RlTaken *) arg;

	/* of an instance: only leases taken while it was registered (it has an owner) */
	if (taken->instance != NULL ?
		entry->lease.instance_slot < 0 || strcmp(entry->lease.instance, taken->instance) != 0 :
		entry->lease.expires_at > taken->now)
	{
		taken->next_expiry = Min(taken->next_expiry, entry->lease.expires_at);
		return true;
	}
	if (taken->count == lengthof(taken->leases))
		return false;
	taken->leases[taken->count++] = entry->lease;
	pgrl_instance_lease_gone(&entry->lease);
	pgrl_role_lease_gone(&entry->lease);
	pgrl_remove_entry(entry, get_hash_value(pgrl_lease_table, &entry->lease.lease_id), true);
	return true;
}

/*
 * Walk the table and expire the leases that are due at taken->now, or those
 * of taken->instance, a batch at a time.  Returns how many.
 */
static int
pgrl_expire_taken(RlTaken *taken)
{
	RlLeaseWalk walk;
	bool		more;
	int			total = 0;

	pgrl_lease_walk_begin(&walk);
	do
	{
		taken->count = 0;
		more = pgrl_walk_batch(&walk, LW_EXCLUSIVE, pgrl_take_visitor, taken);
		if (taken->count == 0)
			continue;
		pg_atomic_fetch_sub_u32(&pgrl_state->open_leases, taken->count);
		pg_atomic_fetch_add_u64(&pgrl_state->lease_version, 1);
		for (int i = 0; i < taken->count; i++)
			pgrl_expire_lease(&taken->leases[i]);
		total += taken->count;
	} while (more);
	return total;
}

/*
 * Can nothing be due at now?  True only when the hint says so and no sweep
 * ran while we read it (a sweep resets the hint first).
 */
static bool
pgrl_nothing_due(TimestampTz now)
{
	uint64		generation = pg_atomic_read_u64(&book->sweep_generation);
	bool		nothing;

	pg_read_barrier();
	nothing = now < pgrl_earliest_expiry();
	pg_read_barrier();
	return nothing && generation % 2 == 0 &&
		pg_atomic_read_u64(&book->sweep_generation) == generation;
}

/*
 * Expire every lease whose time is up at now.  When another backend is
 * sweeping, wait for it: it may have read an older time, and the caller
 * must not go on while a lease due at now still counts.
 */
void
pgrl_expire_due_leases(TimestampTz now)
{
	RlTaken    *taken;
	int			expired;

	if (pgrl_nothing_due(now))
		return;
	taken = palloc(sizeof(RlTaken));
	LWLockAcquire(&pgrl_state->sweep_lock, LW_EXCLUSIVE);
	/* no sweep runs now: the hint holds, and says whether the last covered now */
	if (now < pgrl_earliest_expiry())
	{
		LWLockRelease(&pgrl_state->sweep_lock);
		pfree(taken);
		return;
	}

	pg_atomic_fetch_add_u64(&book->sweep_generation, 1);
	pg_atomic_write_u64(&pgrl_state->earliest_expiry, PG_UINT64_MAX);
	taken->now = now;
	taken->instance = NULL;
	taken->next_expiry = DT_NOEND;
	expired = pgrl_expire_taken(taken);
	pgrl_note_lease_expiry(taken->next_expiry);
	pg_atomic_fetch_add_u64(&book->sweep_generation, 1);
	LWLockRelease(&pgrl_state->sweep_lock);

	if (expired > 0)
		elog(DEBUG1, "pg_ratelimit expired %d leases", expired);
	pfree(taken);
}

/*
 * Discard the open leases of dropped models (dropped[slot]), or all of
 * them (dropped NULL: the saved table is then written anew).  Called while
 * applying a configuration change, with config_lock held exclusively, which
 * holds every acquire back anyway: one pass with every partition locked.
 * Must not fail.
 */
void
pgrl_remove_model_leases(const bool *dropped)
{
	HASH_SEQ_STATUS scan;
	RlLeaseEntry *entry;
	uint32		removed = 0;

	pgrl_lock_all_partitions(LW_EXCLUSIVE);
	hash_seq_init(&scan, pgrl_lease_table);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		if (dropped == NULL || dropped[entry->lease.model_slot])
		{
			pgrl_instance_lease_gone(&entry->lease);
			pgrl_role_lease_gone(&entry->lease);
			pgrl_remove_entry(entry, get_hash_value(pgrl_lease_table, &entry->lease.lease_id),
							dropped != NULL);
			removed++;
		}
	}
	if (dropped == NULL)
	{
		SpinLockAcquire(&book->gone_lock);
		book->num_gone = 0;
		book->resave = true;
		SpinLockRelease(&book->gone_lock);
	}
	pgrl_unlock_all_partitions();
	pg_atomic_fetch_sub_u32(&pgrl_state->open_leases, removed);
	pg_atomic_fetch_add_u64(&pgrl_state->lease_version, 1);
}

/*
 * Expire the open leases of an instance that left or went stale (by
 * name): each frees its concurrency slot and keeps its window reservation.
 * Returns how many.
 */
int
pgrl_expire_instance_leases(const char *instance)
{
	RlTaken    *taken = palloc(sizeof(RlTaken));
	int			expired;

	taken->now = 0;
	taken->instance = instance;
	taken->next_expiry = DT_NOEND;
	expired = pgrl_expire_taken(taken);
	pfree(taken);
	return expired;
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

		LWLockAcquire(&pgrl_state->lease_locks[i], LW_EXCLUSIVE);
		/* a save a worker did not finish left its marker behind */
		if (partition->save_end.next != NULL)
			dlist_delete(&partition->save_end);
		dlist_push_tail(&partition->unsaved, &partition->save_end);
		LWLockRelease(&pgrl_state->lease_locks[i]);
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

		LWLockAcquire(&pgrl_state->lease_locks[save->partition], LW_EXCLUSIVE);
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
		LWLockRelease(&pgrl_state->lease_locks[save->partition]);
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

/* Add a settled cost to the model's usage of the day */
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

/* Add cost to a day's cost; false when the sum has too many digits to keep */
static bool
pgrl_add_day_cost(RlDayUsage *day, Numeric cost)
{
	Datum		total = DirectFunctionCall2(numeric_add,
											NumericGetDatum(pgrl_numeric_load(&day->cost)),
											NumericGetDatum(cost));

	total = DirectFunctionCall1(numeric_trim_scale, total);
	return pgrl_numeric_store(&day->cost, DatumGetNumeric(total));
}

/* A lease's cost, added to today's cost of its model and job type */
static void
pgrl_add_cost_today(const RlLease *lease, Numeric cost, TimestampTz now)
{
	RlModel    *model = &pgrl_models[lease->model_slot];
	bool		kept = true;
	char		name[RL_NAME_MAX_LEN + 1];

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	if (model->in_use && model->generation == lease->model_generation)
	{
		RlShare    *share = pgrl_lease_share(lease);

		pgrl_roll_windows(model, now);
		kept = pgrl_add_day_cost(&model->usage, cost);
		strlcpy(name, model->name, sizeof(name));
		if (share)
		{
			(void) pgrl_add_day_cost(pgrl_share_usage(share, model), cost);
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
pgrl_settle_lease(const RlLease *lease, const RlUsage *usage, TimestampTz now,
				RlSettlement *result)
{
	RlModel    *model = &pgrl_models[lease->model_slot];
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
		pgrl_expire_lease(lease);
		return;
	}

	pgrl_roll_windows(model, now);
	actual_tokens = !usage->has_tokens ? lease->tokens :
		model->count_cached ? usage->tokens_with_cached : usage->tokens_without_cached;
	actual_requests = usage->has_requests ? usage->requests : lease->requests;
	share = pgrl_lease_share(lease);

	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
	{
		int64		delta = pgrl_dimension_amount(d, actual_tokens, actual_requests) -
			pgrl_dimension_amount(d, lease->tokens, lease->requests);
		bool		same_window = pgrl_dimension_is_daily(d) ?
			lease->day_start == model->day_start :
			lease->minute_start == model->minute_start;

		any_window_current |= same_window;
		/* the job type's share moves with the model */
		if (same_window)
		{
			model->used[d] = Max(0, pgrl_add_saturating(model->used[d], delta));
			if (share)
				share->used[d] = Max(0, pgrl_add_saturating(share->used[d], delta));
		}
		else if (delta > 0)
		{
			model->used[d] = pgrl_add_saturating(model->used[d], delta);
			if (share)
				share->used[d] = pgrl_add_saturating(share->used[d], delta);
		}
	}
	pgrl_mark_free_slot(model, lease, now);
	if (share && share->used[RL_DIM_CONCURRENCY] > 0)
		share->used[RL_DIM_CONCURRENCY]--;
	if (share)
		share->version++;
	adjust_ratios = share && pgrl_note_share_release(model);

	if (actual_tokens > lease->tokens)
	{
		model->overage_events++;
		model->overage_tokens = pgrl_add_saturating(model->overage_tokens,
												  actual_tokens - lease->tokens);
	}
	pgrl_add_day_usage(&model->usage, usage, actual_tokens - lease->tokens);
	if (share)
		pgrl_add_day_usage(pgrl_share_usage(share, model), usage, actual_tokens - lease->tokens);
	model->version++;
	price_input = model->price_input;
	price_output = model->price_output;
	price_cached = model->price_cached;
	priced = model->priced;
	waiters = pg_atomic_read_u32(&model->num_waiters) > 0;
	notify = pgrl_note_capacity_freed(model, RL_NOTIFY_RELEASE, now);
	/* an overage past the mark: have a mark cover it soon */
	notify |= pgrl_mark_note_usage(model);
	LWLockRelease(&model->lock);
	if (waiters)
		pgrl_wake_waiters(lease->model_slot);
	if (notify || adjust_ratios)
		pgrl_wake_worker();

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
	result->cost = pgrl_cost(usage, &price_input, &price_output, &price_cached);
	if (DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(result->cost),
										  NumericGetDatum(int64_to_numeric(0)))) != 0)
		pgrl_add_cost_today(lease, result->cost, now);
}
