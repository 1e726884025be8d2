/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		pg_ratelimit's shared memory: what lives there and which lock
 *		protects what.
 *
 * Shared memory holds one RlSharedState, an array of ratelimit.max_models
 * RlModel slots, an array of ratelimit.max_job_types RlJobType slots, a
 * job type x model matrix of per-model waits, a model x job type matrix of
 * shares (share.c), two name -> slot indexes and the partitioned lease
 * table.  All of it is sized at server start and
 * fully preallocated, so applying a configuration change never runs out of
 * memory.
 *
 * Locking:
 *
 * - config_lock protects the two name indexes, which slots are in use, the
 *   job type slots, the wait matrix and whether shared memory mirrors the
 *   tables (config_loaded, config_generation, resync_applied; config.c).
 *   Applying a configuration (a commit, a load, a resync) takes it
 *   exclusively, and so does the worker for an instant before it copies
 *   the leases (mark.c).  acquire holds it shared for its whole run, so a
 *   model cannot be dropped between the admission decision and the
 *   insertion of the lease.  Nothing holds it exclusively on a hot path.
 *
 * - Each RlModel has its own LWLock protecting its limits, prices, window
 *   counters and totals.  The admission check and the reservation happen
 *   under that one lock, which is what makes admission atomic and exact:
 *   two backends racing for the last unit of a model serialize on it, and
 *   backends working on different models never meet.  The model's lock
 *   also protects its shares: each job type's ratio and usage there.
 *
 * - The lease table is a shared hash split into RL_LEASE_PARTITIONS
 *   partitions, each with its own LWLock, chosen by the hash of the lease
 *   id.  A lease is settled by whoever removes it from the table (release,
 *   or the expiry sweep), so it is settled exactly once.  A partition's lock
 *   also protects its list of leases the worker has not saved yet; the ids
 *   of saved leases that left have a spinlock of their own (lease.c).
 *
 * - sweep_lock lets one backend at a time expire leases; the others wait
 *   for it (lease.c).
 *
 * - The wait queue's records need no lock; see wait.c.
 *
 * - Registered instances have their own lock, taken after config_lock and
 *   never under a model lock; see instance.c.
 *
 * - The open leases of each role are counted in atomics; the index of the
 *   roles has its own lock, taken under no model lock; see holders.c.
 *
 * Lock order: sweep_lock, config_lock, then a model lock, then a lease
 * partition lock (nothing waits for sweep_lock holding any of the others).
 * A model lock is never held while another model lock is taken.  Nothing
 * is reported (ereport, elog) and no catalog is read while any of these is
 * held: a message goes to the client first, and a client that stops
 * reading would keep the lock held, uninterruptibly.
 *
 * The clock offset, the lease id counter, the count of open leases and the
 * earliest-expiry hint are atomics and need no lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "holders.h"
#include "instance.h"
#include "lease.h"
#include "pg_ratelimit.h"
#include "wait.h"

RlSharedState *pgrl_state = NULL;
RlModel    *pgrl_models = NULL;
RlJobType  *pgrl_job_types = NULL;
int64	   *pgrl_waits = NULL;
RlShare    *pgrl_shares = NULL;
HTAB	   *pgrl_model_index = NULL;
HTAB	   *pgrl_job_type_index = NULL;
HTAB	   *pgrl_lease_table = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* The configured database's OID, looked up once per backend */
static Oid	pgrl_database_oid = InvalidOid;

static Size
pgrl_wait_matrix_size(void)
{
	return mul_size(mul_size(pgrl_max_job_types, pgrl_max_models), sizeof(int64));
}

static Size
pgrl_share_matrix_size(void)
{
	return mul_size(mul_size(pgrl_max_models, pgrl_max_job_types), sizeof(RlShare));
}

/* Total shared memory pg_ratelimit needs */
static Size
pgrl_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(RlSharedState));

	size = add_size(size, MAXALIGN(mul_size(pgrl_max_models, sizeof(RlModel))));
	size = add_size(size, MAXALIGN(mul_size(pgrl_max_job_types, sizeof(RlJobType))));
	size = add_size(size, MAXALIGN(pgrl_wait_matrix_size()));
	size = add_size(size, MAXALIGN(pgrl_share_matrix_size()));
	size = add_size(size, hash_estimate_size(pgrl_max_models, sizeof(RlNameEntry)));
	size = add_size(size, hash_estimate_size(pgrl_max_job_types, sizeof(RlNameEntry)));
	size = add_size(size, pgrl_leases_shmem_size());
	size = add_size(size, MAXALIGN(pgrl_waiters_shmem_size()));
	size = add_size(size, MAXALIGN(pgrl_instances_shmem_size()));
	size = add_size(size, MAXALIGN(pgrl_holders_shmem_size()));
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

/* Create a fully preallocated shared name index */
static HTAB *
pgrl_init_name_index(const char *name, int size)
{
	HASHCTL		info;

	info.keysize = RL_NAME_MAX_LEN + 1;
	info.entrysize = sizeof(RlNameEntry);
	return ShmemInitHash(name, size, size, &info, HASH_ELEM | HASH_STRINGS);
}

