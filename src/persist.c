/*-------------------------------------------------------------------------
 *
 * persist.c
 *		Saving the limiter's state to tables and reading it back.
 *
 * The background worker saves what changed every ratelimit.persist_interval
 * and at a clean shutdown: window counters, totals (the counters of
 * rl_stats too, from version 1.1) and the usage of the current UTC day
 * (rl_counter), each job type's ratio and counters on the
 * model (rl_share_counter), registered instances (rl_instance_state), open
 * leases (rl_lease_state), the usage of each ended day (rl_usage_daily,
 * written once when the day ends) and the test clock's offset
 * (rl_saved_clock).  A model's version counter, bumped under its lock by
 * every change, tells the worker which models to write; the lease table's
 * version tells it whether the set of leases changed.  In the same rounds,
 * and whenever a model asks, it saves new high-water marks (rl_mark, see
 * ledger_marks.c); they take effect only once the round has committed.
 *
 * When shared memory does not hold the state (server start, crash restart,
 * promotion, and on every call on a standby) a full configuration load also
 * reads the saved state back (config.c), before anything is admitted:
 * counters of windows that are still current, open leases, instances,
 * today's usage and the test clock (only where ratelimit.enable_test_clock
 * is on).  Windows never move back: when the clock is behind the latest
 * saved windows, those are still current.  The restore fails closed: each
 * current window counts at least its saved mark, so what was granted after
 * the last save is not granted again.
 *
 * All SQL here runs in an extsql.c session: as the extension's owner, with
 * a pinned search_path.  The tables are those of the installed version of
 * the extension, which may be older than the library (the library was
 * updated, ALTER EXTENSION ... UPDATE not yet run): columns a later version
 * added are written and read only when it is installed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "clock.h"
#include "extsql.h"
#include "holders.h"
#include "instance.h"
#include "lease.h"
#include "ledger.h"
#include "names.h"
#include "persist.h"
#include "settings.h"

typedef struct RlSavedMarks
{
	char		model[RL_NAME_MAX_LEN + 1];
	RlMarkSet	marks;
} RlSavedMarks;

/*
 * A saved open lease, kept small (there may be millions): its names are
 * indexes into the snapshot's lease_names, -1 for none.
 */
typedef struct RlSavedLease
{
	int64		lease_id;
	int64		tokens;
	int64		output_tokens;
	TimestampTz minute_start;
	TimestampTz day_start;
	TimestampTz acquired_at;
	TimestampTz expires_at;
	int32		requests;
	int32		pid;
	Oid			role;
	int32		model;
	int32		job_type;
	int32		instance;
} RlSavedLease;

/* A name of the saved leases, and its index in lease_names */
typedef struct RlLeaseName
{
	RlNameKey	key;			/* hash key: must be first */
	int32		index;
} RlLeaseName;

/* Saved leases read at a time while restoring */
#define RL_RESTORE_BATCH	10000

struct RlStateSnapshot
{
	bool		has_clock;
	int64		clock_offset_us;
	int			num_counters;
	RlSavedCounter *counters;
	int			num_shares;
	RlSavedShare *shares;
	int			num_marks;
	RlSavedMarks *marks;
	int			num_leases;
	RlSavedLease *leases;
	int			num_lease_names;
	char	  **lease_names;	/* the models, job types and instances they
								 * name */
	RlLeaseRestore lease_read;	/* whether they are the table as last saved */
	int			num_instances;
	RlInstanceInfo *instances;
	int64	   *restore_scratch;	/* for the ledger's restore */

	/* what the restore did, reported once config_lock is released */
	uint32		restored_leases;
	bool		leases_left_out;
	int			instances_left_out;
	int64		held_slots;		/* for leases a crash forgot */
	TimestampTz held_until;
};

/*
 * A day's usage as array parameters: pgrl_usage_datums fills these columns,
 * in this order, at the end of the rows of rl_counter, rl_share_counter
 * and rl_usage_daily
 */
enum
{
	USAGE_DAY,
	USAGE_REQUESTS,
	USAGE_INPUT,
	USAGE_OUTPUT,
	USAGE_CACHED,
	USAGE_COST,
	USAGE_OVERAGE_EVENTS,
	USAGE_OVERAGE_TOKENS,
	RL_DAY_USAGE_COLUMNS
};

/* Columns of rl_counter passed as arrays: 12, then the day's usage */
#define RL_COUNTER_USAGE_FIRST	12
#define RL_COUNTER_COLUMNS	(RL_COUNTER_USAGE_FIRST + RL_DAY_USAGE_COLUMNS)

/*
 * The columns of rl_counter that keep a model's rl_stats counters, added in
 * version 1.1, in the order pgrl_stats_datums fills them: the denials in
 * limited_by order (pgrl_dimension_names), then the waits, the running
 * totals and since.  Passed as arrays after the RL_COUNTER_COLUMNS.
 */
static const char *const stats_columns[] = {
	"denied_rpd", "denied_tpd", "denied_rpm", "denied_tpm", "denied_concurrency",
	"denied_job_type", "denied_memory",
	"waits_granted", "waits_timed_out", "waits_cancelled",
	"wait_us_granted", "wait_us_timed_out", "wait_us_cancelled",
	"requests_total", "input_tokens_total", "output_tokens_total", "cached_tokens_total",
	"cost_total", "stats_since"
};
#define RL_STATS_COLUMNS	19
/* the limited_by values with a column in 1.1, in the columns' order */
static const int stats_denials[] = {
	RL_DIM_RPD, RL_DIM_TPD, RL_DIM_RPM, RL_DIM_TPM, RL_DIM_CONCURRENCY,
	RL_LIMITED_BY_JOB_TYPE, RL_LIMITED_BY_MEMORY
};
#define RL_STATS_DENIALS	7
StaticAssertDecl(lengthof(stats_denials) == RL_STATS_DENIALS, "stats_denials");
#define RL_STATS_FIRST_WAIT	RL_STATS_DENIALS
#define RL_STATS_FIRST_TOTAL	(RL_STATS_FIRST_WAIT + 2 * RL_NUM_WAIT_OUTCOMES)
StaticAssertDecl(lengthof(stats_columns) == RL_STATS_COLUMNS, "stats_columns");
StaticAssertDecl(RL_STATS_FIRST_TOTAL + 6 == RL_STATS_COLUMNS, "stats_columns order");

/*
 * Then, from 1.2 on: refilled_at, the denials of the limits that came with
 * it, and the usage of itpm and otpm
 */
#define RL_REFILL_COLUMN	(RL_COUNTER_COLUMNS + RL_STATS_COLUMNS)
#define RL_DENIED_PROVIDER_COLUMN	(RL_REFILL_COLUMN + 1)
#define RL_DENIED_ITPM_COLUMN	(RL_REFILL_COLUMN + 2)
#define RL_DENIED_OTPM_COLUMN	(RL_REFILL_COLUMN + 3)
#define RL_INPUT_MINUTE_COLUMN	(RL_REFILL_COLUMN + 4)
#define RL_OUTPUT_MINUTE_COLUMN	(RL_REFILL_COLUMN + 5)

/* The most array parameters of any statement */
#define RL_MAX_ARRAY_COLUMNS	(RL_OUTPUT_MINUTE_COLUMN + 1)

/* What the worker last wrote, per model slot (worker-local) */
typedef struct RlPersisted
{
	uint32		generation;
	uint64		version;
	TimestampTz ended_day;		/* usage_ended already written */
} RlPersisted;

static RlPersisted *persisted = NULL;
static uint64 *persisted_share_versions = NULL; /* [model * max_job_types +
												 * job type] */
static TimestampTz *persisted_share_ended = NULL;	/* same: usage_ended
													 * written */
static uint64 persisted_lease_version = 0;
static uint32 persisted_lease_epoch = 0;	/* of the last finished lease save */
static bool lease_save_pending = false; /* this round saved leases */

/* A lease save, which may take several rounds (pgrl_persist_leases) */
static RlLeaseSave lease_save;
static bool lease_save_open = false;
static uint32 lease_save_epoch = 0;
static uint64 lease_save_version = 0;

/* Batches of new leases a round inserts at most (but the last round) */
#define RL_LEASE_BATCHES_PER_ROUND	64
static uint64 persisted_config_generation = 0;
static uint64 persisted_instances_version = 0;
static int64 persisted_clock_offset = 0;
static bool persisted_clock = false;
static bool persisted_anything = false;
static uint64 rows_written = 0; /* by this round's statements */
static Oid	persisted_extension = InvalidOid;
static bool persisted_stats = false;	/* the last save wrote rl_stats'
										 * columns */

/* A bigint or timestamptz column by name constant; 0 when NULL */
#define COL(name)	pgrl_spi_int64(tup, desc, pgrl_spi_column(desc, (name)), 0)

/* The same, with the column number resolved once for a batch of rows */
static int64
pgrl_col_int64(HeapTuple tuple, TupleDesc desc, int column)
{
	return pgrl_spi_int64(tuple, desc, column, 0);
}

/* The usage columns of rl_counter and rl_share_counter, as pgrl_read_usage reads them */
#define RL_SAVED_USAGE_COLUMNS \
	"coalesce(usage_day::timestamp AT TIME ZONE 'UTC', '-infinity') AS usage_day," \
	" usage_requests, usage_input, usage_output, usage_cached, usage_overage_events," \
	" usage_overage_tokens, usage_cost"

/* Read the RL_SAVED_USAGE_COLUMNS of a row */
static void
pgrl_read_usage(HeapTuple tup, TupleDesc desc, RlDayUsage *usage)
{
	bool		isnull;
	Datum		cost;

	usage->day_start = COL("usage_day");
	usage->requests = COL("usage_requests");
	usage->input = COL("usage_input");
	usage->output = COL("usage_output");
	usage->cached = COL("usage_cached");
	usage->overage_events = COL("usage_overage_events");
	usage->overage_tokens = COL("usage_overage_tokens");
	cost = SPI_getbinval(tup, desc, pgrl_spi_column(desc, "usage_cost"), &isnull);
	if (!isnull)
		(void) pgrl_numeric_store(&usage->cost, DatumGetNumeric(cost));
}

