/*-------------------------------------------------------------------------
 *
 * config.c
 *		Keeping shared memory in step with the configuration tables.
 *
 * The tables rl_model, rl_job_type and rl_job_type_wait are the source of
 * truth.  A statement-level trigger on each marks the transaction as having
 * changed the configuration and takes an exclusive lock on the extension
 * object, so configuration transactions run one at a time.  At pre-commit
 * the whole configuration is read back (where errors, such as too many
 * models, can still abort the transaction); at commit it is applied to
 * shared memory in one step under config_lock, which cannot fail because
 * every slot is preallocated.  A rollback applies nothing.
 *
 * After a server start shared memory is empty; the first caller loads the
 * configuration from the tables.  A configuration generation counter makes
 * that load lose any race against a commit that applies a newer state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "instance.h"
#include "persist.h"
#include "pg_ratelimit.h"
#include "wait.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(rl_config_trigger);
PG_FUNCTION_INFO_V1(rl_internal_resync);

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
	RlStateSnapshot *state;		/* saved state, read when not yet loaded */
	bool	   *model_kept;		/* [max_models] */
	bool	   *model_dropped;	/* [max_models] */
	bool	   *job_type_kept;	/* [max_job_types] */
} RlConfigSnapshot;

/* This transaction changed the configuration */
static bool config_changed = false;

/* Read at pre-commit, applied at commit */
static RlConfigSnapshot *pending_config = NULL;
static MemoryContext config_context = NULL;

static bool callbacks_registered = false;

/* Column value as int64, or RL_UNLIMITED when NULL */
static int64
rl_spi_int64(HeapTuple tuple, TupleDesc desc, int column, int64 if_null)
{
	bool		isnull;
	Datum		value = SPI_getbinval(tuple, desc, column, &isnull);

	return isnull ? if_null : DatumGetInt64(value);
}

/* Copy a numeric column into an inline buffer; true when above zero */
static bool
rl_spi_numeric(HeapTuple tuple, TupleDesc desc, int column, RlNumeric *dest,
			   const char *model)
{
	bool		isnull;
	Datum		value = SPI_getbinval(tuple, desc, column, &isnull);
	Numeric		num;

	if (isnull)
		value = DirectFunctionCall1(int8_numeric, Int64GetDatum(0));
	num = DatumGetNumeric(value);
	if (!rl_numeric_store(dest, num))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("a price of model \"%s\" has too many digits", model)));
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(num),
											 NumericGetDatum(int64_to_numeric(0)))) > 0;
}

/* Run a query, erroring when it returns more rows than there is room for */
static uint64
rl_spi_select(const char *sql, int room, const char *what, const char *setting)
{
	if (SPI_execute(sql, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_ratelimit could not read its configuration: %s", sql);
	if (SPI_processed > (uint64) room)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many pg_ratelimit %s", what),
				 errdetail("The configuration has " UINT64_FORMAT " %s; %s is %d.",
						   SPI_processed, what, setting, room),
				 errhint("Drop some, or raise %s and restart the server.", setting)));
	return SPI_processed;
}

/*
 * Read the whole configuration from the tables into memory of the given
 * context, and the saved state too when shared memory has not been loaded
 * since the server started.  Missing extension (dropped in this
 * transaction): empty.
 */
