/*-------------------------------------------------------------------------
 *
 * config.c
 *		Keeping shared memory equal to the committed configuration tables.
 *
 * The tables rl_model, rl_job_type and rl_job_type_wait are the source of
 * truth; shared memory is a cache of them plus live counters.  This is the
 * one place that keeps the two equal:
 *
 * - Every change goes through a trigger (row-level, and statement-level for
 *   TRUNCATE, all ENABLE ALWAYS so that they fire under
 *   session_replication_role = replica and in logical replication too).  It
 *   marks the transaction and takes an exclusive lock on the extension
 *   object, so configuration transactions run one at a time.  At pre-commit
 *   the transaction takes that lock again (a rolled-back subtransaction may
 *   have released it) and reads the whole configuration with a fresh
 *   snapshot: everything committed so far plus its own changes, whatever
 *   its isolation level.  The ratio-sum rule is checked on that read, where
 *   an error still aborts the transaction.  At commit, still holding the
 *   lock, the read is applied to shared memory in one step under
 *   config_lock; every slot is preallocated, so it cannot fail.  A rollback
 *   applies nothing.
 *
 * - After a server start, a crash or a promotion shared memory does not
 *   mirror the tables (config_loaded is false): the first caller, or the
 *   worker, does a full load: it reads the configuration and the saved
 *   state with a fresh snapshot, clears shared memory and applies both.  A
 *   generation counter makes a load lose any race against a commit that
 *   applied in the meantime (that commit's own read is the newer one: it
 *   was made under the lock).  No backend waits for the lock.
 *
 * - Changes that no trigger saw (made while the triggers were disabled, as
 *   pg_restore --disable-triggers does, or while no worker ran) are found
 *   by the worker (worker.c), which asks for a resync and does it itself:
 *   under the lock, taken only when free, it reads the configuration again
 *   and applies it, keeping the live counters.  A "cannot happen" state met
 *   while applying does not carry on out of step: it clears config_loaded,
 *   so the next use rebuilds everything from the tables, as after a crash.
 *
 * Nothing is reported (ereport) while config_lock is held: a message goes
 * to the client first, and a client that does not read it would keep the
 * lock held.
 *
 * - A hot standby never treats shared memory as authoritative: every call
 *   rebuilds it from the tables as replayed so far (nothing is admitted
 *   there), and config_loaded stays false, so after a promotion the first
 *   use loads the then-committed state.
 *
 * All SQL runs through extsql.c: as the extension's owner, with a pinned
 * search_path.  Catalog access never happens under config_lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "extsql.h"
#include "instance.h"
#include "lease.h"
#include "mark.h"
#include "persist.h"
#include "pg_ratelimit.h"
#include "wait.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(rl_config_trigger);
PG_FUNCTION_INFO_V1(rl_internal_resync);

/* Tolerance of the ratio-sum rule: float8 ratios such as 0.1 + 0.9 */
#define RL_RATIO_SUM_SLACK		1e-9

typedef struct RlModelConfig
{
	char		name[RL_NAME_MAX_LEN + 1];
	int64		limit[RL_NUM_DIMS];
	bool		count_cached;
	RlNumeric	price_input;
	RlNumeric	price_output;
	RlNumeric	price_cached;
	bool		priced;
	int			slot;			/* filled while applying */
} RlModelConfig;

typedef struct RlJobTypeConfig
{
	char		name[RL_NAME_MAX_LEN + 1];
	int64		est_tokens;
	int32		est_requests;
	int64		est_memory_kb;
	double		ratio;
	bool		flexible;
	int64		max_wait_us;
	int			slot;
} RlJobTypeConfig;

typedef struct RlWaitConfig
{
	char		job_type[RL_NAME_MAX_LEN + 1];
	char		model[RL_NAME_MAX_LEN + 1];
	int64		max_wait_us;
} RlWaitConfig;

/* The whole configuration as read from the tables, plus scratch space */
typedef struct RlConfigSnapshot
{
	int			num_models;
	RlModelConfig *models;
	int			num_job_types;
	RlJobTypeConfig *job_types;
	int			num_waits;
	RlWaitConfig *waits;
	double		ratio_sum;		/* of the job types' explicit ratios */
	RlStateSnapshot *state;		/* saved state, when read for a full load */
	uint64		resync_seen;	/* resync requests this read answers */
	bool	   *model_kept;		/* [max_models] */
	bool	   *model_dropped;	/* [max_models] */
	bool	   *job_type_kept;	/* [max_job_types] */
} RlConfigSnapshot;

