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
 *   Applying goes through each part's owner: the ledger applies the models
 *   and shares (ledger.c), catalog.c the job types and waits, grant.c
 *   discards the leases of dropped models.  config_lock is catalog.c's.
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

#include "catalog.h"
#include "config.h"
#include "extsql.h"
#include "grant.h"
#include "instance.h"
#include "ledger.h"
#include "persist.h"
#include "settings.h"
#include "wait.h"

/* Tolerance of the ratio-sum rule: float8 ratios such as 0.1 + 0.9 */
#define RL_RATIO_SUM_SLACK		1e-9

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
	RlWaitSetting *wait_settings;	/* scratch: the waits, resolved */
	RlStateSnapshot *state;		/* saved state, when read for a full load */
	uint64		resync_seen;	/* resync requests this read answers */
	bool	   *model_dropped;	/* [max_models] */
	RlLeaseRemoval *removal;	/* scratch: leases of dropped models */
} RlConfigSnapshot;

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

	/*
	 * the table's checks refuse these; a row that bypassed them is refused
	 * too
	 */
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

/* The columns of rl_model that hold each limit */
static const char *const limit_columns[RL_NUM_DIMS] = {
	[RL_DIM_RPD] = "rpd",
	[RL_DIM_TPD] = "tpd",
	[RL_DIM_RPM] = "rpm",
	[RL_DIM_TPM] = "tpm",
	[RL_DIM_ITPM] = "itpm",
	[RL_DIM_OTPM] = "otpm",
	[RL_DIM_CONCURRENCY] = "max_concurrent"
};

/* Read rl_model */
static void
pgrl_read_models(RlConfigSnapshot *snap, MemoryContext context, const RlExtSql *session)
{
	StringInfoData sql;
	TupleDesc	desc;
	uint64		n;
	int			col_name;
	int			col_limit[RL_NUM_DIMS];
	int			col_count_cached;
	int			col_window_type;
	int			col_price_input;
	int			col_price_output;
	int			col_price_cached;

	initStringInfo(&sql);
	/* window_type, itpm and otpm came with 1.2: every model was fixed before */
	appendStringInfo(&sql,
					 "SELECT model, rpd, tpd, rpm, tpm, max_concurrent, count_cached,"
					 " price_input, price_output, price_cached, %s"
					 " FROM %s.rl_model",
					 pgrl_version_at_least(session->version, 1, 2) ?
					 "window_type, itpm, otpm" :
					 "'fixed'::text AS window_type, NULL::bigint AS itpm, NULL::bigint AS otpm",
					 session->qschema);
	n = pgrl_spi_select(sql.data, pgrl_max_models, "models", "ratelimit.max_models");
	desc = SPI_tuptable->tupdesc;
	col_name = pgrl_spi_column(desc, "model");
	for (int d = 0; d < RL_NUM_DIMS; d++)
		col_limit[d] = pgrl_spi_column(desc, limit_columns[d]);
	col_count_cached = pgrl_spi_column(desc, "count_cached");
	col_window_type = pgrl_spi_column(desc, "window_type");
	col_price_input = pgrl_spi_column(desc, "price_input");
	col_price_output = pgrl_spi_column(desc, "price_output");
	col_price_cached = pgrl_spi_column(desc, "price_cached");
	snap->num_models = n;
	snap->models = MemoryContextAllocZero(context, sizeof(RlModelConfig) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		RlModelConfig *m = &snap->models[i];
		bool		isnull;

		strlcpy(m->name, SPI_getvalue(tup, desc, col_name), sizeof(m->name));
		for (int d = 0; d < RL_NUM_DIMS; d++)
			m->limit[d] = pgrl_spi_int64(tup, desc, col_limit[d], RL_UNLIMITED);
		m->count_cached = DatumGetBool(SPI_getbinval(tup, desc, col_count_cached,
													 &isnull)) || isnull;
		/* the table's CHECK allows only these two */
		m->window_type = strcmp(SPI_getvalue(tup, desc, col_window_type), "bucket") == 0 ?
			RL_WINDOW_BUCKET : RL_WINDOW_FIXED;
		m->priced = pgrl_spi_numeric(tup, desc, col_price_input, &m->price_input, m->name);
		m->priced |= pgrl_spi_numeric(tup, desc, col_price_output, &m->price_output,
									  m->name);
		m->priced |= pgrl_spi_numeric(tup, desc, col_price_cached, &m->price_cached,
									  m->name);
	}
}