static RlConfigSnapshot *
rl_read_config(MemoryContext context)
{
	RlConfigSnapshot *snap;
	MemoryContext oldcontext;
	char	   *schema = NULL;
	StringInfoData sql;
	bool		pushed_snapshot = false;

	snap = MemoryContextAllocZero(context, sizeof(RlConfigSnapshot));
	snap->model_kept = MemoryContextAllocZero(context, sizeof(bool) * rl_max_models);
	snap->model_dropped = MemoryContextAllocZero(context, sizeof(bool) * rl_max_models);
	snap->job_type_kept = MemoryContextAllocZero(context, sizeof(bool) * rl_max_job_types);

	/* At pre-commit no snapshot is active */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed_snapshot = true;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (SPI_execute("SELECT n.nspname FROM pg_catalog.pg_extension e"
					" JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
					" WHERE e.extname = 'pg_ratelimit'", false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
		schema = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

	if (schema != NULL)
	{
		const char *qschema = quote_identifier(schema);
		uint64		n;

		initStringInfo(&sql);
		appendStringInfo(&sql,
						 "SELECT model, rpd, tpd, rpm, tpm, max_concurrent, count_cached,"
						 " price_input, price_output, price_cached FROM %s.rl_model",
						 qschema);
		n = rl_spi_select(sql.data, rl_max_models, "models", "ratelimit.max_models");
		snap->num_models = n;
		snap->models = MemoryContextAllocZero(context, sizeof(RlModelConfig) * (n + 1));
		for (uint64 i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			RlModelConfig *m = &snap->models[i];
			bool		isnull;

			strlcpy(m->name, SPI_getvalue(tup, desc, 1), sizeof(m->name));
			for (int d = 0; d < RL_NUM_DIMS; d++)
				m->limit[d] = rl_spi_int64(tup, desc, 2 + d, RL_UNLIMITED);
			m->count_cached = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull)) || isnull;
			m->priced = rl_spi_numeric(tup, desc, 8, &m->price_input, m->name);
			m->priced |= rl_spi_numeric(tup, desc, 9, &m->price_output, m->name);
			m->priced |= rl_spi_numeric(tup, desc, 10, &m->price_cached, m->name);
		}

		resetStringInfo(&sql);
		appendStringInfo(&sql,
						 "SELECT job_type, est_tokens, est_requests, est_memory_kb, ratio,"
						 " flexible, (extract(epoch FROM max_wait) * 1000000)::bigint"
						 " FROM %s.rl_job_type", qschema);
		n = rl_spi_select(sql.data, rl_max_job_types, "job types",
						  "ratelimit.max_job_types");
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
			j->est_tokens = rl_spi_int64(tup, desc, 2, 0);
			j->est_requests = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
			if (isnull)
				j->est_requests = 1;
			j->est_memory_kb = rl_spi_int64(tup, desc, 4, 0);
			ratio = SPI_getbinval(tup, desc, 5, &isnull);
			j->ratio = isnull ? -1.0 : DatumGetFloat8(ratio);
			j->flexible = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull)) || isnull;
			j->max_wait_us = rl_spi_int64(tup, desc, 7, -1);
		}

		resetStringInfo(&sql);
		appendStringInfo(&sql,
						 "SELECT job_type, model,"
						 " (extract(epoch FROM max_wait) * 1000000)::bigint"
						 " FROM %s.rl_job_type_wait", qschema);
		n = rl_spi_select(sql.data, rl_max_job_types * rl_max_models,
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
			w->max_wait_us = rl_spi_int64(tup, desc, 3, -1);
		}

		if (!rl_state->config_loaded)
			snap->state = rl_read_state(context, qschema);
	}

	oldcontext = MemoryContextSwitchTo(context);
	SPI_finish();
	MemoryContextSwitchTo(oldcontext);
	if (pushed_snapshot)
		PopActiveSnapshot();
	return snap;
}

/* Add a name -> slot entry; the index is preallocated, so this cannot fail */
static void
rl_index_insert(HTAB *index, const char *name, int slot)
{
	RlNameEntry *entry;
	char		key[RL_NAME_MAX_LEN + 1];

	memset(key, 0, sizeof(key));
	strlcpy(key, name, sizeof(key));
	entry = hash_search(index, key, HASH_ENTER_NULL, NULL);
	if (entry != NULL)
		entry->slot = slot;
	else
		elog(WARNING, "pg_ratelimit index is full");
}

static void
rl_index_remove(HTAB *index, const char *name)
{
	char		key[RL_NAME_MAX_LEN + 1];

	memset(key, 0, sizeof(key));
	strlcpy(key, name, sizeof(key));
	hash_search(index, key, HASH_REMOVE, NULL);
}

/* Copy configured limits and prices into a model; caller holds its lock */
static void
rl_set_model_config(RlModel *model, const RlModelConfig *config)
{
	memcpy(model->limit, config->limit, sizeof(model->limit));
	model->count_cached = config->count_cached;
	model->price_input = config->price_input;
	model->price_output = config->price_output;
	model->price_cached = config->price_cached;
	model->priced = config->priced;
}