/* Columns of the configuration queries, by position */
enum
{
	MODEL_COL_NAME = 1,
	MODEL_COL_RPD,				/* then tpd, rpm, tpm, max_concurrent: the
								 * RlDimension order */
	MODEL_COL_COUNT_CACHED = MODEL_COL_RPD + RL_NUM_DIMS,
	MODEL_COL_PRICE_INPUT,
	MODEL_COL_PRICE_OUTPUT,
	MODEL_COL_PRICE_CACHED
};

/* This transaction changed the configuration */
static bool config_changed = false;

/* ... and re-created the extension: forget the old instances at commit */
static bool forget_instances_at_commit = false;

/* ... of this OID (looked up once per transaction) */
static Oid	config_extension_oid = InvalidOid;

/* Read at pre-commit, applied at commit */
static RlConfigSnapshot *pending_config = NULL;
static MemoryContext config_context = NULL;

static bool callbacks_registered = false;

/* Column value as int64, or if_null when NULL */
static int64
pgrl_spi_int64(HeapTuple tuple, TupleDesc desc, int column, int64 if_null)
{
	bool		isnull;
	Datum		value = SPI_getbinval(tuple, desc, column, &isnull);

	return isnull ? if_null : DatumGetInt64(value);
}

/* Copy a numeric column into an inline buffer; true when above zero */
static bool
pgrl_spi_numeric(HeapTuple tuple, TupleDesc desc, int column, RlNumeric *dest,
			   const char *model)
{
	bool		isnull;
	Datum		value = SPI_getbinval(tuple, desc, column, &isnull);
	Numeric		num;

	if (isnull)
		value = DirectFunctionCall1(int8_numeric, Int64GetDatum(0));
	num = DatumGetNumeric(value);
	/* the table's checks refuse these; a row that bypassed them is refused too */
	if (numeric_is_nan(num) || numeric_is_inf(num))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a price of model \"%s\" is not a finite number", model)));
	if (!pgrl_numeric_store(dest, num))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("a price of model \"%s\" has too many digits", model)));
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(num),
											 NumericGetDatum(int64_to_numeric(0)))) > 0;
}

/* Run a query, erroring when it returns more rows than there is room for */
static uint64
pgrl_spi_select(const char *sql, int room, const char *what, const char *setting)
{
	pgrl_extsql_query(sql, "read its configuration");
	if (SPI_processed > (uint64) room)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many pg_ratelimit %s", what),
				 errdetail("The configuration has " UINT64_FORMAT " %s; %s is %d.",
						   SPI_processed, what, setting, room),
				 errhint("Drop some, or raise %s and restart the server.", setting)));
	return SPI_processed;
}

/* Read rl_model */
static void
pgrl_read_models(RlConfigSnapshot *snap, MemoryContext context, const char *qschema)
{
	StringInfoData sql;
	uint64		n;

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT model, rpd, tpd, rpm, tpm, max_concurrent, count_cached,"
					 " price_input, price_output, price_cached FROM %s.rl_model",
					 qschema);
	n = pgrl_spi_select(sql.data, pgrl_max_models, "models", "ratelimit.max_models");
	snap->num_models = n;
	snap->models = MemoryContextAllocZero(context, sizeof(RlModelConfig) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		RlModelConfig *m = &snap->models[i];
		bool		isnull;

		strlcpy(m->name, SPI_getvalue(tup, desc, MODEL_COL_NAME), sizeof(m->name));
		for (int d = 0; d < RL_NUM_DIMS; d++)
			m->limit[d] = pgrl_spi_int64(tup, desc, MODEL_COL_RPD + d, RL_UNLIMITED);
		m->count_cached = DatumGetBool(SPI_getbinval(tup, desc, MODEL_COL_COUNT_CACHED,
													 &isnull)) || isnull;
		m->priced = pgrl_spi_numeric(tup, desc, MODEL_COL_PRICE_INPUT, &m->price_input, m->name);
		m->priced |= pgrl_spi_numeric(tup, desc, MODEL_COL_PRICE_OUTPUT, &m->price_output,
									m->name);
		m->priced |= pgrl_spi_numeric(tup, desc, MODEL_COL_PRICE_CACHED, &m->price_cached,
									m->name);
	}
}

