/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		Setting up pg_ratelimit's shared memory at server start.
 *
 * Each module owns its part of shared memory and the locks that protect
 * it, sizes it and creates it (see the top of each file, and the lock
 * order in src/README.md); this file only asks the postmaster for the sum
 * and calls each module's init, with one LWLock tranche for all.  All of
 * it is sized at server start and fully preallocated, so applying a
 * configuration change never runs out of memory.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "catalog.h"
#include "clock.h"
#include "holders.h"
#include "instance.h"
#include "lease.h"
#include "ledger.h"
#include "shmem.h"
#include "wait.h"
#include "workerstate.h"

/* The tranche of every pg_ratelimit LWLock, shared by all backends */
typedef struct RlShmemHeader
{
	int			tranche_id;
} RlShmemHeader;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Total shared memory pg_ratelimit needs */
static Size
pgrl_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(RlShmemHeader));

	size = add_size(size, MAXALIGN(pgrl_clock_shmem_size()));
	size = add_size(size, MAXALIGN(pgrl_catalog_shmem_size()));
	size = add_size(size, MAXALIGN(pgrl_ledger_shmem_size()));
	size = add_size(size, MAXALIGN(pgrl_leases_shmem_size()));
	size = add_size(size, MAXALIGN(pgrl_waiters_shmem_size()));
	size = add_size(size, MAXALIGN(pgrl_instances_shmem_size()));
	size = add_size(size, MAXALIGN(pgrl_holders_shmem_size()));
	size = add_size(size, MAXALIGN(pgrl_worker_state_shmem_size()));
	return size;
}

/* Ask the postmaster for our shared memory */
static void
pgrl_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(pgrl_shmem_size());
}

/* Create or attach to every module's shared state */
static void
pgrl_shmem_startup(void)
{
	RlShmemHeader *header;
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	header = ShmemInitStruct("pg_ratelimit", sizeof(RlShmemHeader), &found);
	if (!found)
		header->tranche_id = LWLockNewTrancheId();
	pgrl_clock_shmem_init();
	pgrl_catalog_shmem_init(header->tranche_id);
	pgrl_ledger_shmem_init(header->tranche_id);
	pgrl_leases_shmem_init(header->tranche_id);
	pgrl_waiters_shmem_init();
	pgrl_instances_shmem_init(header->tranche_id);
	pgrl_holders_shmem_init(header->tranche_id);
	pgrl_worker_state_shmem_init();
	LWLockRelease(AddinShmemInitLock);

	LWLockRegisterTranche(header->tranche_id, "pg_ratelimit");
}

/* Called from _PG_init while shared_preload_libraries is processed */
void
pgrl_install_shmem_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pgrl_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pgrl_shmem_startup;
}