/* Apply the models of a snapshot.  Caller holds config_lock exclusively. */
static void
rl_apply_models(RlConfigSnapshot *snap)
{
	bool		any_dropped = false;

	for (int i = 0; i < snap->num_models; i++)
	{
		RlModelConfig *config = &snap->models[i];

		config->slot = rl_lookup_slot(rl_model_index, config->name);
		if (config->slot >= 0)
			snap->model_kept[config->slot] = true;
	}

	/* Drop what is gone, with its open leases */
	for (int slot = 0; slot < rl_max_models; slot++)
	{
		RlModel    *model = &rl_models[slot];

		if (model->in_use && !snap->model_kept[slot])
		{
			LWLockAcquire(&model->lock, LW_EXCLUSIVE);
			rl_index_remove(rl_model_index, model->name);
			model->in_use = false;
			LWLockRelease(&model->lock);
			snap->model_dropped[slot] = true;
			any_dropped = true;
		}
	}
	if (any_dropped)
		rl_remove_model_leases(snap->model_dropped);

	/* Slots below free_slot are in use: nothing is freed from here on */
	for (int i = 0, free_slot = 0; i < snap->num_models; i++)
	{
		RlModelConfig *config = &snap->models[i];
		RlModel    *model;

		if (config->slot < 0)
		{
			int			slot;

			while (free_slot < rl_max_models && rl_models[free_slot].in_use)
				free_slot++;
			slot = free_slot;
			if (slot == rl_max_models)
			{
				/* cannot happen: the read checked the count */
				elog(WARNING, "pg_ratelimit has no free model slot");
				continue;
			}
			model = &rl_models[slot];
			LWLockAcquire(&model->lock, LW_EXCLUSIVE);
			model->in_use = true;
			model->generation++;
			strlcpy(model->name, config->name, sizeof(model->name));
			model->minute_start = 0;
			model->day_start = 0;
			memset(model->used, 0, sizeof(model->used));
			model->granted = model->denied = model->expired = 0;
			model->overage_events = model->overage_tokens = 0;
			memset(&model->usage, 0, sizeof(model->usage));
			memset(&model->usage_ended, 0, sizeof(model->usage_ended));
			model->version++;
			rl_set_model_config(model, config);
			LWLockRelease(&model->lock);
			rl_index_insert(rl_model_index, config->name, slot);
			config->slot = slot;
		}
		else
		{
			model = &rl_models[config->slot];
			LWLockAcquire(&model->lock, LW_EXCLUSIVE);
			rl_set_model_config(model, config);
			(void) rl_note_capacity_freed(model, RL_NOTIFY_CONFIG, rl_now());
			LWLockRelease(&model->lock);
		}
	}
}

/* Apply job types and waits.  Caller holds config_lock exclusively. */
static void
rl_apply_job_types(RlConfigSnapshot *snap)
{
	for (int i = 0; i < snap->num_job_types; i++)
	{
		RlJobTypeConfig *config = &snap->job_types[i];

		config->slot = rl_lookup_slot(rl_job_type_index, config->name);
		if (config->slot >= 0)
			snap->job_type_kept[config->slot] = true;
	}
	for (int slot = 0; slot < rl_max_job_types; slot++)
	{
		if (rl_job_types[slot].in_use && !snap->job_type_kept[slot])
		{
			rl_index_remove(rl_job_type_index, rl_job_types[slot].name);
			rl_job_types[slot].in_use = false;
		}
	}
	for (int i = 0, free_slot = 0; i < snap->num_job_types; i++)
	{
		RlJobTypeConfig *config = &snap->job_types[i];
		RlJobType  *job_type;

		if (config->slot < 0)
		{
			int			slot;

			while (free_slot < rl_max_job_types && rl_job_types[free_slot].in_use)
				free_slot++;
			slot = free_slot;
			if (slot == rl_max_job_types)
			{
				elog(WARNING, "pg_ratelimit has no free job type slot");
				continue;
			}
			job_type = &rl_job_types[slot];
			job_type->in_use = true;
			job_type->generation++;
			strlcpy(job_type->name, config->name, sizeof(job_type->name));
			rl_index_insert(rl_job_type_index, config->name, slot);
			config->slot = slot;
		}
		job_type = &rl_job_types[config->slot];
		job_type->est_tokens = config->est_tokens;
		job_type->est_requests = config->est_requests;
		job_type->est_memory_kb = config->est_memory_kb;
		job_type->ratio = config->ratio;
		job_type->flexible = config->flexible;
		job_type->max_wait_us = config->max_wait_us;
	}

	for (Size i = 0; i < (Size) rl_max_job_types * rl_max_models; i++)
		rl_waits[i] = -1;
	for (int i = 0; i < snap->num_waits; i++)
	{
		int			job_type_slot = rl_lookup_slot(rl_job_type_index, snap->waits[i].job_type);
		int			model_slot = rl_lookup_slot(rl_model_index, snap->waits[i].model);

		if (job_type_slot >= 0 && model_slot >= 0)
			rl_waits[(Size) job_type_slot * rl_max_models + model_slot] =
				snap->waits[i].max_wait_us;
	}
}