/*
 * Does the installed version's rl_counter have the columns of rl_stats?
 * They came with 1.1.
 */
static bool
pgrl_has_stats_columns(const char *version)
{
	return pgrl_version_at_least(version, 1, 1);
}

/*
 * Does the installed version have the columns that came with 1.2: what a
 * bucket model's usage is as of (refilled_at), the usage and the marks of
 * itpm and otpm, the output part of a lease's estimate, and the denials of
 * provider, itpm and otpm?
 */
static bool
pgrl_has_v12_columns(const char *version)
{
	return pgrl_version_at_least(version, 1, 2);
}

/* A row's refilled_at, RL_NO_WINDOW when NULL or not there */
static TimestampTz
pgrl_read_refilled_at(HeapTuple tup, TupleDesc desc, bool has_column)
{
	bool		isnull;
	Datum		value;

	if (!has_column)
		return RL_NO_WINDOW;
	value = SPI_getbinval(tup, desc, pgrl_spi_column(desc, "refilled_at"), &isnull);
	return isnull ? RL_NO_WINDOW : DatumGetTimestampTz(value);
}

/* Read the stats_columns of a row */
static void
pgrl_read_stats(HeapTuple tup, TupleDesc desc, RlModelStats *stats)
{
	bool		isnull;
	Datum		cost;
	int			col = 0;

	for (int k = 0; k < RL_STATS_DENIALS; k++)
		stats->denied_by[stats_denials[k]] = COL(stats_columns[col++]);
	for (int k = 0; k < RL_NUM_WAIT_OUTCOMES; k++)
		stats->waits[k] = COL(stats_columns[col++]);
	for (int k = 0; k < RL_NUM_WAIT_OUTCOMES; k++)
		stats->wait_us[k] = COL(stats_columns[col++]);
	stats->requests = COL(stats_columns[col++]);
	stats->input = COL(stats_columns[col++]);
	stats->output = COL(stats_columns[col++]);
	stats->cached = COL(stats_columns[col++]);
	cost = SPI_getbinval(tup, desc, pgrl_spi_column(desc, stats_columns[col++]), &isnull);
	if (!isnull)
		(void) pgrl_numeric_store(&stats->cost, DatumGetNumeric(cost));
	/* NULL in a row saved before 1.1 */
	stats->since = pgrl_spi_int64(tup, desc, pgrl_spi_column(desc, stats_columns[col++]),
								  DT_NOBEGIN);
	Assert(col == RL_STATS_COLUMNS);
}

/* Run a state query in the caller's extsql session */
static void
pgrl_state_query(const char *sql)
{
	pgrl_extsql_query(sql, "read its saved state");
}

/* The columns of rl_mark that hold the mark and the next mark of each limit */
static const char *const mark_columns[RL_NUM_DIMS] = {
	[RL_DIM_RPD] = "requests_day",
	[RL_DIM_TPD] = "tokens_day",
	[RL_DIM_RPM] = "requests_minute",
	[RL_DIM_TPM] = "tokens_minute",
	[RL_DIM_ITPM] = "input_tokens_minute",
	[RL_DIM_OTPM] = "output_tokens_minute",
	[RL_DIM_CONCURRENCY] = "in_flight"
};
static const char *const next_mark_columns[RL_DIM_CONCURRENCY] = {
	[RL_DIM_RPD] = "next_requests_day",
	[RL_DIM_TPD] = "next_tokens_day",
	[RL_DIM_RPM] = "next_requests_minute",
	[RL_DIM_TPM] = "next_tokens_minute",
	[RL_DIM_ITPM] = "next_input_tokens_minute",
	[RL_DIM_OTPM] = "next_output_tokens_minute"
};

/* Do the tables of the installed version have a column for the limit? */
static bool
pgrl_has_dimension_columns(RlDimension dim, bool has_v12)
{
	return has_v12 || (dim != RL_DIM_ITPM && dim != RL_DIM_OTPM);
}

/*
 * The columns of rl_mark after model, minute_start and day_start: the
 * marks, then the next marks, of the limits the tables have
 */
static void
pgrl_append_mark_columns(StringInfo sql, bool has_v12)
{
	for (int d = 0; d < RL_NUM_DIMS; d++)
		if (pgrl_has_dimension_columns(d, has_v12))
			appendStringInfo(sql, ", %s", mark_columns[d]);
	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
		if (pgrl_has_dimension_columns(d, has_v12))
			appendStringInfo(sql, ", %s", next_mark_columns[d]);
}

/* Read the saved high-water marks (rl_mark) */
static void
pgrl_read_marks(RlStateSnapshot *state, MemoryContext context, const char *qschema,
				bool has_v12)
{
	StringInfoData sql;
	TupleDesc	desc;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT model, minute_start, day_start");
	pgrl_append_mark_columns(&sql, has_v12);
	appendStringInfo(&sql, ", lease_horizon, clean FROM %s.rl_mark", qschema);
	pgrl_state_query(sql.data);
	desc = SPI_tuptable->tupdesc;
	state->num_marks = SPI_processed;
	state->marks = MemoryContextAllocZero(context, sizeof(RlSavedMarks) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		RlSavedMarks *saved = &state->marks[i];
		bool		isnull;

		strlcpy(saved->model, SPI_getvalue(tup, desc, pgrl_spi_column(desc, "model")),
				sizeof(saved->model));
		saved->marks.minute_start = COL("minute_start");
		saved->marks.day_start = COL("day_start");
		for (int d = 0; d < RL_NUM_DIMS; d++)
			if (pgrl_has_dimension_columns(d, has_v12))
				saved->marks.mark[d] = COL(mark_columns[d]);
		for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
			if (pgrl_has_dimension_columns(d, has_v12))
				saved->marks.next[d] = COL(next_mark_columns[d]);
		saved->marks.horizon = COL("lease_horizon");
		saved->marks.clean = DatumGetBool(SPI_getbinval(tup, desc,
														pgrl_spi_column(desc, "clean"),
														&isnull)) && !isnull;
	}
}

/* The index of a name of the saved leases, added when new */
static int32
pgrl_lease_name(RlStateSnapshot *state, HTAB *names, MemoryContext context, Datum value)
{
	char		name[RL_NAME_MAX_LEN + 1];
	RlNameKey	key;
	RlLeaseName *entry;
	bool		found;

	text_to_cstring_buffer(DatumGetTextPP(value), name, sizeof(name));
	if (name[0] == '\0')
		return -1;
	pgrl_name_key(&key, name);
	entry = hash_search(names, &key, HASH_ENTER, &found);
	if (!found)
	{
		if (state->num_lease_names % 64 == 0)
			state->lease_names = state->lease_names == NULL ?
				MemoryContextAlloc(context, sizeof(char *) * 64) :
				repalloc(state->lease_names, sizeof(char *) * (state->num_lease_names + 64));
		entry->index = state->num_lease_names;
		state->lease_names[state->num_lease_names++] = MemoryContextStrdup(context, name);
	}
	return entry->index;
}

/*
 * Read the saved open leases through a cursor, a batch at a time, into a
 * compact array: the memory it takes grows with the leases, but no more
 * than that, whatever ratelimit.max_leases allows.
 */