/* Read rl_job_type and rl_job_type_wait */
static void
pgrl_read_job_types(RlConfigSnapshot *snap, MemoryContext context, const char *qschema)
{
	StringInfoData sql;
	uint64		n;

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT job_type, est_tokens, est_requests, est_memory_kb, ratio,"
					 " flexible,"
					 " (extract(epoch FROM max_wait) * 1000000::numeric)::bigint"
					 " FROM %s.rl_job_type", qschema);
	n = pgrl_spi_select(sql.data, pgrl_max_job_types, "job types", "ratelimit.max_job_types");
	snap->num_job_types = n;
	snap->job_types = MemoryContextAllocZero(context, sizeof(RlJobTypeConfig) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		RlJobTypeConfig *j = &snap->job_types[i];
		bool		isnull;
		Datum		ratio;

		strlcpy(j->name, SPI_getvalue(tup, desc, 1), sizeof(j->name));
		j->est_tokens = pgrl_spi_int64(tup, desc, 2, 0);
		j->est_requests = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		if (isnull)
			j->est_requests = 1;
		j->est_memory_kb = pgrl_spi_int64(tup, desc, 4, 0);
		ratio = SPI_getbinval(tup, desc, 5, &isnull);
		j->ratio = isnull ? -1.0 : DatumGetFloat8(ratio);
		if (j->ratio >= 0)
			snap->ratio_sum += j->ratio;
		j->flexible = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull)) || isnull;
		j->max_wait_us = pgrl_spi_int64(tup, desc, 7, -1);
	}

	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT job_type, model,"
					 " (extract(epoch FROM max_wait) * 1000000::numeric)::bigint"
					 " FROM %s.rl_job_type_wait", qschema);
	n = pgrl_spi_select(sql.data, pgrl_max_job_types * pgrl_max_models,
					  "per-model waits", "ratelimit.max_models");
	snap->num_waits = n;
	snap->waits = MemoryContextAllocZero(context, sizeof(RlWaitConfig) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		RlWaitConfig *w = &snap->waits[i];

		strlcpy(w->job_type, SPI_getvalue(tup, desc, 1), sizeof(w->job_type));
		strlcpy(w->model, SPI_getvalue(tup, desc, 2), sizeof(w->model));
		w->max_wait_us = pgrl_spi_int64(tup, desc, 3, -1);
	}
}

/*
 * Read the whole configuration from the tables into memory of the given
 * context, with a fresh snapshot (everything committed so far, and this
 * transaction's own changes), and the saved state too when with_state.
 * Missing extension (dropped in this transaction): empty.
 */
static RlConfigSnapshot *
pgrl_read_config(MemoryContext context, bool with_state)
{
	RlConfigSnapshot *snap;
	RlExtSql	session;

	snap = MemoryContextAllocZero(context, sizeof(RlConfigSnapshot));
	snap->model_kept = MemoryContextAllocZero(context, sizeof(bool) * pgrl_max_models);
	snap->model_dropped = MemoryContextAllocZero(context, sizeof(bool) * pgrl_max_models);
	snap->job_type_kept = MemoryContextAllocZero(context, sizeof(bool) * pgrl_max_job_types);

	/* requests made before this read are answered by it */
	snap->resync_seen = pg_atomic_read_u64(&pgrl_state->resync_requested);

	if (!pgrl_extsql_begin(&session, true))
		return snap;
	pgrl_read_models(snap, context, session.qschema);
	pgrl_read_job_types(snap, context, session.qschema);
	if (with_state)
		snap->state = pgrl_read_state(context, session.qschema);
	/* back in the caller's memory context: the SPI one is gone */
	pgrl_extsql_end(&session);
	return snap;
}

/*
 * Ask for the configuration to be read again and applied (keeping the live
 * counters) by the next caller or the worker.
 */
void
pgrl_request_config_resync(void)
{
	pg_atomic_fetch_add_u64(&pgrl_state->resync_requested, 1);
}

/* What cannot happen but happened while applying (see pgrl_apply_failed) */
static const char *apply_failure = NULL;

/*
 * Something that cannot happen happened while applying: rather than carry
 * on out of step, have the next caller (or the worker) rebuild shared
 * memory from the tables and the saved state, as after a crash.  Said by
 * pgrl_report_apply() once config_lock is released: nothing is reported with
 * an LWLock held (a client that does not read its messages would keep it).
 * Caller holds config_lock exclusively.
 */