/* Make shared memory mirror a snapshot.  Caller holds config_lock exclusively. */
static void
rl_apply_config(RlConfigSnapshot *snap)
{
	rl_apply_models(snap);
	rl_apply_job_types(snap);
	rl_apply_share_config();
	if (!rl_state->config_loaded && snap->state != NULL)
		rl_restore_state(snap->state);
	rl_state->config_loaded = true;
	rl_state->config_generation++;
	/* limits may have grown, models may be gone: waiters look again */
	rl_wake_all_waiters();
	rl_wake_worker();
}

/*
 * Load the configuration into shared memory if nothing has loaded it since
 * the server started.
 */
void
rl_ensure_config_loaded(void)
{
	MemoryContext context;

	if (rl_state->config_loaded)
		return;

	/* Loading now would read this transaction's uncommitted changes */
	if (config_changed)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ratelimit has not loaded its configuration since the server started"),
				 errhint("Commit the configuration change first.")));

	context = AllocSetContextCreate(CurrentMemoryContext, "pg_ratelimit config load",
									ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		uint64		generation;
		RlConfigSnapshot *snap;
		bool		done;

		LWLockAcquire(&rl_state->config_lock, LW_SHARED);
		generation = rl_state->config_generation;
		done = rl_state->config_loaded;
		LWLockRelease(&rl_state->config_lock);
		if (done)
			break;

		snap = rl_read_config(context);

		/* A commit that applied a newer state in the meantime wins */
		LWLockAcquire(&rl_state->config_lock, LW_EXCLUSIVE);
		if (!rl_state->config_loaded && rl_state->config_generation == generation)
		{
			rl_apply_config(snap);
			elog(DEBUG1, "pg_ratelimit loaded %d models and %d job types",
				 snap->num_models, snap->num_job_types);
		}
		done = rl_state->config_loaded;
		LWLockRelease(&rl_state->config_lock);
		MemoryContextReset(context);
		if (done)
			break;
	}
	MemoryContextDelete(context);
}

static void
rl_forget_config_change(void)
{
	config_changed = false;
	pending_config = NULL;
	if (config_context)
		MemoryContextReset(config_context);
}

/* Read the new configuration at pre-commit, apply it at commit */
static void
rl_config_xact_callback(XactEvent event, void *arg)
{
	if (!config_changed)
		return;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			pending_config = rl_read_config(config_context);
			break;
		case XACT_EVENT_COMMIT:
			if (pending_config != NULL)
			{
				LWLockAcquire(&rl_state->config_lock, LW_EXCLUSIVE);
				rl_apply_config(pending_config);
				LWLockRelease(&rl_state->config_lock);
			}
			rl_forget_config_change();
			break;
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot prepare a transaction that changed the pg_ratelimit configuration")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			rl_forget_config_change();
			break;
		default:
			break;
	}
}

void
rl_install_config_callbacks(void)
{
	if (callbacks_registered)
		return;
	config_context = AllocSetContextCreate(TopMemoryContext, "pg_ratelimit config",
										   ALLOCSET_DEFAULT_SIZES);
	RegisterXactCallback(rl_config_xact_callback, NULL);
	callbacks_registered = true;
}

/*
 * Note that this transaction changes the configuration, and wait for any
 * other transaction doing so to finish.
 */
static void
rl_mark_config_changed(void)
{
	Oid			extension_oid;

	rl_require_library();

	extension_oid = creating_extension ? CurrentExtensionObject
		: get_extension_oid("pg_ratelimit", false);
	LockDatabaseObject(ExtensionRelationId, extension_oid, 0, ExclusiveLock);

	rl_install_config_callbacks();
	config_changed = true;
}

/* Statement trigger on the configuration tables */
Datum
rl_config_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("rl_config_trigger must be called as a trigger")));
	rl_mark_config_changed();
	PG_RETURN_POINTER(NULL);
}

/*
 * Called by the install script: make shared memory mirror the (new, empty)
 * tables at commit, and forget the instances of an earlier installation.
 * Without the preloaded library there is nothing to do.
 */
Datum
rl_internal_resync(PG_FUNCTION_ARGS)
{
	if (rl_state != NULL)
	{
		rl_mark_config_changed();
		rl_forget_all_instances();
	}
	PG_RETURN_VOID();
}

/* Called by the configuration functions: fail early without the library */
PG_FUNCTION_INFO_V1(rl_internal_check);
Datum
rl_internal_check(PG_FUNCTION_ARGS)
{
	rl_require_library();
	PG_RETURN_VOID();
}