static void
pgrl_read_leases(RlStateSnapshot *state, MemoryContext context, const char *qschema,
				 bool has_v12)
{
	StringInfoData sql;
	Portal		portal;
	HASHCTL		info;
	HTAB	   *names;
	Size		room = 0;
	Oid			extension;
	Oid			schema;
	Oid			owner;

	pgrl_extension_lookup(&extension, &schema, &owner);
	pgrl_leases_restore_seen(&state->lease_read, GetActiveSnapshot(), extension);
	info.keysize = sizeof(RlNameKey);
	info.entrysize = sizeof(RlLeaseName);
	info.hcxt = CurrentMemoryContext;
	names = hash_create("pg_ratelimit saved lease names", 64, &info,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT lease_id, model, coalesce(job_type, '') AS job_type,"
					 " coalesce(instance, '') AS instance,"
					 " tokens, %s AS output_tokens, requests, minute_start, day_start,"
					 " acquired_at, expires_at, pid, role_oid FROM %s.rl_lease_state"
					 " ORDER BY lease_id", has_v12 ? "output_tokens" : "0::bigint", qschema);
	portal = SPI_cursor_open_with_args(NULL, sql.data, 0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		TupleDesc	desc;
		int			col_lease_id,
					col_model,
					col_job_type,
					col_instance,
					col_tokens,
					col_output_tokens,
					col_requests,
					col_minute_start,
					col_day_start,
					col_acquired_at,
					col_expires_at,
					col_pid,
					col_role;

		SPI_cursor_fetch(portal, true, RL_RESTORE_BATCH);
		if (SPI_processed == 0)
			break;
		desc = SPI_tuptable->tupdesc;
		col_lease_id = pgrl_spi_column(desc, "lease_id");
		col_model = pgrl_spi_column(desc, "model");
		col_job_type = pgrl_spi_column(desc, "job_type");
		col_instance = pgrl_spi_column(desc, "instance");
		col_tokens = pgrl_spi_column(desc, "tokens");
		col_output_tokens = pgrl_spi_column(desc, "output_tokens");
		col_requests = pgrl_spi_column(desc, "requests");
		col_minute_start = pgrl_spi_column(desc, "minute_start");
		col_day_start = pgrl_spi_column(desc, "day_start");
		col_acquired_at = pgrl_spi_column(desc, "acquired_at");
		col_expires_at = pgrl_spi_column(desc, "expires_at");
		col_pid = pgrl_spi_column(desc, "pid");
		col_role = pgrl_spi_column(desc, "role_oid");
		if (state->num_leases + SPI_processed > room)
		{
			room = Max(room * 2, state->num_leases + SPI_processed);
			state->leases = state->leases == NULL ?
				MemoryContextAllocHuge(context, sizeof(RlSavedLease) * room) :
				repalloc_huge(state->leases, sizeof(RlSavedLease) * room);
		}
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			RlSavedLease *l = &state->leases[state->num_leases++];
			bool		isnull;

			l->lease_id = pgrl_col_int64(tup, desc, col_lease_id);
			l->model = pgrl_lease_name(state, names, context,
									   SPI_getbinval(tup, desc, col_model, &isnull));
			l->job_type = pgrl_lease_name(state, names, context,
										  SPI_getbinval(tup, desc, col_job_type, &isnull));
			l->instance = pgrl_lease_name(state, names, context,
										  SPI_getbinval(tup, desc, col_instance, &isnull));
			l->tokens = pgrl_col_int64(tup, desc, col_tokens);
			/* an estimate's output part is never more than the whole */
			l->output_tokens = Min(Max(pgrl_col_int64(tup, desc, col_output_tokens), 0),
								   Max(l->tokens, 0));
			l->requests = DatumGetInt32(SPI_getbinval(tup, desc, col_requests, &isnull));
			l->minute_start = pgrl_col_int64(tup, desc, col_minute_start);
			l->day_start = pgrl_col_int64(tup, desc, col_day_start);
			l->acquired_at = pgrl_col_int64(tup, desc, col_acquired_at);
			l->expires_at = pgrl_col_int64(tup, desc, col_expires_at);
			l->pid = DatumGetInt32(SPI_getbinval(tup, desc, col_pid, &isnull));
			l->role = DatumGetObjectId(SPI_getbinval(tup, desc, col_role, &isnull));
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	hash_destroy(names);
}

/*
 * Read the saved state in the caller's extsql session; the result lives in
 * the given context.
 */
RlStateSnapshot *
pgrl_read_state(MemoryContext context, const RlExtSql *session)
{
	RlStateSnapshot *state = MemoryContextAllocZero(context, sizeof(RlStateSnapshot));
	const char *qschema = session->qschema;
	bool		has_stats = pgrl_has_stats_columns(session->version);
	bool		has_v12 = pgrl_has_v12_columns(session->version);
	StringInfoData sql;
	TupleDesc	desc;

	/* allocated now: nothing is, under config_lock, when it is restored */
	state->restore_scratch = MemoryContextAllocZero(context, pgrl_ledger_restore_scratch_size());

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT clock_offset_us FROM %s.rl_saved_clock", qschema);
	pgrl_state_query(sql.data);
	if (SPI_processed == 1)
	{
		state->has_clock = true;
		state->clock_offset_us = pgrl_spi_int64(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
												pgrl_spi_column(SPI_tuptable->tupdesc,
																"clock_offset_us"), 0);
	}

	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT model, minute_start, requests_minute, tokens_minute, day_start,"
					 " requests_day, tokens_day, granted, denied, expired, overage_events,"
					 " overage_tokens, %s", RL_SAVED_USAGE_COLUMNS);
	for (int k = 0; has_stats && k < RL_STATS_COLUMNS; k++)
		appendStringInfo(&sql, ", %s", stats_columns[k]);
	if (has_v12)
		appendStringInfoString(&sql, ", refilled_at, denied_provider, denied_itpm, denied_otpm,"
							   " input_tokens_minute, output_tokens_minute");
	appendStringInfo(&sql, " FROM %s.rl_counter", qschema);
	pgrl_state_query(sql.data);
	desc = SPI_tuptable->tupdesc;
	state->num_counters = SPI_processed;
	state->counters = MemoryContextAllocZero(context, sizeof(RlSavedCounter) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		RlSavedCounter *c = &state->counters[i];

		strlcpy(c->model, SPI_getvalue(tup, desc, pgrl_spi_column(desc, "model")), sizeof(c->model));
		c->minute_start = COL("minute_start");
		c->requests_minute = COL("requests_minute");
		c->tokens_minute = COL("tokens_minute");
		c->day_start = COL("day_start");
		c->requests_day = COL("requests_day");
		c->tokens_day = COL("tokens_day");
		c->refilled_at = pgrl_read_refilled_at(tup, desc, has_v12);
		c->granted = COL("granted");
		c->denied = COL("denied");
		c->expired = COL("expired");
		c->overage_events = COL("overage_events");
		c->overage_tokens = COL("overage_tokens");
		pgrl_read_usage(tup, desc, &c->usage);
		c->has_stats = has_stats;
		if (has_stats)
			pgrl_read_stats(tup, desc, &c->stats);
		if (has_v12)
		{
			c->stats.denied_by[RL_LIMITED_BY_PROVIDER] = COL("denied_provider");
			c->stats.denied_by[RL_DIM_ITPM] = COL("denied_itpm");
			c->stats.denied_by[RL_DIM_OTPM] = COL("denied_otpm");
			c->input_tokens_minute = COL("input_tokens_minute");
			c->output_tokens_minute = COL("output_tokens_minute");
		}
	}

	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT model, job_type, base_ratio, ratio, minute_start, requests_minute,"
					 " tokens_minute, jobs_minute, day_start, requests_day, tokens_day, jobs_day,"
					 " granted, denied, %s%s FROM %s.rl_share_counter", RL_SAVED_USAGE_COLUMNS,
					 has_v12 ? ", refilled_at, input_tokens_minute, output_tokens_minute" : "",
					 qschema);
	pgrl_state_query(sql.data);
	desc = SPI_tuptable->tupdesc;
	state->num_shares = SPI_processed;
	state->shares = MemoryContextAllocZero(context, sizeof(RlSavedShare) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		RlSavedShare *sh = &state->shares[i];
		bool		isnull;

		strlcpy(sh->model, SPI_getvalue(tup, desc, pgrl_spi_column(desc, "model")), sizeof(sh->model));
		strlcpy(sh->job_type, SPI_getvalue(tup, desc, pgrl_spi_column(desc, "job_type")),
				sizeof(sh->job_type));
		sh->base_ratio = DatumGetFloat8(SPI_getbinval(tup, desc, pgrl_spi_column(desc, "base_ratio"),
													  &isnull));
		sh->ratio = DatumGetFloat8(SPI_getbinval(tup, desc, pgrl_spi_column(desc, "ratio"), &isnull));
		sh->minute_start = COL("minute_start");
		sh->requests_minute = COL("requests_minute");
		sh->tokens_minute = COL("tokens_minute");
		sh->jobs_minute = COL("jobs_minute");
		sh->day_start = COL("day_start");
		sh->requests_day = COL("requests_day");
		sh->tokens_day = COL("tokens_day");
		sh->jobs_day = COL("jobs_day");
		sh->refilled_at = pgrl_read_refilled_at(tup, desc, has_v12);
		if (has_v12)
		{
			sh->input_tokens_minute = COL("input_tokens_minute");
			sh->output_tokens_minute = COL("output_tokens_minute");
		}
		sh->granted = COL("granted");
		sh->denied = COL("denied");
		pgrl_read_usage(tup, desc, &sh->usage);
	}

	pgrl_read_marks(state, context, qschema, has_v12);

	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT instance, coalesce(memory_kb, -1) AS memory_kb, registered_at, last_heartbeat,"
					 " role_oid FROM %s.rl_instance_state", qschema);
	pgrl_state_query(sql.data);
	desc = SPI_tuptable->tupdesc;
	state->num_instances = SPI_processed;
	state->instances = MemoryContextAllocZero(context,
											  sizeof(RlInstanceInfo) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		RlInstanceInfo *info = &state->instances[i];
		bool		isnull;
		Datum		role;

		strlcpy(info->name, SPI_getvalue(tup, desc, pgrl_spi_column(desc, "instance")),
				sizeof(info->name));
		info->memory_kb = COL("memory_kb");
		info->registered_at = COL("registered_at");
		info->last_heartbeat = COL("last_heartbeat");
		role = SPI_getbinval(tup, desc, pgrl_spi_column(desc, "role_oid"), &isnull);
		info->role = isnull ? InvalidOid : DatumGetObjectId(role);
	}

	pgrl_read_leases(state, context, qschema, has_v12);
	return state;
}

/*
 * The windows to restore into: now's, or the latest saved ones when the
 * clock is behind them (the system clock stepped back while the server was
 * down), since windows never move back and a saved day must not start over.
 * Windows saved under a test clock that is now ignored are not times of
 * this clock: then now's.
 */
static void
pgrl_restored_windows(const RlStateSnapshot *state, TimestampTz *minute_start,
					  TimestampTz *day_start)
{
	if (state->has_clock && state->clock_offset_us != 0 && !pgrl_enable_test_clock)
		return;
	for (int i = 0; i < state->num_counters; i++)
	{
		*minute_start = Max(*minute_start, state->counters[i].minute_start);
		*day_start = Max(*day_start, state->counters[i].day_start);
	}
	for (int i = 0; i < state->num_shares; i++)
	{
		*minute_start = Max(*minute_start, state->shares[i].minute_start);
		*day_start = Max(*day_start, state->shares[i].day_start);
	}
	for (int i = 0; i < state->num_marks; i++)
	{
		*minute_start = Max(*minute_start, state->marks[i].marks.minute_start);
		*day_start = Max(*day_start, state->marks[i].marks.day_start);
	}
}

/*
 * Put saved state back into freshly cleared shared memory.  Called while
 * applying a full load (after a start, a crash, a promotion, or on a
 * standby), with config_lock held exclusively; must not fail, nor report
 * anything (pgrl_report_restore() does, later).  The ledger restores the
 * counters, marks and shares, and fails closed (ledger.c); the leases go
 * back into the lease table, counted against their roles and instances.
 */