/* Create or attach to the shared state */
static void
pgrl_shmem_startup(void)
{
	bool		found;
	bool		found_models;
	bool		found_job_types;
	bool		found_waits;
	bool		found_shares;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);

	pgrl_state = ShmemInitStruct("pg_ratelimit state", sizeof(RlSharedState), &found);
	pgrl_models = ShmemInitStruct("pg_ratelimit models",
								mul_size(pgrl_max_models, sizeof(RlModel)),
								&found_models);
	pgrl_job_types = ShmemInitStruct("pg_ratelimit job types",
								   mul_size(pgrl_max_job_types, sizeof(RlJobType)),
								   &found_job_types);
	pgrl_waits = ShmemInitStruct("pg_ratelimit waits", pgrl_wait_matrix_size(),
							   &found_waits);
	pgrl_shares = ShmemInitStruct("pg_ratelimit job type shares", pgrl_share_matrix_size(),
								&found_shares);

	if (!found)
	{
		pgrl_state->tranche_id = LWLockNewTrancheId();
		LWLockInitialize(&pgrl_state->config_lock, pgrl_state->tranche_id);
		LWLockInitialize(&pgrl_state->sweep_lock, pgrl_state->tranche_id);
		for (int i = 0; i < RL_LEASE_PARTITIONS; i++)
			LWLockInitialize(&pgrl_state->lease_locks[i], pgrl_state->tranche_id);
		pgrl_state->config_loaded = false;
		pgrl_state->config_generation = 0;
		pg_atomic_init_u64(&pgrl_state->clock_offset_us, 0);

		/*
		 * Seed lease ids from the real clock so that ids handed out before a
		 * restart are never handed out again after it.
		 */
		pg_atomic_init_u64(&pgrl_state->next_lease_id,
						   (uint64) GetCurrentTimestamp());
		pg_atomic_init_u32(&pgrl_state->open_leases, 0);
		pg_atomic_init_u64(&pgrl_state->lease_version, 0);
		pg_atomic_init_u64(&pgrl_state->ratio_version, 0);
		pg_atomic_init_u32(&pgrl_state->marks_requested, 0);
		pg_atomic_init_u32(&pgrl_state->lease_save_epoch, 0);
		pg_atomic_init_u64(&pgrl_state->resync_requested, 0);
		pgrl_state->resync_applied = 0;
		pgrl_state->worker_latch = NULL;
		pg_atomic_init_u64(&pgrl_state->earliest_expiry, PG_UINT64_MAX);

		memset(pgrl_models, 0, mul_size(pgrl_max_models, sizeof(RlModel)));
		for (int i = 0; i < pgrl_max_models; i++)
		{
			LWLockInitialize(&pgrl_models[i].lock, pgrl_state->tranche_id);
			pg_atomic_init_u32(&pgrl_models[i].num_waiters, 0);
		}
		memset(pgrl_job_types, 0, mul_size(pgrl_max_job_types, sizeof(RlJobType)));
		for (Size i = 0; i < (Size) pgrl_max_job_types * pgrl_max_models; i++)
			pgrl_waits[i] = -1;
		memset(pgrl_shares, 0, pgrl_share_matrix_size());
		for (Size i = 0; i < (Size) pgrl_max_job_types * pgrl_max_models; i++)
			pg_atomic_init_u32(&pgrl_shares[i].num_waiters, 0);
	}

	pgrl_model_index = pgrl_init_name_index("pg_ratelimit model index", pgrl_max_models);
	pgrl_job_type_index = pgrl_init_name_index("pg_ratelimit job type index",
										   pgrl_max_job_types);

	pgrl_leases_shmem_init();
	pgrl_waiters_shmem_init(found);
	pgrl_instances_shmem_init(found);
	pgrl_holders_shmem_init(pgrl_state->tranche_id);

	LWLockRelease(AddinShmemInitLock);

	LWLockRegisterTranche(pgrl_state->tranche_id, "pg_ratelimit");
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

/* The library must have been preloaded and we must be in its database */
void
pgrl_require_library(void)
{
	if (pgrl_state == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ratelimit must be loaded via shared_preload_libraries"),
				 errhint("Add pg_ratelimit to shared_preload_libraries and restart the server.")));

	if (!OidIsValid(pgrl_database_oid))
		pgrl_database_oid = get_database_oid(pgrl_database_name, true);
	if (MyDatabaseId != pgrl_database_oid)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ratelimit is configured for database \"%s\"",
						pgrl_database_name),
				 errhint("Use pg_ratelimit in that database, or set ratelimit.database and restart the server.")));
}

/*
 * Every SQL entry point calls this first: on top of pgrl_require_library(),
 * shared memory must mirror the configuration tables.
 */
void
pgrl_require_ready(void)
{
	pgrl_require_library();
	pgrl_ensure_config_loaded();
}

/*
 * Find the slot of a name in a name index, or -1.
 * Caller must hold config_lock.
 */
int
pgrl_lookup_slot(HTAB *index, const char *name)
{
	char		key[RL_NAME_MAX_LEN + 1];
	RlNameEntry *entry;

	memset(key, 0, sizeof(key));
	strlcpy(key, name, sizeof(key));
	entry = hash_search(index, key, HASH_FIND, NULL);
	return entry ? entry->slot : -1;
}

/*
 * Refuse to change the limiter's state on a hot standby: the primary's
 * state is authoritative.  action says what was refused ("admit requests").
 */
void
pgrl_require_primary(const char *action)
{
	pgrl_require_library();
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("pg_ratelimit cannot %s on a standby", action),
				 errhint("Call it on the primary server.")));
}

/* Copy a name argument into a fixed buffer, refusing NULL and bad names */
void
pgrl_copy_name_arg(FunctionCallInfo fcinfo, int argno, char *dest, const char *what)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	pgrl_copy_name(dest, text_to_cstring(PG_GETARG_TEXT_PP(argno)), what);
}

/* Copy a user-supplied name into a fixed buffer, refusing bad names */
void
pgrl_copy_name(char *dest, const char *src, const char *what)
{
	size_t		len = strlen(src);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s name must not be empty", what)));
	if (len > RL_NAME_MAX_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("%s name is too long", what),
				 errdetail("The longest allowed name has %d bytes.", RL_NAME_MAX_LEN)));
	memset(dest, 0, RL_NAME_MAX_LEN + 1);
	memcpy(dest, src, len);
}