static void
pgrl_apply_failed(const char *what)
{
	apply_failure = what;
}

/* Add a name -> slot entry; false when the index is full */
static bool
pgrl_index_insert(HTAB *index, const char *name, int slot)
{
	RlNameEntry *entry;
	char		key[RL_NAME_MAX_LEN + 1];

	memset(key, 0, sizeof(key));
	strlcpy(key, name, sizeof(key));
	entry = hash_search(index, key, HASH_ENTER_NULL, NULL);
	if (entry == NULL)
		return false;
	entry->slot = slot;
	return true;
}

static void
pgrl_index_remove(HTAB *index, const char *name)
{
	char		key[RL_NAME_MAX_LEN + 1];

	memset(key, 0, sizeof(key));
	strlcpy(key, name, sizeof(key));
	hash_search(index, key, HASH_REMOVE, NULL);
}

/* Copy configured limits and prices into a model; caller holds its lock */
static void
pgrl_set_model_config(RlModel *model, const RlModelConfig *config)
{
	memcpy(model->limit, config->limit, sizeof(model->limit));
	model->count_cached = config->count_cached;
	model->price_input = config->price_input;
	model->price_output = config->price_output;
	model->price_cached = config->price_cached;
	model->priced = config->priced;
}

/* Did the configuration of a model change?  Caller holds its lock. */
static bool
pgrl_model_config_differs(const RlModel *model, const RlModelConfig *config)
{
	return memcmp(model->limit, config->limit, sizeof(model->limit)) != 0 ||
		model->count_cached != config->count_cached ||
		model->priced != config->priced ||
		memcmp(&model->price_input, &config->price_input, sizeof(RlNumeric)) != 0 ||
		memcmp(&model->price_output, &config->price_output, sizeof(RlNumeric)) != 0 ||
		memcmp(&model->price_cached, &config->price_cached, sizeof(RlNumeric)) != 0;
}

/* Start a model in a free slot; caller holds its lock */
static void
pgrl_init_model(RlModel *model, const RlModelConfig *config)
{
	model->in_use = true;
	model->generation++;
	strlcpy(model->name, config->name, sizeof(model->name));
	model->minute_start = RL_NO_WINDOW;
	model->day_start = RL_NO_WINDOW;
	memset(model->used, 0, sizeof(model->used));
	model->granted = model->denied = model->expired = 0;
	model->overage_events = model->overage_tokens = 0;
	memset(&model->usage, 0, sizeof(model->usage));
	model->usage.day_start = RL_NO_WINDOW;
	memset(&model->usage_ended, 0, sizeof(model->usage_ended));
	model->usage_ended.day_start = RL_NO_WINDOW;
	pgrl_reset_marks(model);
	model->version++;
	pgrl_set_model_config(model, config);
}

/* Apply the models of a snapshot.  Caller holds config_lock exclusively. */
static void
pgrl_apply_models(RlConfigSnapshot *snap)
{
	bool		any_dropped = false;

	for (int i = 0; i < snap->num_models; i++)
	{
		RlModelConfig *config = &snap->models[i];

		config->slot = pgrl_lookup_slot(pgrl_model_index, config->name);
		if (config->slot >= 0)
			snap->model_kept[config->slot] = true;
	}

	/* Drop what is gone, with its open leases */
	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		RlModel    *model = &pgrl_models[slot];

		if (model->in_use && !snap->model_kept[slot])
		{
			LWLockAcquire(&model->lock, LW_EXCLUSIVE);
			pgrl_index_remove(pgrl_model_index, model->name);
			model->in_use = false;
			LWLockRelease(&model->lock);
			snap->model_dropped[slot] = true;
			any_dropped = true;
		}
	}
	if (any_dropped)
		pgrl_remove_model_leases(snap->model_dropped);

	/* Slots below free_slot are in use: nothing is freed from here on */
	for (int i = 0, free_slot = 0; i < snap->num_models; i++)
	{
		RlModelConfig *config = &snap->models[i];
		RlModel    *model;

		if (config->slot < 0)
		{
			while (free_slot < pgrl_max_models && pgrl_models[free_slot].in_use)
				free_slot++;
			if (free_slot == pgrl_max_models)
			{
				pgrl_apply_failed("has no free model slot");
				continue;
			}
			if (!pgrl_index_insert(pgrl_model_index, config->name, free_slot))
			{
				pgrl_apply_failed("model index is full");
				continue;
			}
			model = &pgrl_models[free_slot];
			LWLockAcquire(&model->lock, LW_EXCLUSIVE);
			pgrl_init_model(model, config);
			LWLockRelease(&model->lock);
			config->slot = free_slot;
		}
		else
		{
			model = &pgrl_models[config->slot];
			LWLockAcquire(&model->lock, LW_EXCLUSIVE);
			if (pgrl_model_config_differs(model, config))
			{
				pgrl_set_model_config(model, config);
				(void) pgrl_note_capacity_freed(model, RL_NOTIFY_CONFIG, pgrl_now());
			}
			LWLockRelease(&model->lock);
		}
	}
}

