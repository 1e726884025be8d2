/*-------------------------------------------------------------------------
 *
 * lease.h
 *		The lease table: open leases, partitioned by id, and what the
 *		worker needs to save them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_LEASE_H
#define RL_LEASE_H

#include "utils/hsearch.h"
#include "utils/snapshot.h"

#include "pg_ratelimit.h"

/* Lease table partitions, each with its own lock (a power of two) */
#define RL_LEASE_PARTITIONS		16

/* One open lease, keyed by lease_id in the partitioned lease table */
typedef struct RlLease
{
	int64		lease_id;		/* hash key: must be first */
	int			model_slot;
	uint32		model_generation;
	int			job_type_slot;	/* -1 when acquired without a job type */
	uint32		job_type_generation;
	int64		tokens;			/* reserved, input and output */
	int64		output_tokens;	/* of them, output (counted by otpm) */
	int32		requests;
	TimestampTz minute_start;	/* windows the reservation was made in */
	TimestampTz day_start;
	TimestampTz acquired_at;
	TimestampTz expires_at;
	int			pid;
	Oid			role;
	int			role_slot;		/* counted against its role (holders.c), or -1 */
	bool		session_bound;	/* released when backend pid exits */
	char		instance[RL_NAME_MAX_LEN + 1];	/* empty when none */
	int			instance_slot;	/* registered instance, or -1 */
	uint32		instance_generation;
	bool		memory_counted; /* counted against the instance's memory */
	bool		restored;		/* restored after a stop that was not clean:
								 * its slot stays held until the model's
								 * held_until (ledger_marks.c) */
} RlLease;

/* Leases looked at together: about this many per batch of a walk or a save */
#define RL_LEASE_BATCH			1024

/* A walk over the lease table in batches (see lease.c) */
typedef struct RlLeaseWalk
{
	HASH_SEQ_STATUS status;
	bool		done;
} RlLeaseWalk;

/* Copies of open leases, a batch of a walk at a time */
typedef struct RlLeaseBatch
{
	RlLease    *leases;			/* NULL before the first batch */
	int			count;
	int			room;
	int			bucket_first;	/* where the copies of the current bucket
								 * begin */
} RlLeaseBatch;

/* Where the worker is in saving the leases (persist.c) */
typedef struct RlLeaseSave
{
	int			partition;		/* the next partition to copy from */
	int			gone_left;		/* gone ids this round still takes; -1 before */
} RlLeaseSave;

/* Which leases a removal takes out of the table */
typedef enum RlLeaseRemove
{
	RL_REMOVE_DUE,				/* expired at now (a sweep) */
	RL_REMOVE_INSTANCE,			/* of an instance, by name */
	RL_REMOVE_MODELS,			/* of the models marked in models[] */
	RL_REMOVE_ALL
} RlLeaseRemove;

/* A removal in progress, and its current batch (see lease.c) */
typedef struct RlLeaseRemoval
{
	RlLeaseRemove what;
	TimestampTz now;
	const char *instance;
	const bool *models;			/* [model slot] */
	TimestampTz next_expiry;	/* of the leases a sweep left */
	bool		sweeping;		/* holds sweep_lock */
	RlLeaseWalk walk;
	int			count;
	RlLease		leases[RL_LEASE_BATCH];
} RlLeaseRemoval;

/* What a full load saw of the saved leases (pgrl_leases_restore_seen) */
typedef struct RlLeaseRestore
{
	bool		exact;			/* the read showed the table as last saved */
	uint64		saves;			/* saves committed by then */
	Oid			extension;
} RlLeaseRestore;

extern Size pgrl_leases_shmem_size(void);
extern void pgrl_leases_shmem_init(int tranche_id);

extern int64 pgrl_leases_next_id(void);
extern bool pgrl_leases_claim_room(void);
extern void pgrl_leases_return_room(void);
extern bool pgrl_put_lease(const RlLease *lease);
extern bool pgrl_put_restored_lease(const RlLease *lease, bool saved);
extern void pgrl_leases_restored(uint32 count, int64 max_lease_id);
extern bool pgrl_take_lease(int64 lease_id, RlLease *lease);
extern bool pgrl_take_session_lease(int64 lease_id, int session_pid, RlLease *lease);
extern bool pgrl_lease_is_open(int64 lease_id);

extern void pgrl_lease_walk_begin(RlLeaseWalk *walk);
extern bool pgrl_lease_walk_next(RlLeaseWalk *walk, RlLeaseBatch *batch);
extern void pgrl_leases_removal_begin(RlLeaseRemoval *removal, RlLeaseRemove what,
									  const char *instance, const bool *models);
extern bool pgrl_leases_remove_next(RlLeaseRemoval *removal);
extern bool pgrl_leases_nothing_due(TimestampTz now);
extern bool pgrl_leases_sweep_begin(RlLeaseRemoval *removal, TimestampTz now);
extern void pgrl_leases_sweep_end(RlLeaseRemoval *removal);
extern TimestampTz pgrl_earliest_expiry(void);
extern uint64 pgrl_leases_version(void);

/* saving and restoring (persist.c) */
extern bool pgrl_leases_save_round(Oid extension);
extern void pgrl_leases_begin_save(RlLeaseSave *save, bool relist);
extern void pgrl_leases_save_committed(void);
extern int	pgrl_leases_next_unsaved(RlLeaseSave *save, RlLease *leases, int room);
extern int	pgrl_leases_next_gone(RlLeaseSave *save, int64 *ids, int room);
extern void pgrl_leases_restore_seen(RlLeaseRestore *seen, Snapshot snapshot, Oid extension);
extern bool pgrl_leases_restore_begin(const RlLeaseRestore *seen);
extern void pgrl_leases_note_not_restored(int64 lease_id);

#endif							/* RL_LEASE_H */
