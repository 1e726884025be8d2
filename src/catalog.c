/*-------------------------------------------------------------------------
 *
 * catalog.c
 *		The configuration in shared memory besides the models: job types,
 *		the per-model waits of each job type, config_lock, and whether
 *		shared memory mirrors the configuration tables.
 *
 * Job types live in an array of ratelimit.max_job_types slots found
 * through a name index; the waits in a job type x model matrix.  Both are
 * preallocated at server start, so applying a configuration cannot run out
 * of room.  config.c fills them from the tables; everyone else reads.
 *
 * Locking: config_lock protects everything here: the job type slots and
 * their index, the wait matrix, config_loaded, config_generation and
 * resync_applied.  It also stands for "the configuration does not change
 * under me" to the other modules:
 *
 * - exclusively, by whoever applies a configuration (config.c: a commit, a
 *   load, a resync), which also rewrites the models and shares (ledger.c)
 *   and drops the leases of dropped models (grant.c) under it; and by the
 *   worker for an instant before it copies the leases for saving
 *   (pgrl_ledger_start_lease_save);
 * - shared, by an acquire attempt from resolving its names until its lease
 *   is in the lease table (acquire.c), so a model cannot be dropped in
 *   between; by lookups of names and settings (api.c, views.c, acquire.c,
 *   persist.c, notify.c); and by the worker while it moves flexible ratios
 *   (worker.c).
 *
 * Nothing holds it exclusively on a hot path.  It comes first in the lock
 * order (src/README.md).  resync_requested is an atomic.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/atomics.h"
#include "storage/shmem.h"

#include "catalog.h"
#include "names.h"
#include "settings.h"

typedef struct RlCatalog
{
	LWLock		config_lock;
	bool		config_loaded;	/* shared memory mirrors the config tables */
	uint64		config_generation;	/* bumped by every applied change */
	pg_atomic_uint64 resync_requested;	/* asked to read the tables again ... */
	uint64		resync_applied; /* ... and answered up to here */
	RlJobType	job_types[FLEXIBLE_ARRAY_MEMBER];
} RlCatalog;

static RlCatalog *catalog = NULL;
static HTAB *job_type_index = NULL;
static int64 *max_wait_matrix = NULL;	/* [job type slot * max_models + model
										 * slot]: the configured wait, or -1 */

static Size
pgrl_catalog_struct_size(void)
{
	return add_size(offsetof(RlCatalog, job_types),
					mul_size(pgrl_max_job_types, sizeof(RlJobType)));
}

static Size
pgrl_wait_matrix_size(void)
{
	return mul_size(mul_size(pgrl_max_job_types, pgrl_max_models), sizeof(int64));
}

Size
pgrl_catalog_shmem_size(void)
{
	Size		size = MAXALIGN(pgrl_catalog_struct_size());

	size = add_size(size, MAXALIGN(pgrl_wait_matrix_size()));
	return add_size(size, pgrl_name_index_size(pgrl_max_job_types));
}

/* Create or attach; caller holds AddinShmemInitLock */
void
pgrl_catalog_shmem_init(int tranche_id)
{
	bool		found;
	bool		found_waits;

	catalog = ShmemInitStruct("pg_ratelimit catalog", pgrl_catalog_struct_size(), &found);
	max_wait_matrix = ShmemInitStruct("pg_ratelimit waits", pgrl_wait_matrix_size(),
									  &found_waits);
	if (!found)
	{
		LWLockInitialize(&catalog->config_lock, tranche_id);
		catalog->config_loaded = false;
		catalog->config_generation = 0;
		pg_atomic_init_u64(&catalog->resync_requested, 0);
		catalog->resync_applied = 0;
		memset(catalog->job_types, 0, mul_size(pgrl_max_job_types, sizeof(RlJobType)));
		for (Size i = 0; i < (Size) pgrl_max_job_types * pgrl_max_models; i++)
			max_wait_matrix[i] = -1;
	}
	job_type_index = pgrl_name_index_init("pg_ratelimit job type index", pgrl_max_job_types);
}

void
pgrl_config_lock(LWLockMode mode)
{
	LWLockAcquire(&catalog->config_lock, mode);
}

void
pgrl_config_unlock(void)
{
	LWLockRelease(&catalog->config_lock);
}

/* For assertions: is config_lock held in this mode (shared: in any)? */
bool
pgrl_config_lock_held(LWLockMode mode)
{
	if (mode == LW_EXCLUSIVE)
		return LWLockHeldByMeInMode(&catalog->config_lock, LW_EXCLUSIVE);
	return LWLockHeldByMe(&catalog->config_lock);
}

/* The slot of a job type, or -1.  Caller holds config_lock. */
int
pgrl_job_type_slot(const char *name)
{
	Assert(pgrl_config_lock_held(LW_SHARED));
	return pgrl_name_index_find(job_type_index, name);
}

/* A job type slot, in use or not.  Caller holds config_lock. */
const RlJobType *
pgrl_job_type(int slot)
{
	Assert(slot >= 0 && slot < pgrl_max_job_types);
	Assert(pgrl_config_lock_held(LW_SHARED));
	return &catalog->job_types[slot];
}

/*
 * How long a request of a job type (slot, -1 for none) may wait on a model:
 * its wait for that model (rl_set_max_wait), else the job type's default;
 * -1 when neither is set.  Caller holds config_lock.
 */
int64
pgrl_job_type_wait_us(int job_type_slot, int model_slot)
{
	int64		max_wait_us;

	Assert(pgrl_config_lock_held(LW_SHARED));
	if (job_type_slot < 0)
		return -1;
	max_wait_us = max_wait_matrix[(Size) job_type_slot * pgrl_max_models + model_slot];
	if (max_wait_us < 0)
		max_wait_us = catalog->job_types[job_type_slot].max_wait_us;
	return max_wait_us;
}