/* Apply job types and waits.  Caller holds config_lock exclusively. */
static void
pgrl_apply_job_types(RlConfigSnapshot *snap)
{
	for (int i = 0; i < snap->num_job_types; i++)
	{
		RlJobTypeConfig *config = &snap->job_types[i];

		config->slot = pgrl_lookup_slot(pgrl_job_type_index, config->name);
		if (config->slot >= 0)
			snap->job_type_kept[config->slot] = true;
	}
	for (int slot = 0; slot < pgrl_max_job_types; slot++)
	{
		if (pgrl_job_types[slot].in_use && !snap->job_type_kept[slot])
		{
			pgrl_index_remove(pgrl_job_type_index, pgrl_job_types[slot].name);
			pgrl_job_types[slot].in_use = false;
		}
	}
	for (int i = 0, free_slot = 0; i < snap->num_job_types; i++)
	{
		RlJobTypeConfig *config = &snap->job_types[i];
		RlJobType  *job_type;

		if (config->slot < 0)
		{
			while (free_slot < pgrl_max_job_types && pgrl_job_types[free_slot].in_use)
				free_slot++;
			if (free_slot == pgrl_max_job_types)
			{
				pgrl_apply_failed("has no free job type slot");
				continue;
			}
			if (!pgrl_index_insert(pgrl_job_type_index, config->name, free_slot))
			{
				pgrl_apply_failed("job type index is full");
				continue;
			}
			job_type = &pgrl_job_types[free_slot];
			job_type->in_use = true;
			job_type->generation++;
			strlcpy(job_type->name, config->name, sizeof(job_type->name));
			config->slot = free_slot;
		}
		job_type = &pgrl_job_types[config->slot];
		job_type->est_tokens = config->est_tokens;
		job_type->est_requests = config->est_requests;
		job_type->est_memory_kb = config->est_memory_kb;
		job_type->ratio = config->ratio;
		job_type->flexible = config->flexible;
		job_type->max_wait_us = config->max_wait_us;
	}

	for (Size i = 0; i < (Size) pgrl_max_job_types * pgrl_max_models; i++)
		pgrl_waits[i] = -1;
	for (int i = 0; i < snap->num_waits; i++)
	{
		int			job_type_slot = pgrl_lookup_slot(pgrl_job_type_index, snap->waits[i].job_type);
		int			model_slot = pgrl_lookup_slot(pgrl_model_index, snap->waits[i].model);

		if (job_type_slot >= 0 && model_slot >= 0)
			pgrl_waits[(Size) job_type_slot * pgrl_max_models + model_slot] =
				snap->waits[i].max_wait_us;
	}
}

/*
 * Forget every model, job type, lease and instance: a full load starts from
 * nothing (shared memory may hold what a standby showed, or an earlier
 * installation's state).  Caller holds config_lock exclusively.
 */
static void
pgrl_clear_shared_state(void)
{
	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		RlModel    *model = &pgrl_models[slot];

		if (!model->in_use)
			continue;
		LWLockAcquire(&model->lock, LW_EXCLUSIVE);
		pgrl_index_remove(pgrl_model_index, model->name);
		model->in_use = false;
		LWLockRelease(&model->lock);
	}
	for (int slot = 0; slot < pgrl_max_job_types; slot++)
	{
		if (!pgrl_job_types[slot].in_use)
			continue;
		pgrl_index_remove(pgrl_job_type_index, pgrl_job_types[slot].name);
		pgrl_job_types[slot].in_use = false;
	}
	pgrl_remove_model_leases(NULL);
	pgrl_forget_all_instances();
}

/*
 * Make shared memory mirror a snapshot.  A full load first clears it and
 * then restores the saved state; otherwise live counters are kept.
 * Returns whether shared memory now mirrors the tables (false only after a
 * state that cannot happen: then the next use loads everything again).
 * Caller holds config_lock exclusively.
 */
