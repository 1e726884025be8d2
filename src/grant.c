/*-------------------------------------------------------------------------
 *
 * grant.c
 *		How a lease leaves the lease table: released, expired, its instance
 *		or its model gone, its session ended.
 *
 * Whoever takes a lease out of the lease table (lease.c) settles it, so a
 * lease is settled exactly once, and every way out passes through
 * pgrl_lease_left, which gives back what the lease held outside the
 * ledger (its role's count, its instance's memory slot), and then through
 * the ledger: a release settles it with actual usage, an expiry frees its
 * concurrency slot and keeps its window reservation, and a lease whose
 * model was dropped has nothing left to settle.  All of it happens with no
 * lease lock held: the lease table hands removed leases back in batches.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/memutils.h"

#include "catalog.h"
#include "clock.h"
#include "grant.h"
#include "holders.h"
#include "instance.h"
#include "lease.h"
#include "ledger.h"

static bool exit_callback_registered = false;

/*
 * A lease left the lease table: give back its role's count and its
 * instance's memory slot (which may wake waiters held to that memory).
 */
static void
pgrl_lease_left(const RlLease *lease)
{
	pgrl_role_lease_gone(lease);
	pgrl_instance_lease_gone(lease);
}

/*
 * Release a lease with the usage it reports (rl_release): only the role
 * that acquired it, or a member of that role, may (lease.c errors).
 * result->released is false when there is no such open lease.
 */
void
pgrl_release_lease(int64 lease_id, const RlUsage *usage, TimestampTz now,
				   RlSettlement *result)
{
	RlLease		lease;

	memset(result, 0, sizeof(*result));
	if (!pgrl_take_lease(lease_id, &lease))
		return;
	pgrl_lease_left(&lease);
	if (lease.session_bound && lease.pid == MyProcPid)
		pgrl_session_lease_forget(lease_id);
	pgrl_ledger_settle(&lease, usage, now, result);
}

/* Settle the batch a removal took out as expired; returns how many */
static int
pgrl_expire_batch(RlLeaseRemoval *batch, TimestampTz now)
{
	for (int i = 0; i < batch->count; i++)
	{
		pgrl_lease_left(&batch->leases[i]);
		pgrl_ledger_expire(&batch->leases[i], now);
	}
	return batch->count;
}

/*
 * Expire every lease whose time is up at now: when this returns, no lease
 * due at now counts anywhere (see lease.c for how sweeps wait for each
 * other).  Cheap when nothing is due.
 */
void
pgrl_expire_due_leases(TimestampTz now)
{
	RlLeaseRemoval *removal;
	int			expired = 0;

	if (pgrl_leases_nothing_due(now))
		return;
	/* a batch is large: only when something may be due, and only for now */
	removal = palloc(sizeof(RlLeaseRemoval));
	if (pgrl_leases_sweep_begin(removal, now))
	{
		while (pgrl_leases_remove_next(removal))
			expired += pgrl_expire_batch(removal, now);
		pgrl_leases_sweep_end(removal);
	}
	pfree(removal);
	if (expired > 0)
		elog(DEBUG1, "pg_ratelimit expired %d leases", expired);
}

/*
 * Expire the open leases of an instance that left or went stale (by
 * name): each frees its concurrency slot and keeps its window reservation.
 * Returns how many.
 */
int
pgrl_expire_instance_leases(const char *instance, TimestampTz now)
{
	RlLeaseRemoval *removal = palloc(sizeof(RlLeaseRemoval));
	int			expired = 0;

	pgrl_leases_removal_begin(removal, RL_REMOVE_INSTANCE, instance, NULL);
	while (pgrl_leases_remove_next(removal))
		expired += pgrl_expire_batch(removal, now);
	pfree(removal);
	return expired;
}

/*
 * Discard the open leases of the models marked in models[slot] (dropped),
 * or of all models (models NULL: a full load starts from nothing, and the
 * saved leases are written anew).  Nothing is settled: the models are
 * gone.  Called while a configuration is applied, with config_lock held
 * exclusively; the caller allocated removal before it took the lock.  Must
 * not fail.
 */
void
pgrl_discard_leases(const bool *models, RlLeaseRemoval *removal)
{
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	pgrl_leases_removal_begin(removal, models ? RL_REMOVE_MODELS : RL_REMOVE_ALL, NULL,
							  models);
	while (pgrl_leases_remove_next(removal))
		for (int i = 0; i < removal->count; i++)
			pgrl_lease_left(&removal->leases[i]);
}

/*
 * Before the backend detaches from shared memory: release the
 * session-bound leases it still holds, each settled as a release without
 * actual usage.
 */
static void
pgrl_session_exit(int code, Datum arg)
{
	const int64 *ids;
	int			count;
	int			released = 0;

	/* a FATAL error may have left a lock held: ProcKill would free it */
	LWLockReleaseAll();
	count = pgrl_session_leases(&ids);
	for (int i = 0; i < count; i++)
	{
		RlLease		lease;

		if (pgrl_take_session_lease(ids[i], MyProcPid, &lease))
		{
			RlUsage		no_usage;
			RlSettlement result;

			pgrl_lease_left(&lease);
			memset(&no_usage, 0, sizeof(no_usage));
			pgrl_ledger_settle(&lease, &no_usage, pgrl_now(), &result);
			released++;
		}
	}
	if (released > 0)
		elog(DEBUG1, "pg_ratelimit released %d session-bound leases at backend exit",
			 released);
}

/* This backend takes session-bound leases: release them when it exits */
void
pgrl_release_session_leases_at_exit(void)
{
	if (exit_callback_registered)
		return;
	before_shmem_exit(pgrl_session_exit, (Datum) 0);
	exit_callback_registered = true;
}