/* Read rl_job_type and rl_job_type_wait */
static void
pgrl_read_job_types(RlConfigSnapshot *snap, MemoryContext context, const char *qschema)
{
	StringInfoData sql;
	TupleDesc	desc;
	uint64		n;

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT job_type, est_tokens, est_requests, est_memory_kb, ratio,"
					 " flexible,"
					 " (extract(epoch FROM max_wait) * 1000000::numeric)::bigint AS max_wait_us"
					 " FROM %s.rl_job_type", qschema);
	n = pgrl_spi_select(sql.data, pgrl_max_job_types, "job types", "ratelimit.max_job_types");
	desc = SPI_tuptable->tupdesc;
	snap->num_job_types = n;
	snap->job_types = MemoryContextAllocZero(context, sizeof(RlJobTypeConfig) * (n + 1));
	if (n > 0)
	{
		int			col_name = pgrl_spi_column(desc, "job_type");
		int			col_est_tokens = pgrl_spi_column(desc, "est_tokens");
		int			col_est_requests = pgrl_spi_column(desc, "est_requests");
		int			col_est_memory = pgrl_spi_column(desc, "est_memory_kb");
		int			col_ratio = pgrl_spi_column(desc, "ratio");
		int			col_flexible = pgrl_spi_column(desc, "flexible");
		int			col_max_wait = pgrl_spi_column(desc, "max_wait_us");

		for (uint64 i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			RlJobTypeConfig *j = &snap->job_types[i];
			bool		isnull;
			Datum		ratio;

			strlcpy(j->name, SPI_getvalue(tup, desc, col_name), sizeof(j->name));
			j->est_tokens = pgrl_spi_int64(tup, desc, col_est_tokens, 0);
			j->est_requests = DatumGetInt32(SPI_getbinval(tup, desc, col_est_requests, &isnull));
			if (isnull)
				j->est_requests = 1;
			j->est_memory_kb = pgrl_spi_int64(tup, desc, col_est_memory, 0);
			ratio = SPI_getbinval(tup, desc, col_ratio, &isnull);
			j->ratio = isnull ? -1.0 : DatumGetFloat8(ratio);
			if (j->ratio >= 0)
				snap->ratio_sum += j->ratio;
			j->flexible = DatumGetBool(SPI_getbinval(tup, desc, col_flexible, &isnull)) || isnull;
			j->max_wait_us = pgrl_spi_int64(tup, desc, col_max_wait, -1);
		}
	}

	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT job_type, model,"
					 " (extract(epoch FROM max_wait) * 1000000::numeric)::bigint AS max_wait_us"
					 " FROM %s.rl_job_type_wait", qschema);
	n = pgrl_spi_select(sql.data, pgrl_max_job_types * pgrl_max_models,
						"per-model waits", "ratelimit.max_models");
	desc = SPI_tuptable->tupdesc;
	snap->num_waits = n;
	snap->waits = MemoryContextAllocZero(context, sizeof(RlWaitConfig) * (n + 1));
	snap->wait_settings = MemoryContextAllocZero(context, sizeof(RlWaitSetting) * (n + 1));
	if (n > 0)
	{
		int			col_job_type = pgrl_spi_column(desc, "job_type");
		int			col_model = pgrl_spi_column(desc, "model");
		int			col_max_wait = pgrl_spi_column(desc, "max_wait_us");

		for (uint64 i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			RlWaitConfig *w = &snap->waits[i];

			strlcpy(w->job_type, SPI_getvalue(tup, desc, col_job_type), sizeof(w->job_type));
			strlcpy(w->model, SPI_getvalue(tup, desc, col_model), sizeof(w->model));
			w->max_wait_us = pgrl_spi_int64(tup, desc, col_max_wait, -1);
		}
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
	snap->model_dropped = MemoryContextAllocZero(context, sizeof(bool) * pgrl_max_models);
	/* what applying needs is allocated now: nothing is, under config_lock */
	snap->removal = MemoryContextAlloc(context, sizeof(RlLeaseRemoval));

	/* requests made before this read are answered by it */
	snap->resync_seen = pgrl_config_resync_requested();

	if (!pgrl_extsql_begin(&session, true))
		return snap;
	pgrl_read_models(snap, context, &session);
	pgrl_read_job_types(snap, context, session.qschema);
	if (with_state)
		snap->state = pgrl_read_state(context, &session);
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
	pgrl_config_request_resync();
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

/*
 * Apply the models, job types, shares and waits of a snapshot.  Caller
 * holds config_lock exclusively.
 */
static void
pgrl_apply_snapshot(RlConfigSnapshot *snap)
{
	int			num_waits = 0;

	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	memset(snap->model_dropped, 0, sizeof(bool) * pgrl_max_models);
	if (!pgrl_ledger_apply_models(snap->models, snap->num_models, snap->model_dropped))
		pgrl_apply_failed("has no free model slot");

	/*
	 * The open leases of dropped models go with them.  New models may have
	 * taken the freed slots already: config_lock, held exclusively, keeps
	 * every acquire out until the old leases are gone.
	 */
	for (int slot = 0; slot < pgrl_max_models; slot++)
		if (snap->model_dropped[slot])
		{
			pgrl_discard_leases(snap->model_dropped, snap->removal);
			break;
		}
	if (!pgrl_catalog_apply_job_types(snap->job_types, snap->num_job_types))
		pgrl_apply_failed("has no free job type slot");
	pgrl_ledger_apply_shares();
	for (int i = 0; i < snap->num_waits; i++)
	{
		RlWaitSetting *setting = &snap->wait_settings[num_waits];

		setting->job_type_slot = pgrl_job_type_slot(snap->waits[i].job_type);
		setting->model_slot = pgrl_model_slot(snap->waits[i].model);
		setting->max_wait_us = snap->waits[i].max_wait_us;
		if (setting->job_type_slot >= 0 && setting->model_slot >= 0)
			num_waits++;
	}
	pgrl_catalog_apply_waits(snap->wait_settings, num_waits);
}

/*
 * Forget every model, job type, lease and instance: a full load starts from
 * nothing (shared memory may hold what a standby showed, or an earlier
 * installation's state).  Caller holds config_lock exclusively.
 */
static void
pgrl_clear_shared_state(RlConfigSnapshot *snap)
{
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	pgrl_ledger_clear();
	pgrl_catalog_clear();
	pgrl_discard_leases(NULL, snap->removal);
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
	Assert(pgrl_config_lock_held(LW_EXCLUSIVE));
	apply_failure = NULL;
	if (full)
		pgrl_clear_shared_state(snap);
	pgrl_apply_snapshot(snap);
	if (full && snap->state != NULL)
		pgrl_restore_saved_state(snap->state);
	pgrl_config_applied(snap->resync_seen);
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

		pgrl_config_lock(LW_SHARED);
		generation = pgrl_config_generation();
		/* someone else loaded it, or answered the resync */
		done = full ? pgrl_config_loaded() : !pgrl_config_resync_pending();
		pgrl_config_unlock();
		if (done)
			break;

		snap = pgrl_read_config(context, full);

		pgrl_config_lock(LW_EXCLUSIVE);
		applied = pgrl_config_generation() == generation;
		if (applied)
			pgrl_config_set_loaded(pgrl_apply_config(snap, full));
		pgrl_config_unlock();
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

	if (!pgrl_config_loaded() || !pgrl_config_resync_pending())
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
	pgrl_config_lock(LW_EXCLUSIVE);
	/* promoted meanwhile, and loaded as a primary: that state is live */
	applied = !pgrl_config_loaded();
	if (applied)
		(void) pgrl_apply_config(snap, true);
	pgrl_config_unlock();
	if (applied)
		pgrl_report_apply(snap, true);
	MemoryContextDelete(context);

	ereport(NOTICE,
			(errmsg("pg_ratelimit is on a standby: this is the state the primary last saved"),
			 errdetail("Acquire and release on the primary; this server would start from this state if promoted.")));
}

/*
 * Make shared memory mirror the committed configuration before a caller
 * uses it: see the top of this file.  After a start, a crash or a
 * promotion (and on every call on a standby) this reads the tables and the
 * saved state through SPI and restores it.
 */
void
pgrl_config_load_if_needed(void)
{
	if (RecoveryInProgress())
	{
		pgrl_load_on_standby();
		return;
	}
	/* an unlocked peek: it only ever becomes true, but by a full load */
	if (pgrl_config_loaded())
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
			pending_config = pgrl_read_config(config_context, !pgrl_config_loaded());
			pgrl_check_ratio_sum(pending_config);
			break;
		case XACT_EVENT_COMMIT:
			if (pending_config != NULL)
			{
				bool		full;

				pgrl_config_lock(LW_EXCLUSIVE);
				full = !pgrl_config_loaded() && pending_config->state != NULL;
				pgrl_config_set_loaded(pgrl_apply_config(pending_config, full));
				pgrl_config_unlock();
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

static void
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
 * A trigger saw this transaction change the configuration (rl_config_trigger):
 * wait for any other transaction doing so to finish, and apply the tables
 * at commit.
 */
void
pgrl_config_changed_in_xact(void)
{
	pgrl_lock_configuration_for_commit();
	pgrl_install_config_callbacks();
	config_changed = true;
}

/*
 * The install script ran (rl_internal_resync): at commit, make shared
 * memory mirror the (new, empty) tables and forget the instances of an
 * earlier installation.
 */
void
pgrl_config_reinstalled_in_xact(void)
{
	config_extension_oid = InvalidOid;
	pgrl_config_changed_in_xact();
	forget_instances_at_commit = true;
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

	/*
	 * Keep the lock to the end of the round's transaction: an update of the
	 * extension that moves its tables (pg_ratelimit--1.0--1.1.sql locks them
	 * first) then waits for a round that has looked up their schema to end.
	 */
	table_close(rel, NoLock);
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
	bool		all_found = true;

	if (!pgrl_extension_lookup(&extension_oid, &schema, &owner))
		return;
	for (int i = 0; i < (int) lengthof(config_tables); i++)
	{
		/*
		 * A table missing from the extension's schema was just moved (ALTER
		 * EXTENSION UPDATE, which this round waited for in table_open) or
		 * dropped: look again next round, no warning.
		 */
		config_relids[i] = get_relname_relid(config_tables[i], schema);
		if (!OidIsValid(config_relids[i]))
			all_found = false;
		else if (!pgrl_config_triggers_enabled(config_relids[i]))
			all_enabled = false;
	}
	if (all_enabled)
		warned_at = 0;
	else if (GetCurrentTimestamp() >= warned_at + RL_TRIGGER_WARNING_INTERVAL_US)
	{
		ereport(WARNING,
				(errmsg("pg_ratelimit configuration triggers are not ENABLE ALWAYS"),
				 errdetail("The worker reads the configuration tables again every round until they are."),
				 errhint("For each of rl_model, rl_job_type and rl_job_type_wait: ALTER TABLE %s.rl_model ENABLE ALWAYS TRIGGER rl_model_changed, ENABLE ALWAYS TRIGGER rl_model_truncated.",
						 quote_identifier(get_namespace_name(schema)))));
		warned_at = GetCurrentTimestamp();
	}
	if (config_relation_changed || !all_enabled || !all_found)
	{
		config_relation_changed = false;
		pgrl_request_config_resync();
	}
}