static bool
pgrl_apply_config(RlConfigSnapshot *snap, bool full)
{
	apply_failure = NULL;
	if (full)
		pgrl_clear_shared_state();
	pgrl_apply_models(snap);
	pgrl_apply_job_types(snap);
	pgrl_apply_share_config();
	if (full && snap->state != NULL)
		pgrl_restore_state(snap->state);
	if (snap->resync_seen > pgrl_state->resync_applied)
		pgrl_state->resync_applied = snap->resync_seen;
	pgrl_state->config_generation++;
	/* limits may have grown, models may be gone: waiters look again */
	pgrl_wake_all_waiters();
	pgrl_wake_worker();
	return apply_failure == NULL;
}

/* Say what applying a snapshot did, after config_lock is released */
static void
pgrl_report_apply(const RlConfigSnapshot *snap, bool full)
{
	if (apply_failure != NULL)
		elog(WARNING, "pg_ratelimit %s; it will load its configuration and state again",
			 apply_failure);
	apply_failure = NULL;
	if (full && snap->state != NULL)
		pgrl_report_restore(snap->state);
	elog(DEBUG1, "pg_ratelimit %s %d models and %d job types",
		 full ? "loaded" : "applied", snap->num_models, snap->num_job_types);
}

/*
 * Read the tables and apply them, until no commit applied something newer
 * in the meantime (the generation counter tells).  full: shared memory
 * does not hold the state (after a start, a crash or a promotion): clear
 * it and restore the saved state too; otherwise a resync, which keeps the
 * live counters.
 */
static void
pgrl_load(bool full)
{
	MemoryContext context = AllocSetContextCreate(CurrentMemoryContext, "pg_ratelimit config load",
												  ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		uint64		generation;
		RlConfigSnapshot *snap;
		bool		applied;
		bool		done;

		LWLockAcquire(&pgrl_state->config_lock, LW_SHARED);
		generation = pgrl_state->config_generation;
		/* someone else loaded it, or answered the resync */
		done = full ? pgrl_state->config_loaded :
			pgrl_state->resync_applied >= pg_atomic_read_u64(&pgrl_state->resync_requested);
		LWLockRelease(&pgrl_state->config_lock);
		if (done)
			break;

		snap = pgrl_read_config(context, full);

		LWLockAcquire(&pgrl_state->config_lock, LW_EXCLUSIVE);
		applied = pgrl_state->config_generation == generation;
		if (applied)
			pgrl_state->config_loaded = pgrl_apply_config(snap, full);
		LWLockRelease(&pgrl_state->config_lock);
		if (applied)
		{
			pgrl_report_apply(snap, full);
			/* one try: a failed apply is the next call's to retry */
			break;
		}
		MemoryContextReset(context);
	}
	MemoryContextDelete(context);
}

/*
 * Worker only, once a round: read the tables again when a resync was asked
 * for (changes no trigger saw).  It takes the lock that configuration
 * transactions hold, so that no commit applies an older read after it;
 * when one is open it tries again next round rather than wait.
 */
void
pgrl_resync_config(void)
{
	Oid			extension_oid;
	Oid			schema;
	Oid			owner;

	if (!pgrl_state->config_loaded ||
		pgrl_state->resync_applied >= pg_atomic_read_u64(&pgrl_state->resync_requested))
		return;
	if (!pgrl_extension_lookup(&extension_oid, &schema, &owner) ||
		!ConditionalLockDatabaseObject(ExtensionRelationId, extension_oid, 0, ExclusiveLock))
		return;
	pgrl_load(false);
}

/*
 * On a hot standby: rebuild shared memory from the tables as replayed so
 * far, for the views.  Nothing is admitted here, and config_loaded stays
 * false, so that a promotion starts from the then-committed state.
 */
static void
pgrl_load_on_standby(void)
{
	MemoryContext context;
	RlConfigSnapshot *snap;
	bool		applied;

	context = AllocSetContextCreate(CurrentMemoryContext, "pg_ratelimit standby load",
									ALLOCSET_DEFAULT_SIZES);
	snap = pgrl_read_config(context, true);
	LWLockAcquire(&pgrl_state->config_lock, LW_EXCLUSIVE);
	/* promoted meanwhile, and loaded as a primary: that state is live */
	applied = !pgrl_state->config_loaded;
	if (applied)
		(void) pgrl_apply_config(snap, true);
	LWLockRelease(&pgrl_state->config_lock);
	if (applied)
		pgrl_report_apply(snap, true);
	MemoryContextDelete(context);

	ereport(NOTICE,
			(errmsg("pg_ratelimit is on a standby: this is the state the primary last saved"),
			 errdetail("Acquire and release on the primary; this server would start from this state if promoted.")));
}