void
pgrl_restore_saved_state(RlStateSnapshot *state)
{
	TimestampTz now;
	TimestampTz minute_start;
	TimestampTz day_start;
	uint32		restored_leases = 0;
	int64		max_lease_id = 0;
	bool		exact = pgrl_leases_restore_begin(&state->lease_read);

	/* a test clock saved by an earlier run counts only where it is enabled */
	if (state->has_clock && pgrl_enable_test_clock)
		pgrl_clock_set_offset(state->clock_offset_us);
	now = pgrl_now();
	minute_start = pgrl_window_start(now, USECS_PER_MINUTE);
	day_start = pgrl_window_start(now, USECS_PER_DAY);
	pgrl_restored_windows(state, &minute_start, &day_start);

	pgrl_ledger_restore_begin(now, minute_start, day_start, state->restore_scratch);
	for (int i = 0; i < state->num_counters; i++)
		pgrl_ledger_restore_counter(&state->counters[i]);
	for (int i = 0; i < state->num_marks; i++)
		pgrl_ledger_restore_marks(state->marks[i].model, &state->marks[i].marks);
	for (int i = 0; i < state->num_shares; i++)
		pgrl_ledger_restore_share(&state->shares[i]);

	/* instances first: the leases naming them count against their memory */
	for (int i = 0; i < state->num_instances; i++)
		if (!pgrl_restore_instance(&state->instances[i]))
			state->instances_left_out++;

	for (int i = 0; i < state->num_leases; i++)
	{
		const RlSavedLease *l = &state->leases[i];
		RlLease		lease;

		memset(&lease, 0, sizeof(lease));
		lease.lease_id = l->lease_id;
		lease.tokens = l->tokens;
		lease.output_tokens = l->output_tokens;
		lease.requests = l->requests;
		lease.minute_start = l->minute_start;
		lease.day_start = l->day_start;
		lease.acquired_at = l->acquired_at;
		/* no lease outlives ratelimit.max_lease_ttl past a restart */
		lease.expires_at = Min(l->expires_at,
							   pgrl_add_saturating(now, (int64) pgrl_max_lease_ttl_s * USECS_PER_SEC));
		lease.pid = l->pid;
		lease.role = l->role;
		lease.role_slot = -1;
		lease.session_bound = false;
		if (l->instance >= 0)
			strlcpy(lease.instance, state->lease_names[l->instance], sizeof(lease.instance));
		lease.job_type_slot = l->job_type >= 0 ?
			pgrl_job_type_slot(state->lease_names[l->job_type]) : -1;

		/* a lease not restored loses its saved row (when the table is exact) */
		if (l->model < 0 || !pgrl_ledger_restore_lease(state->lease_names[l->model], &lease))
		{
			if (exact)
				pgrl_leases_note_not_restored(l->lease_id);
			continue;
		}
		if (restored_leases >= (uint32) pgrl_max_leases)
		{
			state->leases_left_out = true;
			pgrl_ledger_restore_lease_left_out(&lease);
			if (exact)
				pgrl_leases_note_not_restored(l->lease_id);
			continue;
		}
		lease.role_slot = pgrl_role_lease_add(lease.role, 0);
		pgrl_restore_instance_lease(&lease);
		if (!pgrl_put_restored_lease(&lease, exact))
		{
			pgrl_role_lease_gone(&lease);
			pgrl_instance_lease_gone(&lease);
			pgrl_ledger_restore_lease_left_out(&lease);
			if (exact)
				pgrl_leases_note_not_restored(l->lease_id);
			continue;
		}
		pgrl_ledger_restore_lease_counted(&lease);
		restored_leases++;
		max_lease_id = Max(max_lease_id, lease.lease_id);
	}
	pgrl_leases_restored(restored_leases, max_lease_id);
	pgrl_ledger_restore_end(now, &state->held_slots, &state->held_until);
	state->restored_leases = restored_leases;
}

/*
 * Say what pgrl_restore_saved_state() did.  Called once config_lock is released:
 * nothing is reported with an LWLock held.  Never errors.
 */
void
pgrl_report_restore(const RlStateSnapshot *state)
{
	if (state->leases_left_out)
		ereport(WARNING,
				(errmsg("pg_ratelimit could not restore all open leases: ratelimit.max_leases is %d",
						pgrl_max_leases),
				 errdetail("The slots of those left out are held until they expire.")));
	if (state->instances_left_out > 0)
		elog(WARNING, "pg_ratelimit could not restore %d instances: ratelimit.max_instances is %d",
			 state->instances_left_out, pgrl_max_instances);
	elog(RecoveryInProgress() ? DEBUG1 : LOG,
		 "pg_ratelimit restored the counters of %d models, %d instances and %u open leases",
		 state->num_counters, state->num_instances, state->restored_leases);
	if (state->held_slots > 0)
		ereport(RecoveryInProgress() ? DEBUG1 : LOG,
				(errmsg("pg_ratelimit holds " INT64_FORMAT " concurrency slots until %s for leases granted after its last save",
						state->held_slots, timestamptz_to_str(state->held_until)),
				 errdetail("The server did not stop cleanly: those leases may still be in use.")));
}

/* Build a one-dimensional array of the given element type */
static Datum
pgrl_array(Datum *elements, int count, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elements, count, type, typlen, typbyval, typalign));
}

/* Run a statement whose parameters are arrays of the given element types */
static void
pgrl_execute_arrays(const char *sql, int nargs, const Oid *element_types, Datum *values)
{
	Oid			types[RL_MAX_ARRAY_COLUMNS];

	Assert(nargs <= (int) lengthof(types));
	for (int i = 0; i < nargs; i++)
		types[i] = get_array_type(element_types[i]);
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0) < 0)
		elog(ERROR, "pg_ratelimit could not save its state: %s", sql);
	rows_written += SPI_processed;
}

/* Run a statement with scalar parameters */
static void
pgrl_execute(const char *sql, int nargs, Oid *types, Datum *values)
{
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0) < 0)
		elog(ERROR, "pg_ratelimit could not save its state: %s", sql);
	rows_written += SPI_processed;
}

/*
 * The RL_DAY_USAGE_COLUMNS usage columns of a day, at row n of the column
 * arrays; a day without usage gets RL_NO_WINDOW (-infinity), which
 * rl_counter stores as NULL.
 */
static void
pgrl_usage_datums(const RlDayUsage *day, Datum **columns, int n)
{
	columns[USAGE_DAY][n] = TimestampTzGetDatum(pgrl_day_used(day) ? day->day_start :
												RL_NO_WINDOW);
	columns[USAGE_REQUESTS][n] = Int64GetDatum(day->requests);
	columns[USAGE_INPUT][n] = Int64GetDatum(day->input);
	columns[USAGE_OUTPUT][n] = Int64GetDatum(day->output);
	columns[USAGE_CACHED][n] = Int64GetDatum(day->cached);
	columns[USAGE_COST][n] = NumericGetDatum(pgrl_numeric_load(&day->cost));
	columns[USAGE_OVERAGE_EVENTS][n] = Int64GetDatum(day->overage_events);
	columns[USAGE_OVERAGE_TOKENS][n] = Int64GetDatum(day->overage_tokens);
}

/* The RL_STATS_COLUMNS of a model, at row n of the column arrays */
static void
pgrl_stats_datums(const RlModelStats *stats, Datum **columns, int n)
{
	int			col = 0;

	for (int k = 0; k < RL_STATS_DENIALS; k++)
		columns[col++][n] = Int64GetDatum(stats->denied_by[stats_denials[k]]);
	for (int k = 0; k < RL_NUM_WAIT_OUTCOMES; k++)
		columns[col++][n] = Int64GetDatum(stats->waits[k]);
	for (int k = 0; k < RL_NUM_WAIT_OUTCOMES; k++)
		columns[col++][n] = Int64GetDatum(stats->wait_us[k]);
	columns[col++][n] = Int64GetDatum(stats->requests);
	columns[col++][n] = Int64GetDatum(stats->input);
	columns[col++][n] = Int64GetDatum(stats->output);
	columns[col++][n] = Int64GetDatum(stats->cached);
	columns[col++][n] = NumericGetDatum(pgrl_numeric_load(&stats->cost));
	columns[col++][n] = TimestampTzGetDatum(stats->since);
	Assert(col == RL_STATS_COLUMNS);
}

/* Columns of rl_share_counter passed as arrays */
#define RL_SHARE_USAGE_FIRST	14
#define RL_SHARE_COLUMNS	(RL_SHARE_USAGE_FIRST + RL_DAY_USAGE_COLUMNS)
/* and refilled_at and the usage of itpm and otpm, written from 1.2 on */
#define RL_SHARE_REFILL_COLUMN	RL_SHARE_COLUMNS
#define RL_SHARE_V12_COLUMNS	3

/* Columns of rl_usage_daily passed as arrays */
#define RL_USAGE_USAGE_FIRST	2
#define RL_USAGE_COLUMNS	(RL_USAGE_USAGE_FIRST + RL_DAY_USAGE_COLUMNS)

/* Rows of rl_share_counter being gathered, one array per column */
typedef struct RlShareRows
{
	int			count;
	int			room;
	Datum	   *columns[RL_SHARE_COLUMNS + RL_SHARE_V12_COLUMNS];
	Size	   *shares;			/* the share each row saves, and its version */
	uint64	   *versions;
} RlShareRows;

/* Ended days being gathered for rl_usage_daily, one array per column */
typedef struct RlUsageRows
{
	int			count;
	int			room;
	Datum	   *columns[RL_USAGE_COLUMNS];
} RlUsageRows;

/* Grow an array of rows; NULL means none yet */
static void *
pgrl_grow(void *array, Size element_size, int room)
{
	return array == NULL ? palloc(element_size * room) : repalloc(array, element_size * room);
}

/* Add a row for an ended day of a model (job_type '': the whole model) */
static void
pgrl_add_usage_row(RlUsageRows *rows, const char *model, const char *job_type,
				   const RlDayUsage *day)
{
	int			n;

	if (rows->count == rows->room)
	{
		rows->room = Max(rows->room * 2, 64);
		for (int i = 0; i < RL_USAGE_COLUMNS; i++)
			rows->columns[i] = pgrl_grow(rows->columns[i], sizeof(Datum), rows->room);
	}
	n = rows->count++;
	rows->columns[0][n] = CStringGetTextDatum(model);
	rows->columns[1][n] = CStringGetTextDatum(job_type);
	pgrl_usage_datums(day, &rows->columns[RL_USAGE_USAGE_FIRST], n);
}