/*
 * The job types in use now, into names (room for max_job_types); returns
 * how many.  Takes config_lock.
 */
int
pgrl_job_type_names(RlJobTypeName *names)
{
	int			count = 0;

	pgrl_config_lock(LW_SHARED);
	for (int j = 0; j < pgrl_max_job_types; j++)
	{
		if (!catalog->job_types[j].in_use)
			continue;
		names[count].slot = j;
		names[count].generation = catalog->job_types[j].generation;
		strlcpy(names[count].name, catalog->job_types[j].name, sizeof(names[count].name));
		count++;
	}
	pgrl_config_unlock();
	return count;
}

/* Does shared memory mirror the tables?  An unlocked peek is fine. */
bool
pgrl_config_loaded(void)
{
	return catalog->config_loaded;
}

/* Caller holds config_lock exclusively */
void
pgrl_config_set_loaded(bool loaded)
{
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	catalog->config_loaded = loaded;
}

/* Bumped by every applied change.  Caller holds config_lock. */
uint64
pgrl_config_generation(void)
{
	Assert(pgrl_config_lock_held(LW_SHARED));
	return catalog->config_generation;
}

/* Ask for the tables to be read again (changes no trigger saw) */
void
pgrl_config_request_resync(void)
{
	pg_atomic_fetch_add_u64(&catalog->resync_requested, 1);
}

uint64
pgrl_config_resync_requested(void)
{
	return pg_atomic_read_u64(&catalog->resync_requested);
}

/* Is a resync asked for and not answered yet?  An unlocked peek. */
bool
pgrl_config_resync_pending(void)
{
	return catalog->resync_applied < pgrl_config_resync_requested();
}

/*
 * A configuration read after resync request resync_seen was applied: bump
 * the generation.  Caller holds config_lock exclusively.
 */
void
pgrl_config_applied(uint64 resync_seen)
{
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	if (resync_seen > catalog->resync_applied)
		catalog->resync_applied = resync_seen;
	catalog->config_generation++;
}

/*
 * Make the job types those configured: drop the others, fill free slots
 * with new ones, and work out each one's base ratio (its explicit ratio,
 * or an equal part of what the explicit ones leave).  False when a slot or
 * an index entry was missing (cannot happen: sized at server start).
 * Caller holds config_lock exclusively.
 */
bool
pgrl_catalog_apply_job_types(RlJobTypeConfig *configs, int count)
{
	bool		complete = true;
	double		explicit_sum = 0;
	int			num_implicit = 0;
	double		implicit_ratio = 0;

	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	for (int i = 0; i < count; i++)
		configs[i].slot = pgrl_name_index_find(job_type_index, configs[i].name);
	/* drop what is no longer configured (no allocation under the lock) */
	for (int slot = 0; slot < pgrl_max_job_types; slot++)
	{
		bool		kept = false;

		if (!catalog->job_types[slot].in_use)
			continue;
		for (int i = 0; i < count && !kept; i++)
			kept = configs[i].slot == slot;
		if (!kept)
		{
			pgrl_name_index_remove(job_type_index, catalog->job_types[slot].name);
			catalog->job_types[slot].in_use = false;
		}
	}
	for (int i = 0, free_slot = 0; i < count; i++)
	{
		RlJobTypeConfig *config = &configs[i];
		RlJobType  *job_type;

		if (config->slot < 0)
		{
			while (free_slot < pgrl_max_job_types && catalog->job_types[free_slot].in_use)
				free_slot++;
			if (free_slot == pgrl_max_job_types ||
				!pgrl_name_index_insert(job_type_index, config->name, free_slot))
			{
				complete = false;
				continue;
			}
			job_type = &catalog->job_types[free_slot];
			job_type->in_use = true;
			job_type->generation++;
			strlcpy(job_type->name, config->name, sizeof(job_type->name));
			config->slot = free_slot;
		}
		job_type = &catalog->job_types[config->slot];
		job_type->est_tokens = config->est_tokens;
		job_type->est_requests = config->est_requests;
		job_type->est_memory_kb = config->est_memory_kb;
		job_type->ratio = config->ratio;
		job_type->flexible = config->flexible;
		job_type->max_wait_us = config->max_wait_us;
		if (job_type->ratio >= 0)
			explicit_sum += job_type->ratio;
		else
			num_implicit++;
	}
	if (num_implicit > 0)
		implicit_ratio = Max(0.0, 1.0 - explicit_sum) / num_implicit;
	for (int j = 0; j < pgrl_max_job_types; j++)
		if (catalog->job_types[j].in_use)
			catalog->job_types[j].base_ratio = catalog->job_types[j].ratio >= 0 ?
				catalog->job_types[j].ratio : implicit_ratio;
	return complete;
}

/* Make the wait matrix hold exactly these.  Caller holds config_lock exclusively. */
void
pgrl_catalog_apply_waits(const RlWaitSetting *waits, int count)
{
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	for (Size i = 0; i < (Size) pgrl_max_job_types * pgrl_max_models; i++)
		max_wait_matrix[i] = -1;
	for (int i = 0; i < count; i++)
		max_wait_matrix[(Size) waits[i].job_type_slot * pgrl_max_models + waits[i].model_slot] =
			waits[i].max_wait_us;
}

/* Forget every job type (a full load).  Caller holds config_lock exclusively. */
void
pgrl_catalog_clear(void)
{
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	for (int slot = 0; slot < pgrl_max_job_types; slot++)
	{
		if (!catalog->job_types[slot].in_use)
			continue;
		pgrl_name_index_remove(job_type_index, catalog->job_types[slot].name);
		catalog->job_types[slot].in_use = false;
	}
}