/*
 * Make shared memory mirror the committed configuration before a caller
 * uses it: see the top of this file.
 */
void
pgrl_ensure_config_loaded(void)
{
	if (RecoveryInProgress())
	{
		pgrl_load_on_standby();
		return;
	}
	/* an unlocked peek: it only ever becomes true, but by a full load */
	if (pgrl_state->config_loaded)
		return;

	/* Loading now would read this transaction's uncommitted changes */
	if (config_changed)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ratelimit has not loaded its configuration since the server started"),
				 errhint("Commit the configuration change first.")));
	pgrl_load(true);
}

static void
pgrl_forget_config_change(void)
{
	config_changed = false;
	forget_instances_at_commit = false;
	config_extension_oid = InvalidOid;
	pending_config = NULL;
	if (config_context)
		MemoryContextReset(config_context);
}

/* The ratio-sum rule, on the configuration about to be committed */
static void
pgrl_check_ratio_sum(const RlConfigSnapshot *snap)
{
	if (snap->ratio_sum > 1 + RL_RATIO_SUM_SLACK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("job type ratios would sum to %.6f, more than 1", snap->ratio_sum),
				 errhint("Lower the ratio of this or another job type.")));
}

/*
 * Take the lock that serializes configuration transactions, for the rest
 * of this transaction.
 */
static void
pgrl_lock_configuration_for_commit(void)
{
	Oid			schema;
	Oid			owner;

	/* the row triggers call this for every row: look the extension up once */
	if (!OidIsValid(config_extension_oid))
	{
		if (creating_extension)
			config_extension_oid = CurrentExtensionObject;
		else if (!pgrl_extension_lookup(&config_extension_oid, &schema, &owner))
			return;
	}
	LockDatabaseObject(ExtensionRelationId, config_extension_oid, 0, ExclusiveLock);
}

/* Read the new configuration at pre-commit, apply it at commit */
static void
pgrl_config_xact_callback(XactEvent event, void *arg)
{
	if (!config_changed)
		return;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			/* the extension may have been re-created since: look again */
			config_extension_oid = InvalidOid;
			pgrl_lock_configuration_for_commit();
			/* make the last statement's changes visible to the read */
			CommandCounterIncrement();
			pending_config = pgrl_read_config(config_context, !pgrl_state->config_loaded);
			pgrl_check_ratio_sum(pending_config);
			break;
		case XACT_EVENT_COMMIT:
			if (pending_config != NULL)
			{
				bool		full;

				LWLockAcquire(&pgrl_state->config_lock, LW_EXCLUSIVE);
				full = !pgrl_state->config_loaded && pending_config->state != NULL;
				pgrl_state->config_loaded = pgrl_apply_config(pending_config, full);
				LWLockRelease(&pgrl_state->config_lock);
				pgrl_report_apply(pending_config, full);
			}
			if (forget_instances_at_commit)
				pgrl_forget_all_instances();
			pgrl_forget_config_change();
			break;
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot prepare a transaction that changed the pg_ratelimit configuration")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			pgrl_forget_config_change();
			break;
		default:
			break;
	}
}

void
pgrl_install_config_callbacks(void)
{
	if (callbacks_registered)
		return;
	config_context = AllocSetContextCreate(TopMemoryContext, "pg_ratelimit config",
										   ALLOCSET_DEFAULT_SIZES);
	RegisterXactCallback(pgrl_config_xact_callback, NULL);
	callbacks_registered = true;
}

/*
 * Note that this transaction changes the configuration, and wait for any
 * other transaction doing so to finish.
 */
static void
pgrl_mark_config_changed(void)
{
	pgrl_require_library();
	pgrl_lock_configuration_for_commit();
	pgrl_install_config_callbacks();
	config_changed = true;
}

/*
 * Trigger on the configuration tables: row-level for INSERT, UPDATE and
 * DELETE (logical replication fires only those), statement-level for
 * TRUNCATE.  A row trigger passes its row through unchanged.
 */