/* Write the gathered ended days */
static void
pgrl_write_usage_rows(const char *qschema, RlUsageRows *rows)
{
	Oid			types[RL_USAGE_COLUMNS] = {TEXTOID, TEXTOID, TIMESTAMPTZOID, INT8OID, INT8OID,
	INT8OID, INT8OID, NUMERICOID, INT8OID, INT8OID};
	Datum		args[RL_USAGE_COLUMNS];
	StringInfoData sql;

	if (rows->count == 0)
		return;
	for (int i = 0; i < RL_USAGE_COLUMNS; i++)
		args[i] = pgrl_array(rows->columns[i], rows->count, types[i]);
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "INSERT INTO %s.rl_usage_daily AS u (day, model, job_type, requests,"
					 " input_tokens, output_tokens, cached_tokens, cost, overage_events,"
					 " overage_tokens)"
					 " SELECT (d AT TIME ZONE 'UTC')::date, m, j, r, i, o, c, co, oe, ot"
					 " FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
					 " AS x(m, j, d, r, i, o, c, co, oe, ot)"
					 " ON CONFLICT (day, model, job_type) DO UPDATE SET requests = excluded.requests,"
					 " input_tokens = excluded.input_tokens,"
					 " output_tokens = excluded.output_tokens,"
					 " cached_tokens = excluded.cached_tokens, cost = excluded.cost,"
					 " overage_events = excluded.overage_events,"
					 " overage_tokens = excluded.overage_tokens", qschema);
	pgrl_execute_arrays(sql.data, RL_USAGE_COLUMNS, types, args);
}

/*
 * Add one row per copied share of a model, and the ended day of each share
 * not written yet.
 */
static void
pgrl_add_share_rows(RlShareRows *rows, RlUsageRows *usage_rows, int model_slot,
					const RlModelSnapshot *model, const RlJobTypeName *names,
					const RlShareSnapshot *copies, int count)
{
	if (rows->count + count > rows->room)
	{
		int			room = Max(rows->room * 2, rows->count + count + 64);

		for (int i = 0; i < RL_SHARE_COLUMNS + RL_SHARE_V12_COLUMNS; i++)
			rows->columns[i] = pgrl_grow(rows->columns[i], sizeof(Datum), room);
		rows->shares = pgrl_grow(rows->shares, sizeof(Size), room);
		rows->versions = pgrl_grow(rows->versions, sizeof(uint64), room);
		rows->room = room;
	}
	for (int i = 0; i < count; i++)
	{
		const RlShareSnapshot *share = &copies[i];
		const char *job_type = names[share->job_type].name;
		Datum	  **c = rows->columns;
		int			n = rows->count++;

		rows->shares[n] = (Size) model_slot * pgrl_max_job_types + names[share->job_type].slot;
		rows->versions[n] = share->version;

		c[0][n] = CStringGetTextDatum(model->name);
		c[1][n] = CStringGetTextDatum(job_type);
		c[2][n] = Float8GetDatum(share->base_ratio);
		c[3][n] = Float8GetDatum(share->ratio);
		c[4][n] = TimestampTzGetDatum(model->minute_start);
		c[5][n] = Int64GetDatum(share->used[RL_DIM_RPM]);
		c[6][n] = Int64GetDatum(share->used[RL_DIM_TPM]);
		c[7][n] = Int64GetDatum(share->jobs_minute);
		c[8][n] = TimestampTzGetDatum(model->day_start);
		c[9][n] = Int64GetDatum(share->used[RL_DIM_RPD]);
		c[10][n] = Int64GetDatum(share->used[RL_DIM_TPD]);
		c[11][n] = Int64GetDatum(share->jobs_day);
		c[12][n] = Int64GetDatum(share->granted);
		c[13][n] = Int64GetDatum(share->denied);
		pgrl_usage_datums(&share->usage, &c[RL_SHARE_USAGE_FIRST], n);
		c[RL_SHARE_REFILL_COLUMN][n] = TimestampTzGetDatum(share->refilled_at);
		c[RL_SHARE_REFILL_COLUMN + 1][n] = Int64GetDatum(share->used[RL_DIM_ITPM]);
		c[RL_SHARE_REFILL_COLUMN + 2][n] = Int64GetDatum(share->used[RL_DIM_OTPM]);

		if (pgrl_day_used(&share->usage_ended) &&
			persisted_share_ended[rows->shares[n]] != share->usage_ended.day_start)
		{
			pgrl_add_usage_row(usage_rows, model->name, job_type, &share->usage_ended);
			persisted_share_ended[rows->shares[n]] = share->usage_ended.day_start;
		}
	}
}

/* Write the gathered share rows */
static void
pgrl_write_share_rows(const char *qschema, RlShareRows *rows, bool with_v12)
{
	Oid			types[RL_SHARE_COLUMNS + RL_SHARE_V12_COLUMNS] = {TEXTOID, TEXTOID, FLOAT8OID,
		FLOAT8OID, TIMESTAMPTZOID, INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, INT8OID, INT8OID,
		INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, INT8OID, INT8OID, INT8OID, INT8OID, NUMERICOID,
	INT8OID, INT8OID, TIMESTAMPTZOID, INT8OID, INT8OID};
	Datum		args[RL_SHARE_COLUMNS + RL_SHARE_V12_COLUMNS];
	int			num_columns = RL_SHARE_COLUMNS + (with_v12 ? RL_SHARE_V12_COLUMNS : 0);
	StringInfoData sql;

	if (rows->count == 0)
		return;
	for (int i = 0; i < num_columns; i++)
		args[i] = pgrl_array(rows->columns[i], rows->count, types[i]);
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "INSERT INTO %s.rl_share_counter AS s (model, job_type, base_ratio, ratio,"
					 " minute_start, requests_minute, tokens_minute, jobs_minute, day_start,"
					 " requests_day, tokens_day, jobs_day, granted, denied, usage_day,"
					 " usage_requests, usage_input, usage_output, usage_cached, usage_cost,"
					 " usage_overage_events, usage_overage_tokens, saved_at%s)"
					 " SELECT m, j, br, r, ms, rm, tm, jm, ds, rd, td, jd, g, de,"
					 " (nullif(ud, '-infinity') AT TIME ZONE 'UTC')::date,"
					 " ur, ui, uo, uc, uco, uoe, uot, now()%s"
					 " FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
					 " $15, $16, $17, $18, $19, $20, $21, $22%s)"
					 " AS x(m, j, br, r, ms, rm, tm, jm, ds, rd, td, jd, g, de, ud, ur, ui, uo, uc,"
					 " uco, uoe, uot%s)"
					 " ON CONFLICT (model, job_type) DO UPDATE SET base_ratio = excluded.base_ratio,"
					 " ratio = excluded.ratio, minute_start = excluded.minute_start,"
					 " requests_minute = excluded.requests_minute,"
					 " tokens_minute = excluded.tokens_minute, jobs_minute = excluded.jobs_minute,"
					 " day_start = excluded.day_start, requests_day = excluded.requests_day,"
					 " tokens_day = excluded.tokens_day, jobs_day = excluded.jobs_day,"
					 " granted = excluded.granted, denied = excluded.denied,"
					 " usage_day = excluded.usage_day, usage_requests = excluded.usage_requests,"
					 " usage_input = excluded.usage_input, usage_output = excluded.usage_output,"
					 " usage_cached = excluded.usage_cached, usage_cost = excluded.usage_cost,"
					 " usage_overage_events = excluded.usage_overage_events,"
					 " usage_overage_tokens = excluded.usage_overage_tokens,"
					 " saved_at = excluded.saved_at%s", qschema,
					 with_v12 ? ", refilled_at, input_tokens_minute, output_tokens_minute" : "",
					 with_v12 ? ", nullif(ra, '-infinity'), itm, otm" : "",
					 with_v12 ? ", $23, $24, $25" : "",
					 with_v12 ? ", ra, itm, otm" : "",
					 with_v12 ? ", refilled_at = excluded.refilled_at,"
					 " input_tokens_minute = excluded.input_tokens_minute,"
					 " output_tokens_minute = excluded.output_tokens_minute" : "");
	pgrl_execute_arrays(sql.data, num_columns, types, args);
	for (int i = 0; i < rows->count; i++)
		persisted_share_versions[rows->shares[i]] = rows->versions[i];
}

/*
 * Save counters, totals and daily usage of models that changed; with_stats:
 * rl_stats' counters too (the installed version has their columns).
 */
