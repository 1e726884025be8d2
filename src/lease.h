/*-------------------------------------------------------------------------
 *
 * lease.h
 *		Leases: the lease table and settling a lease.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_LEASE_H
#define RL_LEASE_H

#include "pg_ratelimit.h"
#include "utils/snapshot.h"

/* Actual usage reported by a release */
typedef struct RlUsage
{
	bool		has_tokens;		/* any of input, output, cached given */
	int64		input;
	int64		output;
	int64		cached;
	int64		tokens_with_cached;
	int64		tokens_without_cached;
	bool		has_requests;
	int32		requests;
} RlUsage;

/* What a release did */
typedef struct RlSettlement
{
	bool		released;
	bool		model_known;
	char		model[RL_NAME_MAX_LEN + 1];
	int64		tokens_estimated;
	bool		has_actual;		/* the rest only with actual usage */
	int64		tokens_actual;
	int64		tokens_refunded;
	int64		overage;
	Numeric		cost;
} RlSettlement;

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
	int			bucket_first;	/* where the copies of the current bucket begin */
} RlLeaseBatch;

/* Where the worker is in saving the leases (persist.c) */
typedef struct RlLeaseSave
{
	int			partition;		/* the next partition to copy from */
	int			gone_left;		/* gone ids this round still takes; -1 before */
} RlLeaseSave;

/* What a full load saw of the saved leases (pgrl_leases_restore_seen) */
typedef struct RlLeaseRestore
{
	bool		exact;			/* the read showed the table as last saved */
	uint64		saves;			/* saves committed by then */
	Oid			extension;
} RlLeaseRestore;

extern Size pgrl_leases_shmem_size(void);
extern void pgrl_leases_shmem_init(void);
extern bool pgrl_put_lease(const RlLease *lease);
extern bool pgrl_take_lease(int64 lease_id, RlLease *lease);
extern bool pgrl_take_session_lease(int64 lease_id, int session_pid, RlLease *lease);
extern bool pgrl_lease_is_open(int64 lease_id);
extern void pgrl_settle_lease(const RlLease *lease, const RlUsage *usage,
							TimestampTz now, RlSettlement *result);
extern void pgrl_lease_walk_begin(RlLeaseWalk *walk);
extern bool pgrl_lease_walk_next(RlLeaseWalk *walk, RlLeaseBatch *batch);
extern bool pgrl_put_restored_lease(const RlLease *lease, bool saved);
extern bool pgrl_leases_save_round(Oid extension);
extern void pgrl_leases_begin_save(RlLeaseSave *save, bool relist);
extern void pgrl_leases_save_committed(void);
extern void pgrl_leases_restore_seen(RlLeaseRestore *seen, Snapshot snapshot, Oid extension);
extern bool pgrl_leases_restore_begin(const RlLeaseRestore *seen);
extern void pgrl_leases_note_not_restored(int64 lease_id);
extern int	pgrl_leases_next_unsaved(RlLeaseSave *save, RlLease *leases, int room);
extern int	pgrl_leases_next_gone(RlLeaseSave *save, int64 *ids, int room);

#endif							/* RL_LEASE_H */