Datum
rl_config_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("rl_config_trigger must be called as a trigger")));
	pgrl_mark_config_changed();
	if (!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		PG_RETURN_POINTER(NULL);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		PG_RETURN_POINTER(trigdata->tg_newtuple);
	PG_RETURN_POINTER(trigdata->tg_trigtuple);
}

/*
 * Called by the install script: at commit, make shared memory mirror the
 * (new, empty) tables and forget the instances of an earlier installation.
 * Without the preloaded library there is nothing to do.
 */
Datum
rl_internal_resync(PG_FUNCTION_ARGS)
{
	if (pgrl_state != NULL)
	{
		config_extension_oid = InvalidOid;
		pgrl_mark_config_changed();
		forget_instances_at_commit = true;
	}
	PG_RETURN_VOID();
}

/* The configuration tables, as the worker last found them (worker only) */
static const char *const config_tables[] = {"rl_model", "rl_job_type", "rl_job_type_wait"};
static Oid	config_relids[lengthof(config_tables)];
static bool config_relation_changed = false;

/*
 * Relcache invalidation callback of the worker.  Disabling or enabling a
 * trigger on a configuration table (as pg_restore --disable-triggers does
 * around its COPY), truncating it or a reset of the invalidation queue
 * (relid InvalidOid) may mean changes no trigger saw: the next round reads
 * the tables again.  No catalog access here.
 */
void
pgrl_config_relcache_callback(Datum arg, Oid relid)
{
	if (!OidIsValid(relid))
	{
		config_relation_changed = true;
		return;
	}
	for (int i = 0; i < (int) lengthof(config_relids); i++)
		if (relid == config_relids[i])
			config_relation_changed = true;
}

/* Are the extension's triggers on this table all there and firing always? */
static bool
pgrl_config_triggers_enabled(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TriggerDesc *triggers = rel->trigdesc;
	int			ours = 0;
	bool		enabled = true;

	for (int i = 0; triggers != NULL && i < triggers->numtriggers; i++)
	{
		Trigger    *trigger = &triggers->triggers[i];

		if (strncmp(trigger->tgname, "rl_", 3) != 0)
			continue;
		ours++;
		if (trigger->tgenabled != TRIGGER_FIRES_ALWAYS)
			enabled = false;
	}
	table_close(rel, AccessShareLock);
	return enabled && ours > 0;
}

/* How often the worker repeats its warning about the triggers */
#define RL_TRIGGER_WARNING_INTERVAL_US	(10 * 60 * USECS_PER_SEC)

/*
 * Once per worker round, in its transaction: ask for a resync when a
 * configuration table may have changed behind the triggers' back, and on
 * every round while any of the triggers is not ENABLE ALWAYS.
 */
void
pgrl_check_config_triggers(void)
{
	static TimestampTz warned_at = 0;
	Oid			extension_oid;
	Oid			schema;
	Oid			owner;
	bool		all_enabled = true;

	if (!pgrl_extension_lookup(&extension_oid, &schema, &owner))
		return;
	for (int i = 0; i < (int) lengthof(config_tables); i++)
	{
		config_relids[i] = get_relname_relid(config_tables[i], schema);
		if (!OidIsValid(config_relids[i]) || !pgrl_config_triggers_enabled(config_relids[i]))
			all_enabled = false;
	}
	if (all_enabled)
		warned_at = 0;
	else if (GetCurrentTimestamp() >= warned_at + RL_TRIGGER_WARNING_INTERVAL_US)
	{
		ereport(WARNING,
				(errmsg("pg_ratelimit configuration triggers are not ENABLE ALWAYS"),
				 errdetail("The worker reads the configuration tables again every round until they are."),
				 errhint("For each of rl_model, rl_job_type and rl_job_type_wait: ALTER TABLE rl_model ENABLE ALWAYS TRIGGER rl_model_changed, ENABLE ALWAYS TRIGGER rl_model_truncated.")));
		warned_at = GetCurrentTimestamp();
	}
	if (config_relation_changed || !all_enabled)
	{
		config_relation_changed = false;
		pgrl_request_config_resync();
	}
}

/* Called by the configuration functions: fail early without the library */
PG_FUNCTION_INFO_V1(rl_internal_check);
Datum
rl_internal_check(PG_FUNCTION_ARGS)
{
	pgrl_require_library();
	PG_RETURN_VOID();
}