static void
pgrl_persist_models(const char *qschema, bool with_stats, bool with_v12)
{
	int			n = 0;
	int			num_columns = with_v12 ? RL_MAX_ARRAY_COLUMNS :
		RL_COUNTER_COLUMNS + (with_stats ? RL_STATS_COLUMNS : 0);
	Datum	   *c[RL_MAX_ARRAY_COLUMNS];

	/*
	 * The columns' types, a line per group: the counters (two lines), the
	 * stats columns (two lines), then 1.2's refilled_at, denied_provider,
	 * denied_itpm, denied_otpm, input_tokens_minute and output_tokens_minute
	 */
	Oid			ctypes[RL_MAX_ARRAY_COLUMNS] = {
		TEXTOID, TIMESTAMPTZOID, INT8OID, INT8OID, TIMESTAMPTZOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID,
		INT8OID, INT8OID, TIMESTAMPTZOID, INT8OID, INT8OID, INT8OID, INT8OID, NUMERICOID, INT8OID, INT8OID,
		INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID,
		INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, NUMERICOID, TIMESTAMPTZOID,
		TIMESTAMPTZOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID
	};
	RlUsageRows usage_rows;
	uint64	   *versions = palloc(sizeof(uint64) * pgrl_max_models);
	uint32	   *generations = palloc(sizeof(uint32) * pgrl_max_models);
	int		   *slots = palloc(sizeof(int) * pgrl_max_models);
	RlJobTypeName *names = palloc(sizeof(RlJobTypeName) * pgrl_max_job_types);
	int			num_names = pgrl_job_type_names(names);
	RlShareSnapshot *share_copies = palloc(sizeof(RlShareSnapshot) * Max(num_names, 1));
	RlShareRows share_rows;
	StringInfoData sql;

	memset(&share_rows, 0, sizeof(share_rows));
	memset(&usage_rows, 0, sizeof(usage_rows));
	for (int i = 0; i < num_columns; i++)
		c[i] = palloc(sizeof(Datum) * pgrl_max_models);

	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		RlModelSnapshot copy;
		int			num_shares;

		if (!pgrl_ledger_snapshot(slot, persisted[slot].generation, persisted[slot].version,
								  names, num_names,
								  &persisted_share_versions[(Size) slot * pgrl_max_job_types],
								  &copy, share_copies, &num_shares))
			continue;
		pgrl_add_share_rows(&share_rows, &usage_rows, slot, &copy, names, share_copies,
							num_shares);

		slots[n] = slot;
		versions[n] = copy.version;
		generations[n] = copy.generation;
		c[0][n] = CStringGetTextDatum(copy.name);
		c[1][n] = TimestampTzGetDatum(copy.minute_start);
		c[2][n] = Int64GetDatum(copy.used[RL_DIM_RPM]);
		c[3][n] = Int64GetDatum(copy.used[RL_DIM_TPM]);
		c[4][n] = TimestampTzGetDatum(copy.day_start);
		c[5][n] = Int64GetDatum(copy.used[RL_DIM_RPD]);
		c[6][n] = Int64GetDatum(copy.used[RL_DIM_TPD]);
		c[7][n] = Int64GetDatum(copy.granted);
		c[8][n] = Int64GetDatum(copy.denied);
		c[9][n] = Int64GetDatum(copy.expired);
		c[10][n] = Int64GetDatum(copy.overage_events);
		c[11][n] = Int64GetDatum(copy.overage_tokens);
		pgrl_usage_datums(&copy.usage, &c[RL_COUNTER_USAGE_FIRST], n);
		if (with_stats)
			pgrl_stats_datums(&copy.stats, &c[RL_COUNTER_COLUMNS], n);
		if (with_v12)
		{
			c[RL_REFILL_COLUMN][n] = TimestampTzGetDatum(copy.refilled_at);
			c[RL_DENIED_PROVIDER_COLUMN][n] =
				Int64GetDatum(copy.stats.denied_by[RL_LIMITED_BY_PROVIDER]);
			c[RL_DENIED_ITPM_COLUMN][n] = Int64GetDatum(copy.stats.denied_by[RL_DIM_ITPM]);
			c[RL_DENIED_OTPM_COLUMN][n] = Int64GetDatum(copy.stats.denied_by[RL_DIM_OTPM]);
			c[RL_INPUT_MINUTE_COLUMN][n] = Int64GetDatum(copy.used[RL_DIM_ITPM]);
			c[RL_OUTPUT_MINUTE_COLUMN][n] = Int64GetDatum(copy.used[RL_DIM_OTPM]);
		}
		n++;

		/* the day before, once, when its window has ended */
		if (pgrl_day_used(&copy.usage_ended) &&
			!(persisted[slot].generation == copy.generation &&
			  persisted[slot].ended_day == copy.usage_ended.day_start))
			pgrl_add_usage_row(&usage_rows, copy.name, "", &copy.usage_ended);
		persisted[slot].ended_day = copy.usage_ended.day_start;
	}

	if (n > 0)
	{
		Datum		args[RL_MAX_ARRAY_COLUMNS];

		for (int i = 0; i < num_columns; i++)
			args[i] = pgrl_array(c[i], n, ctypes[i]);
		initStringInfo(&sql);
		appendStringInfo(&sql,
						 "INSERT INTO %s.rl_counter AS c (model, minute_start, requests_minute,"
						 " tokens_minute, day_start, requests_day, tokens_day, granted, denied,"
						 " expired, overage_events, overage_tokens, usage_day, usage_requests,"
						 " usage_input, usage_output, usage_cached, usage_cost,"
						 " usage_overage_events, usage_overage_tokens", qschema);
		for (int k = 0; with_stats && k < RL_STATS_COLUMNS; k++)
			appendStringInfo(&sql, ", %s", stats_columns[k]);
		if (with_v12)
			appendStringInfoString(&sql, ", refilled_at, denied_provider, denied_itpm,"
								   " denied_otpm, input_tokens_minute, output_tokens_minute");
		appendStringInfoString(&sql,
							   ", saved_at)"
							   " SELECT m, ms, rm, tm, ds, rd, td, g, de, ex, oe, ot,"
							   " (nullif(ud, '-infinity') AT TIME ZONE 'UTC')::date,"
							   " ur, ui, uo, uc, uco, uoe, uot");
		/* the arrays of stats_columns are unnested under the columns' names */
		for (int k = 0; with_stats && k < RL_STATS_COLUMNS; k++)
			appendStringInfo(&sql, ", %s", stats_columns[k]);
		if (with_v12)
			appendStringInfoString(&sql, ", nullif(ra, '-infinity'), dp, di, dout, itm, otm");
		appendStringInfoString(&sql, ", now() FROM unnest($1");
		for (int i = 1; i < num_columns; i++)
			appendStringInfo(&sql, ", $%d", i + 1);
		appendStringInfoString(&sql,
							   ") AS x(m, ms, rm, tm, ds, rd, td, g, de, ex, oe, ot, ud, ur, ui, uo,"
							   " uc, uco, uoe, uot");
		for (int k = 0; with_stats && k < RL_STATS_COLUMNS; k++)
			appendStringInfo(&sql, ", %s", stats_columns[k]);
		if (with_v12)
			appendStringInfoString(&sql, ", ra, dp, di, dout, itm, otm");
		appendStringInfoString(&sql,
							   ") ON CONFLICT (model) DO UPDATE SET minute_start = excluded.minute_start,"
							   " requests_minute = excluded.requests_minute,"
							   " tokens_minute = excluded.tokens_minute, day_start = excluded.day_start,"
							   " requests_day = excluded.requests_day, tokens_day = excluded.tokens_day,"
							   " granted = excluded.granted, denied = excluded.denied,"
							   " expired = excluded.expired, overage_events = excluded.overage_events,"
							   " overage_tokens = excluded.overage_tokens, usage_day = excluded.usage_day,"
							   " usage_requests = excluded.usage_requests,"
							   " usage_input = excluded.usage_input, usage_output = excluded.usage_output,"
							   " usage_cached = excluded.usage_cached, usage_cost = excluded.usage_cost,"
							   " usage_overage_events = excluded.usage_overage_events,"
							   " usage_overage_tokens = excluded.usage_overage_tokens,");
		for (int k = 0; with_stats && k < RL_STATS_COLUMNS; k++)
			appendStringInfo(&sql, " %s = excluded.%s,", stats_columns[k], stats_columns[k]);
		if (with_v12)
			appendStringInfoString(&sql, " refilled_at = excluded.refilled_at,"
								   " denied_provider = excluded.denied_provider,"
								   " denied_itpm = excluded.denied_itpm,"
								   " denied_otpm = excluded.denied_otpm,"
								   " input_tokens_minute = excluded.input_tokens_minute,"
								   " output_tokens_minute = excluded.output_tokens_minute,");
		appendStringInfoString(&sql, " saved_at = excluded.saved_at");
		pgrl_execute_arrays(sql.data, num_columns, ctypes, args);
	}
	pgrl_write_usage_rows(qschema, &usage_rows);
	pgrl_write_share_rows(qschema, &share_rows, with_v12);

	/* Only now that the rows are written: they are saved */
	for (int i = 0; i < n; i++)
	{
		persisted[slots[i]].generation = generations[i];
		persisted[slots[i]].version = versions[i];
	}
	elog(DEBUG1, "pg_ratelimit saved %d models, %d job type shares and %d days of usage",
		 n, share_rows.count, usage_rows.count);
}

/*
 * Make a table hold exactly the given rows: delete those whose key (the
 * first column) is not among them, then upsert them with insert_sql, which
 * reads the columns as $1, $2, ... arrays.
 */
static void
pgrl_save_row_set(const char *qschema, const char *table, const char *key,
				  const char *insert_sql, int num_columns, const Oid *types,
				  Datum **columns, int count)
{
	Datum		args[RL_MAX_ARRAY_COLUMNS];
	StringInfoData sql;

	Assert(num_columns <= (int) lengthof(args));
	for (int i = 0; i < num_columns; i++)
		args[i] = pgrl_array(columns[i], count, types[i]);
	initStringInfo(&sql);
	appendStringInfo(&sql, "DELETE FROM %s.%s WHERE %s <> ALL ($1)", qschema, table, key);
	pgrl_execute_arrays(sql.data, 1, types, args);
	pgrl_execute_arrays(insert_sql, num_columns, types, args);
}

/* Columns of rl_lease_state passed as arrays */
/* Columns of rl_lease_state passed as arrays: output_tokens last, from 1.2 on */
#define RL_LEASE_COLUMNS	13

/*
 * Insert leases the save copies, a batch at a time, at most max_batches
 * (-1: no limit): resolve the names of their models and job types under
 * config_lock (a lease whose model was dropped meanwhile is not saved: it
 * is gone), then write without any lock.  Sets *done when the save has
 * copied all it must.  Returns how many were written.
 */
static int
pgrl_insert_unsaved_leases(const char *qschema, bool with_output, RlLeaseSave *save,
						   int max_batches, bool *done)
{
	Oid			types[RL_LEASE_COLUMNS] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, INT8OID, INT4OID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, OIDOID, INT8OID};
	int			num_columns = RL_LEASE_COLUMNS - (with_output ? 0 : 1);
	RlLease    *leases = palloc(sizeof(RlLease) * RL_LEASE_BATCH);
	char	   *models = palloc((Size) RL_LEASE_BATCH * (RL_NAME_MAX_LEN + 1));
	char	   *job_types = palloc((Size) RL_LEASE_BATCH * (RL_NAME_MAX_LEN + 1));
	int		   *rows = palloc(sizeof(int) * RL_LEASE_BATCH);
	Datum	   *cols[RL_LEASE_COLUMNS];
	Datum		args[RL_LEASE_COLUMNS];
	MemoryContext batch_context = AllocSetContextCreate(CurrentMemoryContext,
														"pg_ratelimit lease save",
														ALLOCSET_DEFAULT_SIZES);
	StringInfoData sql;
	int			saved = 0;

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "INSERT INTO %s.rl_lease_state (lease_id, model, job_type, instance, tokens,"
					 " requests, minute_start, day_start, acquired_at, expires_at, pid, role_oid%s)"
					 " SELECT l, m, nullif(j, ''), nullif(i, ''), t, r, ms, ds, aa, ea, p, ro%s"
					 " FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12%s)"
					 " AS x(l, m, j, i, t, r, ms, ds, aa, ea, p, ro%s)"
					 " ON CONFLICT (lease_id) DO NOTHING", qschema,
					 with_output ? ", output_tokens" : "", with_output ? ", o" : "",
					 with_output ? ", $13" : "", with_output ? ", o" : "");
	for (int i = 0; i < RL_LEASE_COLUMNS; i++)
		cols[i] = palloc(sizeof(Datum) * RL_LEASE_BATCH);

	*done = false;
	for (int batches = 0; max_batches < 0 || batches < max_batches; batches++)
	{
		int			count = pgrl_leases_next_unsaved(save, leases, RL_LEASE_BATCH);
		int			n = 0;
		MemoryContext old_context;

		if (count == 0)
		{
			*done = true;
			break;
		}
		pgrl_config_lock(LW_SHARED);
		for (int i = 0; i < count; i++)
		{
			RlLease    *lease = &leases[i];
			const RlJobType *job_type = lease->job_type_slot >= 0 ?
				pgrl_job_type(lease->job_type_slot) : NULL;

			if (lease->session_bound ||
				!pgrl_model_name(lease->model_slot, lease->model_generation,
								 models + (Size) n * (RL_NAME_MAX_LEN + 1)))
				continue;
			if (job_type && job_type->in_use && job_type->generation == lease->job_type_generation)
				strlcpy(job_types + (Size) n * (RL_NAME_MAX_LEN + 1), job_type->name,
						RL_NAME_MAX_LEN + 1);
			else
				job_types[(Size) n * (RL_NAME_MAX_LEN + 1)] = '\0';
			rows[n++] = i;
		}
		pgrl_config_unlock();
		if (n == 0)
			continue;

		old_context = MemoryContextSwitchTo(batch_context);
		for (int k = 0; k < n; k++)
		{
			RlLease    *lease = &leases[rows[k]];

			cols[0][k] = Int64GetDatum(lease->lease_id);
			cols[1][k] = CStringGetTextDatum(models + (Size) k * (RL_NAME_MAX_LEN + 1));
			cols[2][k] = CStringGetTextDatum(job_types + (Size) k * (RL_NAME_MAX_LEN + 1));
			cols[3][k] = CStringGetTextDatum(lease->instance);
			cols[4][k] = Int64GetDatum(lease->tokens);
			cols[5][k] = Int32GetDatum(lease->requests);
			cols[6][k] = TimestampTzGetDatum(lease->minute_start);
			cols[7][k] = TimestampTzGetDatum(lease->day_start);
			cols[8][k] = TimestampTzGetDatum(lease->acquired_at);
			cols[9][k] = TimestampTzGetDatum(lease->expires_at);
			cols[10][k] = Int32GetDatum(lease->pid);
			cols[11][k] = ObjectIdGetDatum(lease->role);
			cols[12][k] = Int64GetDatum(lease->output_tokens);
		}
		for (int i = 0; i < num_columns; i++)
			args[i] = pgrl_array(cols[i], n, types[i]);
		pgrl_execute_arrays(sql.data, num_columns, types, args);
		MemoryContextSwitchTo(old_context);
		MemoryContextReset(batch_context);
		saved += n;
	}
	MemoryContextDelete(batch_context);
	return saved;
}

/* Delete the rows of saved leases that left the table, a batch at a time */
static int
pgrl_delete_gone_leases(const char *qschema, RlLeaseSave *save)
{
	Datum	   *ids = palloc(sizeof(Datum) * RL_LEASE_BATCH);
	int64	   *gone = palloc(sizeof(int64) * RL_LEASE_BATCH);
	Oid			type = INT8OID;
	StringInfoData sql;
	int			deleted = 0;
	int			count;

	initStringInfo(&sql);
	appendStringInfo(&sql, "DELETE FROM %s.rl_lease_state WHERE lease_id = ANY ($1)", qschema);
	while ((count = pgrl_leases_next_gone(save, gone, RL_LEASE_BATCH)) > 0)
	{
		Datum		arg;

		for (int i = 0; i < count; i++)
			ids[i] = Int64GetDatum(gone[i]);
		arg = pgrl_array(ids, count, INT8OID);
		pgrl_execute_arrays(sql.data, 1, &type, &arg);
		pfree(DatumGetPointer(arg));
		deleted += count;
	}
	return deleted;
}

/*
 * Save what changed in the open leases: insert the new ones, delete the
 * rows of those that left, each a batch at a time and with no lease lock
 * held while writing.  A save inserts at most RL_LEASE_BATCHES_PER_ROUND
 * batches a round (so that a burst of new leases does not hold up the
 * marks saved in the same round) and goes on in the next rounds; it is
 * done, and the epoch it started counts as saved, in the round that copies
 * its last lease (ledger_marks.c).  The table is written anew, in one round, only
 * when the lease table's bookkeeping cannot tell what it holds (see
 * pgrl_leases_save_round).  final: the worker is stopping, save it all.
 */
static void
pgrl_persist_leases(const char *qschema, bool with_output, Oid extension, bool final)
{
	uint64		version = pgrl_leases_version();
	bool		full;
	bool		done;
	int			inserted;
	int			deleted;

	if (!lease_save_open && persisted_anything && version == persisted_lease_version)
		return;

	full = pgrl_leases_save_round(extension);
	lease_save_pending = true;
	if (full || !lease_save_open)
	{
		/* once it is done, the marks need cover only leases granted later */
		lease_save_epoch = pgrl_ledger_start_lease_save();
		lease_save_version = version;
		if (full)
		{
			StringInfoData sql;

			initStringInfo(&sql);
			appendStringInfo(&sql, "DELETE FROM %s.rl_lease_state", qschema);
			pgrl_execute(sql.data, 0, NULL, NULL);
		}
		pgrl_leases_begin_save(&lease_save, full);
		lease_save_open = true;
	}
	/* rows are inserted before any is deleted: a lease may have gone since */
	inserted = pgrl_insert_unsaved_leases(qschema, with_output, &lease_save,
										  full || final ? -1 : RL_LEASE_BATCHES_PER_ROUND, &done);
	lease_save.gone_left = -1;
	deleted = pgrl_delete_gone_leases(qschema, &lease_save);
	if (done)
	{
		persisted_lease_epoch = lease_save_epoch;
		persisted_lease_version = lease_save_version;
		lease_save_open = false;
	}
	elog(DEBUG1, "pg_ratelimit saved %d new leases and deleted %d%s%s", inserted, deleted,
		 full ? " (all written anew)" : "", done ? "" : " (more next round)");
}

/* Columns of rl_instance_state passed as arrays */
#define RL_INSTANCE_COLUMNS	5

/* Save the registered instances if any heartbeat or membership changed */
static void
pgrl_persist_instances(const char *qschema)
{
	uint64		version = pgrl_instances_heartbeat_version();
	RlInstanceInfo *instances;
	int			count;
	Datum	   *cols[RL_INSTANCE_COLUMNS];
	Oid			types[RL_INSTANCE_COLUMNS] = {TEXTOID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	OIDOID};
	StringInfoData sql;

	if (persisted_anything && version == persisted_instances_version)
		return;
	count = pgrl_copy_instances(&instances);
	for (int i = 0; i < RL_INSTANCE_COLUMNS; i++)
		cols[i] = palloc(sizeof(Datum) * Max(count, 1));
	for (int i = 0; i < count; i++)
	{
		cols[0][i] = CStringGetTextDatum(instances[i].name);
		cols[1][i] = Int64GetDatum(instances[i].memory_kb);
		cols[2][i] = TimestampTzGetDatum(instances[i].registered_at);
		cols[3][i] = TimestampTzGetDatum(instances[i].last_heartbeat);
		cols[4][i] = ObjectIdGetDatum(instances[i].role);
	}
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "INSERT INTO %s.rl_instance_state AS s (instance, memory_kb, registered_at,"
					 " last_heartbeat, role_oid) SELECT i, nullif(m, -1), r, h, o"
					 " FROM unnest($1, $2, $3, $4, $5) AS x(i, m, r, h, o)"
					 " ON CONFLICT (instance) DO UPDATE SET memory_kb = excluded.memory_kb,"
					 " registered_at = excluded.registered_at,"
					 " last_heartbeat = excluded.last_heartbeat,"
					 " role_oid = excluded.role_oid", qschema);
	pgrl_save_row_set(qschema, "rl_instance_state", "instance", sql.data, RL_INSTANCE_COLUMNS,
					  types, cols, count);
	persisted_instances_version = version;
}

/* Marks proposed in this round, published once it has committed */
typedef struct RlProposals
{
	int			count;
	int		   *slots;			/* [max_models] */
	uint32	   *generations;
	RlMarkSet  *sets;
	Datum	   *names;
} RlProposals;

static RlProposals proposals;

/* Columns of rl_mark passed as arrays (all but saved_at), at most */
#define RL_MARK_COLUMNS		(3 + RL_NUM_DIMS + RL_DIM_CONCURRENCY + 2)

/*
 * Propose new marks for every model that needs them (exact ones for a
 * stop); they take effect at once, and are gathered for saving.
 */
static void
pgrl_propose_marks(TimestampTz now, bool exact, bool lower)
{
	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		RlMarkSet  *set = &proposals.sets[proposals.count];
		char		name[RL_NAME_MAX_LEN + 1];

		if (pgrl_ledger_propose_marks(slot, now, exact, lower, persisted_lease_epoch, set,
									  &proposals.generations[proposals.count], name))
		{
			proposals.slots[proposals.count] = slot;
			proposals.names[proposals.count] = CStringGetTextDatum(name);
			proposals.count++;
		}
	}
}

/* Write the proposed marks to rl_mark */
static void
pgrl_write_marks(const char *qschema, bool has_v12)
{
	Oid			types[RL_MARK_COLUMNS];
	Datum	   *c[RL_MARK_COLUMNS];
	Datum		args[RL_MARK_COLUMNS];
	StringInfoData columns;
	StringInfoData sql;
	int			n = proposals.count;
	int			num_columns = 0;

	if (n == 0)
		return;
	types[num_columns++] = TEXTOID;
	types[num_columns++] = TIMESTAMPTZOID;
	types[num_columns++] = TIMESTAMPTZOID;
	for (int d = 0; d < RL_NUM_DIMS; d++)
		if (pgrl_has_dimension_columns(d, has_v12))
			types[num_columns++] = INT8OID;
	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
		if (pgrl_has_dimension_columns(d, has_v12))
			types[num_columns++] = INT8OID;
	types[num_columns++] = TIMESTAMPTZOID;
	types[num_columns++] = BOOLOID;
	for (int i = 0; i < num_columns; i++)
		c[i] = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		const RlMarkSet *set = &proposals.sets[i];
		int			col = 0;

		c[col++][i] = proposals.names[i];
		c[col++][i] = TimestampTzGetDatum(set->minute_start);
		c[col++][i] = TimestampTzGetDatum(set->day_start);
		for (int d = 0; d < RL_NUM_DIMS; d++)
			if (pgrl_has_dimension_columns(d, has_v12))
				c[col++][i] = Int64GetDatum(set->mark[d]);
		for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
			if (pgrl_has_dimension_columns(d, has_v12))
				c[col++][i] = Int64GetDatum(set->next[d]);
		c[col++][i] = TimestampTzGetDatum(set->horizon);
		c[col++][i] = BoolGetDatum(set->clean);
		Assert(col == num_columns);
	}
	for (int i = 0; i < num_columns; i++)
		args[i] = pgrl_array(c[i], n, types[i]);

	/* the arrays are unnested under the columns' names */
	initStringInfo(&columns);
	appendStringInfoString(&columns, "model, minute_start, day_start");
	pgrl_append_mark_columns(&columns, has_v12);
	appendStringInfoString(&columns, ", lease_horizon, clean");
	initStringInfo(&sql);
	appendStringInfo(&sql, "INSERT INTO %s.rl_mark AS k (%s, saved_at) SELECT %s, now()"
					 " FROM unnest($1", qschema, columns.data, columns.data);
	for (int i = 1; i < num_columns; i++)
		appendStringInfo(&sql, ", $%d", i + 1);
	appendStringInfo(&sql, ") AS x(%s) ON CONFLICT (model) DO UPDATE SET"
					 " minute_start = excluded.minute_start, day_start = excluded.day_start",
					 columns.data);
	for (int d = 0; d < RL_NUM_DIMS; d++)
		if (pgrl_has_dimension_columns(d, has_v12))
			appendStringInfo(&sql, ", %s = excluded.%s", mark_columns[d], mark_columns[d]);
	for (int d = 0; d < RL_DIM_CONCURRENCY; d++)
		if (pgrl_has_dimension_columns(d, has_v12))
			appendStringInfo(&sql, ", %s = excluded.%s", next_mark_columns[d],
							 next_mark_columns[d]);
	appendStringInfoString(&sql, ", lease_horizon = excluded.lease_horizon,"
						   " clean = excluded.clean, saved_at = excluded.saved_at");
	pgrl_execute_arrays(sql.data, num_columns, types, args);
	elog(DEBUG1, "pg_ratelimit saved the marks of %d models", n);
}

/*
 * The marks (and leases) saved in the round that just committed are
 * durable: put the marks in force.  Called by the worker after the commit (a round that failed
 * publishes nothing: its proposals only ever held admission back).
 */
void
pgrl_publish_marks(void)
{
	if (lease_save_pending)
		pgrl_leases_save_committed();
	lease_save_pending = false;
	for (int i = 0; i < proposals.count; i++)
		pgrl_ledger_publish_marks(proposals.slots[i], proposals.generations[i],
								  &proposals.sets[i]);
	proposals.count = 0;
}

/* Forget what was saved where, when the tables are new */
static void
pgrl_forget_persisted(void)
{
	memset(persisted, 0, sizeof(RlPersisted) * pgrl_max_models);
	memset(persisted_share_versions, 0, sizeof(uint64) * pgrl_max_models * pgrl_max_job_types);
	for (Size i = 0; i < (Size) pgrl_max_models * pgrl_max_job_types; i++)
		persisted_share_ended[i] = RL_NO_WINDOW;	/* 0 is a day */
	persisted_anything = false;
	persisted_clock = false;
	persisted_stats = false;
}

/* Worker-local bookkeeping, allocated once */
static void
pgrl_init_persisted(void)
{
	if (persisted != NULL)
		return;
	persisted = MemoryContextAllocZero(TopMemoryContext, sizeof(RlPersisted) * pgrl_max_models);
	persisted_share_versions = MemoryContextAllocZero(TopMemoryContext,
													  sizeof(uint64) * pgrl_max_models *
													  pgrl_max_job_types);
	persisted_share_ended = MemoryContextAllocZero(TopMemoryContext,
												   sizeof(TimestampTz) * pgrl_max_models *
												   pgrl_max_job_types);
	proposals.slots = MemoryContextAlloc(TopMemoryContext, sizeof(int) * pgrl_max_models);
	proposals.generations = MemoryContextAlloc(TopMemoryContext, sizeof(uint32) * pgrl_max_models);
	proposals.sets = MemoryContextAlloc(TopMemoryContext, sizeof(RlMarkSet) * pgrl_max_models);
	proposals.names = MemoryContextAlloc(TopMemoryContext, sizeof(Datum) * pgrl_max_models);
}

/* Delete the saved rows of models and job types that are gone */
static void
pgrl_delete_dropped_rows(const char *qschema)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "DELETE FROM %s.rl_counter c WHERE NOT EXISTS"
					 " (SELECT FROM %s.rl_model m WHERE m.model = c.model)",
					 qschema, qschema);
	pgrl_execute(sql.data, 0, NULL, NULL);
	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "DELETE FROM %s.rl_mark k WHERE NOT EXISTS"
					 " (SELECT FROM %s.rl_model m WHERE m.model = k.model)",
					 qschema, qschema);
	pgrl_execute(sql.data, 0, NULL, NULL);
	resetStringInfo(&sql);
	appendStringInfo(&sql,
					 "DELETE FROM %s.rl_share_counter s WHERE NOT EXISTS"
					 " (SELECT FROM %s.rl_model m WHERE m.model = s.model)"
					 " OR NOT EXISTS (SELECT FROM %s.rl_job_type j WHERE j.job_type = s.job_type)",
					 qschema, qschema, qschema);
	pgrl_execute(sql.data, 0, NULL, NULL);
}

/* Save the test clock's offset if it moved */
static void
pgrl_persist_clock(const char *qschema)
{
	int64		clock_offset = pgrl_clock_offset();
	Datum		arg = Int64GetDatum(clock_offset);
	Oid			type = INT8OID;
	StringInfoData sql;

	if (persisted_clock && clock_offset == persisted_clock_offset)
		return;
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "INSERT INTO %s.rl_saved_clock VALUES (1, $1, now())"
					 " ON CONFLICT (id) DO UPDATE SET clock_offset_us = excluded.clock_offset_us,"
					 " saved_at = excluded.saved_at", qschema);
	pgrl_execute(sql.data, 1, &type, &arg);
	persisted_clock_offset = clock_offset;
	persisted_clock = true;
}

/*
 * One saving round of the worker, inside its transaction, after the
 * configuration is loaded.  save_state: counters, shares, instances,
 * leases, the clock (what changed since the last call).  save_marks: new
 * high-water marks where needed (see ledger_marks.c).  final: the worker is about
 * to stop: exact marks first, so that nothing more is granted, then
 * everything.  The caller commits synchronously and then calls
 * pgrl_publish_marks().  Returns the number of rows written (for rl_worker).
 */
int64
pgrl_persist_state(bool save_state, bool save_marks, bool final)
{
	RlExtSql	session;
	TimestampTz now = pgrl_now();
	uint64		config_generation;

	pgrl_init_persisted();
	proposals.count = 0;
	rows_written = 0;
	if (!pgrl_extsql_begin(&session, false))
		return 0;

	/* a re-created extension has empty tables: write everything again */
	if (session.extension_oid != persisted_extension)
	{
		pgrl_forget_persisted();
		persisted_extension = session.extension_oid;
	}

	if (final)
		pgrl_propose_marks(now, true, true);
	if (save_state)
	{
		bool		with_stats = pgrl_has_stats_columns(session.version);

		/* updated to a version with rl_stats' columns: fill them in for all */
		if (with_stats && !persisted_stats)
			for (int slot = 0; slot < pgrl_max_models; slot++)
				persisted[slot].version = 0;
		persisted_stats = with_stats;
		pgrl_persist_models(session.qschema, with_stats,
							pgrl_has_v12_columns(session.version));
		pgrl_persist_instances(session.qschema);
		pgrl_persist_leases(session.qschema, pgrl_has_v12_columns(session.version),
							session.extension_oid, final);

		pgrl_config_lock(LW_SHARED);
		config_generation = pgrl_config_generation();
		pgrl_config_unlock();
		if (!persisted_anything || config_generation != persisted_config_generation)
		{
			pgrl_delete_dropped_rows(session.qschema);
			persisted_config_generation = config_generation;
		}
		persisted_anything = true;
	}
	/* marks are for windows of the limiter's clock: save it with them */
	pgrl_persist_clock(session.qschema);
	if (!final && save_marks)
		pgrl_propose_marks(now, false, save_state);
	pgrl_write_marks(session.qschema, pgrl_has_v12_columns(session.version));
	pgrl_extsql_end(&session);
	return (int64) rows_written;
}
