/*-------------------------------------------------------------------------
 *
 * api.c
 *		The SQL-callable functions that act: acquire, release, capacity,
 *		instances, the clock, and the configuration triggers.  The views
 *		are in views.c.
 *
 * Each function checks its arguments completely before it changes
 * anything, so a call that fails leaves the limiter as it was, and then
 * calls the module that does the work (src/README.md).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "acquire.h"
#include "api.h"
#include "catalog.h"
#include "clock.h"
#include "config.h"
#include "grant.h"
#include "instance.h"
#include "ledger.h"
#include "names.h"
#include "settings.h"
#include "wait.h"

PG_FUNCTION_INFO_V1(rl_acquire);
PG_FUNCTION_INFO_V1(rl_acquire_any);
PG_FUNCTION_INFO_V1(rl_release);
PG_FUNCTION_INFO_V1(rl_capacity);
PG_FUNCTION_INFO_V1(rl_heartbeat);
PG_FUNCTION_INFO_V1(rl_unregister);
PG_FUNCTION_INFO_V1(rl_clock);
PG_FUNCTION_INFO_V1(rl_debug_set_clock);
PG_FUNCTION_INFO_V1(rl_config_trigger);
PG_FUNCTION_INFO_V1(rl_internal_resync);
PG_FUNCTION_INFO_V1(rl_internal_check);

/* Argument positions shared by rl_acquire and rl_acquire_any */
#define ARG_MODELS		0
#define ARG_JOB_TYPE	1
#define ARG_TOKENS		2
#define ARG_REQUESTS	3
#define ARG_MAX_WAIT	4
#define ARG_INSTANCE	5
#define ARG_TTL			6
#define ARG_SESSION_BOUND	7
#define ARG_OUTPUT_TOKENS	8	/* from 1.2 on */

/* Columns of the rl_grant and rl_settlement result types */
#define GRANT_COLUMNS		5
#define SETTLEMENT_COLUMNS	7
#define CAPACITY_COLUMNS	6

/* Display order of rl_capacity rows */
static const RlDimension capacity_order[] = {
	RL_DIM_RPM, RL_DIM_TPM, RL_DIM_ITPM, RL_DIM_OTPM, RL_DIM_RPD, RL_DIM_TPD,
	RL_DIM_CONCURRENCY
};

/* A per-backend cache of a composite result type's descriptor */
typedef struct RlResultType
{
	Oid			type;
	TupleDesc	desc;
} RlResultType;

static RlResultType grant_type;
static RlResultType settlement_type;

/*
 * Every call that reads or changes the limiter: the library is preloaded,
 * this is its database, and shared memory mirrors the configuration
 * tables (which may load them, and the saved state, first: config.c).
 */
void
pgrl_api_begin(void)
{
	pgrl_require_library();
	pgrl_config_load_if_needed();
}

/*
 * The descriptor of the row a function returns, without a catalog lookup
 * on every call: rl_acquire and rl_release are the hot path.
 */
static TupleDesc
pgrl_result_desc(FunctionCallInfo fcinfo, RlResultType *cache)
{
	Oid			type = get_fn_expr_rettype(fcinfo->flinfo);
	TupleDesc	desc;

	if (!OidIsValid(type))
	{
		if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		return desc;
	}
	if (cache->desc == NULL || cache->type != type)
	{
		MemoryContext oldcontext = MemoryContextSwitchTo(TopMemoryContext);

		desc = lookup_rowtype_tupdesc_copy(type, -1);
		MemoryContextSwitchTo(oldcontext);
		if (cache->desc)
			FreeTupleDesc(cache->desc);
		cache->desc = desc;
		cache->type = type;
	}
	return cache->desc;
}

static text *
pgrl_require_text(FunctionCallInfo fcinfo, int argno, const char *what)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	return PG_GETARG_TEXT_PP(argno);
}

static void
pgrl_require_non_negative(FunctionCallInfo fcinfo, int argno, const char *what,
						  bool is_int4)
{
	if (PG_ARGISNULL(argno))
		return;
	if (is_int4 ? PG_GETARG_INT32(argno) < 0 : PG_GETARG_INT64(argno) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", what)));
}

/*
 * A job type name argument, checked, or NULL when not given.  Done before
 * any lock is taken: no error may be raised with an LWLock held (the
 * message goes to the client first, and a client that does not read would
 * keep the lock held).
 */
static char *
pgrl_job_type_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *name;

	if (PG_ARGISNULL(argno))
		return NULL;
	name = palloc(RL_NAME_MAX_LEN + 1);
	pgrl_copy_name(name, text_to_cstring(PG_GETARG_TEXT_PP(argno)), "job type");
	return name;
}

static Datum
pgrl_interval_datum(int64 us)
{
	Interval   *interval = palloc0(sizeof(Interval));

	interval->time = us;
	return IntervalPGetDatum(interval);
}

/* Copy and validate a model name argument */
static char *
pgrl_model_arg(text *arg)
{
	char	   *name = palloc(RL_NAME_MAX_LEN + 1);

	pgrl_copy_name(name, text_to_cstring(arg), "model");
	return name;
}

/*
 * The body of rl_acquire and rl_acquire_any: check the arguments, acquire
 * (acquire.c), and return the rl_grant row.
 */
static Datum
pgrl_acquire_call(FunctionCallInfo fcinfo, char **names, int num_models)
{
	RlAcquireArgs args;
	RlAcquireResult result;
	TupleDesc	tupdesc;
	Datum		values[GRANT_COLUMNS];
	bool		nulls[GRANT_COLUMNS] = {false, false, false, false, false};

	memset(&args, 0, sizeof(args));
	args.names = names;
	args.num_models = num_models;
	pgrl_require_non_negative(fcinfo, ARG_TOKENS, "tokens", false);
	pgrl_require_non_negative(fcinfo, ARG_REQUESTS, "requests", true);
	args.has_tokens = !PG_ARGISNULL(ARG_TOKENS);
	args.tokens = args.has_tokens ? PG_GETARG_INT64(ARG_TOKENS) : 0;
	if (PG_NARGS() > ARG_OUTPUT_TOKENS)
	{
		pgrl_require_non_negative(fcinfo, ARG_OUTPUT_TOKENS, "output_tokens", false);
		args.has_output_tokens = !PG_ARGISNULL(ARG_OUTPUT_TOKENS);
		args.output_tokens = args.has_output_tokens ?
			PG_GETARG_INT64(ARG_OUTPUT_TOKENS) : 0;
	}
	args.has_requests = !PG_ARGISNULL(ARG_REQUESTS);
	args.requests = args.has_requests ? PG_GETARG_INT32(ARG_REQUESTS) : 0;
	args.max_wait_us = -1;
	if (!PG_ARGISNULL(ARG_MAX_WAIT))
	{
		args.max_wait_us = pgrl_interval_to_us(PG_GETARG_INTERVAL_P(ARG_MAX_WAIT), "max_wait");
		if (args.max_wait_us < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_wait must not be negative")));
	}
	args.ttl_us = (int64) Min(pgrl_lease_ttl_s, pgrl_max_lease_ttl_s) * USECS_PER_SEC;
	if (!PG_ARGISNULL(ARG_TTL))
	{
		args.ttl_us = pgrl_interval_to_us(PG_GETARG_INTERVAL_P(ARG_TTL), "ttl");
		if (args.ttl_us <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ttl must be positive")));
		if (args.ttl_us > (int64) pgrl_max_lease_ttl_s * USECS_PER_SEC)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ttl must not be longer than ratelimit.max_lease_ttl (%d s)",
							pgrl_max_lease_ttl_s),
					 errhint("Renew long work with shorter leases, or have an administrator raise ratelimit.max_lease_ttl.")));
	}
	args.session_bound = PG_NARGS() > ARG_SESSION_BOUND && !PG_ARGISNULL(ARG_SESSION_BOUND) &&
		PG_GETARG_BOOL(ARG_SESSION_BOUND);
	args.job_type = pgrl_job_type_arg(fcinfo, ARG_JOB_TYPE);
	if (!PG_ARGISNULL(ARG_INSTANCE))
		pgrl_copy_name(args.instance, text_to_cstring(PG_GETARG_TEXT_PP(ARG_INSTANCE)), "instance");
	tupdesc = pgrl_result_desc(fcinfo, &grant_type);

	pgrl_acquire(&args, &result);

	values[0] = BoolGetDatum(result.granted);
	values[2] = CStringGetTextDatum(names[result.model_index]);
	if (result.granted)
	{
		values[1] = Int64GetDatum(result.lease_id);
		nulls[3] = true;
		nulls[4] = true;
	}
	else
	{
		nulls[1] = true;
		if (result.retry_at != 0)
			values[3] = pgrl_interval_datum(Max(result.retry_at - result.now, 0));
		else
			nulls[3] = true;
		values[4] = CStringGetTextDatum(pgrl_dimension_names[result.limited_by]);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * rl_acquire(model, job_type, tokens, requests, max_wait, instance, ttl)
 * RETURNS rl_grant
 */
Datum
rl_acquire(PG_FUNCTION_ARGS)
{
	char	   *name;

	pgrl_require_primary("admit requests");
	pgrl_api_begin();
	name = pgrl_model_arg(pgrl_require_text(fcinfo, ARG_MODELS, "model"));
	return pgrl_acquire_call(fcinfo, &name, 1);
}

/* A name and where it is in a list */
typedef struct RlNamePosition
{
	const char *name;
	int			position;
} RlNamePosition;

static int
pgrl_name_position_cmp(const void *a, const void *b)
{
	const RlNamePosition *pa = (const RlNamePosition *) a;
	const RlNamePosition *pb = (const RlNamePosition *) b;
	int			cmp = strcmp(pa->name, pb->name);

	if (cmp != 0)
		return cmp;
	return pa->position < pb->position ? -1 : pa->position > pb->position ? 1 : 0;
}

/*
 * Drop the later copies of repeated names, keeping the order of the first
 * ones; returns how many are left.  A model named twice is tried (and
 * counted) once.
 */
static int
pgrl_unique_names(char **names, int count)
{
	RlNamePosition *sorted;
	bool	   *repeated;
	int			kept = 0;

	if (count < 2)
		return count;
	sorted = palloc(sizeof(RlNamePosition) * count);
	for (int i = 0; i < count; i++)
	{
		sorted[i].name = names[i];
		sorted[i].position = i;
	}
	qsort(sorted, count, sizeof(RlNamePosition), pgrl_name_position_cmp);
	repeated = palloc0(sizeof(bool) * count);
	for (int i = 1; i < count; i++)
		if (strcmp(sorted[i].name, sorted[i - 1].name) == 0)
			repeated[sorted[i].position] = true;
	for (int i = 0; i < count; i++)
		if (!repeated[i])
			names[kept++] = names[i];
	pfree(sorted);
	pfree(repeated);
	return kept;
}

/*
 * rl_acquire_any(models[], job_type, tokens, requests, max_wait, instance,
 * ttl) RETURNS rl_grant: the first model in order that admits.
 */
Datum
rl_acquire_any(PG_FUNCTION_ARGS)
{
	ArrayType  *array;
	Datum	   *elements;
	bool	   *element_nulls;
	int			count;
	char	  **names;

	pgrl_require_primary("admit requests");
	pgrl_api_begin();
	if (PG_ARGISNULL(ARG_MODELS))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("models must not be null")));
	array = PG_GETARG_ARRAYTYPE_P(ARG_MODELS);
	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("models must be a one-dimensional array")));
	deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT,
					  &elements, &element_nulls, &count);
	if (count == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("models must not be empty")));
	names = palloc(sizeof(char *) * count);
	for (int i = 0; i < count; i++)
	{
		if (element_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("models must not contain nulls")));
		names[i] = pgrl_model_arg(DatumGetTextPP(elements[i]));
	}
	return pgrl_acquire_call(fcinfo, names, pgrl_unique_names(names, count));
}

static int64
pgrl_checked_sum(int64 a, int64 b)
{
	int64		sum;

	if (pg_add_s64_overflow(a, b, &sum))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("token counts are out of range")));
	return sum;
}

/*
 * rl_release(lease_id, input_tokens, output_tokens, cached_tokens, requests)
 * RETURNS rl_settlement
 */
Datum
rl_release(PG_FUNCTION_ARGS)
{
	int64		lease_id;
	RlUsage		usage;
	RlSettlement settlement;
	TimestampTz now;
	TupleDesc	tupdesc;
	Datum		values[SETTLEMENT_COLUMNS];
	bool		nulls[SETTLEMENT_COLUMNS];

	pgrl_require_primary("release leases");
	pgrl_api_begin();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("lease_id must not be null")));
	lease_id = PG_GETARG_INT64(0);
	pgrl_require_non_negative(fcinfo, 1, "input_tokens", false);
	pgrl_require_non_negative(fcinfo, 2, "output_tokens", false);
	pgrl_require_non_negative(fcinfo, 3, "cached_tokens", false);
	pgrl_require_non_negative(fcinfo, 4, "requests", true);

	memset(&usage, 0, sizeof(usage));
	usage.has_tokens = !PG_ARGISNULL(1) || !PG_ARGISNULL(2) || !PG_ARGISNULL(3);
	usage.input = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
	usage.output = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);
	usage.cached = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT64(3);
	usage.tokens_without_cached = pgrl_checked_sum(usage.input, usage.output);
	usage.tokens_with_cached = pgrl_checked_sum(usage.tokens_without_cached, usage.cached);
	usage.has_requests = !PG_ARGISNULL(4);
	usage.requests = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4);
	tupdesc = pgrl_result_desc(fcinfo, &settlement_type);

	now = pgrl_now();
	pgrl_expire_due_leases(now);
	pgrl_release_lease(lease_id, &usage, now, &settlement);

	memset(nulls, true, sizeof(nulls));
	values[0] = BoolGetDatum(settlement.released);
	nulls[0] = false;
	if (settlement.model_known)
	{
		values[1] = CStringGetTextDatum(settlement.model);
		values[2] = Int64GetDatum(settlement.tokens_estimated);
		nulls[1] = nulls[2] = false;
	}
	if (settlement.released)
	{
		values[4] = Int64GetDatum(settlement.tokens_refunded);
		values[5] = Int64GetDatum(settlement.overage);
		nulls[4] = nulls[5] = false;
	}
	if (settlement.has_actual)
	{
		values[3] = Int64GetDatum(settlement.tokens_actual);
		values[6] = NumericGetDatum(settlement.cost);
		nulls[3] = nulls[6] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * rl_capacity(model, job_type, tokens, requests): min-based capacity, one
 * row per configured limit plus a 'total' row.
 */
Datum
rl_capacity(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name;
	char	   *job_type;
	RlRequest	request;
	RlCapacity	capacity;
	TimestampTz now;
	int64		tokens;
	int64		output;
	int32		requests;
	bool		has_output;
	const int	num_dims = (int) lengthof(capacity_order);
	int			model_slot;
	bool		known;

	pgrl_api_begin();
	name = pgrl_model_arg(pgrl_require_text(fcinfo, 0, "model"));
	job_type = pgrl_job_type_arg(fcinfo, 1);
	pgrl_require_non_negative(fcinfo, 2, "tokens", false);
	pgrl_require_non_negative(fcinfo, 3, "requests", true);
	tokens = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);
	requests = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3);
	/* output_tokens came with 1.2 */
	has_output = PG_NARGS() > 4 && !PG_ARGISNULL(4);
	if (has_output)
		pgrl_require_non_negative(fcinfo, 4, "output_tokens", false);
	output = has_output ? PG_GETARG_INT64(4) : 0;
	InitMaterializedSRF(fcinfo, 0);

	now = pgrl_now();
	pgrl_expire_due_leases(now);

	pgrl_config_lock(LW_SHARED);
	if (!pgrl_resolve_request(job_type, PG_ARGISNULL(2) ? NULL : &tokens,
							  has_output ? &output : NULL,
							  PG_ARGISNULL(3) ? NULL : &requests, &request))
	{
		pgrl_config_unlock();
		pgrl_report_no_job_type(job_type);
	}
	if (request.output_tokens > request.tokens)
	{
		pgrl_config_unlock();
		pgrl_report_output_exceeds(&request);
	}
	model_slot = pgrl_model_slot(name);
	known = model_slot >= 0 && pgrl_ledger_capacity(model_slot, &request, now, &capacity);
	pgrl_config_unlock();
	if (!known)
		pgrl_report_no_model(name);

	/* One row per configured limit, then the 'total' row */
	for (int i = 0; i <= num_dims; i++)
	{
		Datum		values[CAPACITY_COLUMNS];
		bool		nulls[CAPACITY_COLUMNS] = {false, false, false, false, false, false};
		int			d = i < num_dims ? (int) capacity_order[i] : capacity.total_dim;

		if (i < num_dims)
		{
			if (capacity.limit[d] == RL_UNLIMITED)
				continue;
			values[0] = CStringGetTextDatum(pgrl_dimension_names[d]);
			values[1] = Int64GetDatum(capacity.limit[d]);
			values[2] = Int64GetDatum(capacity.used[d]);
			values[3] = Int64GetDatum(Max(0, capacity.limit[d] - capacity.used[d]));
		}
		else
		{
			values[0] = CStringGetTextDatum("total");
			nulls[1] = nulls[2] = nulls[3] = true;
		}
		if (d >= 0 && capacity.slots[d] >= 0)
			values[4] = Int64GetDatum(capacity.slots[d]);
		else
			nulls[4] = true;
		if (d >= 0 && capacity.resets_at[d] != 0)
			values[5] = TimestampTzGetDatum(capacity.resets_at[d]);
		else
			nulls[5] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}


/*
 * rl_heartbeat(instance, memory_kb) RETURNS integer: register or refresh an
 * instance; returns the number of live instances.
 */
Datum
rl_heartbeat(PG_FUNCTION_ARGS)
{
	char		name[RL_NAME_MAX_LEN + 1];
	int64		memory_kb = -1;

	pgrl_require_primary("register instances");
	pgrl_api_begin();
	pgrl_copy_name_arg(fcinfo, 0, name, "instance");
	if (!PG_ARGISNULL(1))
	{
		memory_kb = PG_GETARG_INT64(1);
		if (memory_kb < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("memory_kb must not be negative")));
	}
	PG_RETURN_INT32(pgrl_instance_heartbeat(name, memory_kb, pgrl_now()));
}

/* rl_unregister(instance): drop an instance at once, expiring its leases */
Datum
rl_unregister(PG_FUNCTION_ARGS)
{
	char		name[RL_NAME_MAX_LEN + 1];

	pgrl_require_primary("unregister instances");
	pgrl_api_begin();
	pgrl_copy_name_arg(fcinfo, 0, name, "instance");
	if (pgrl_drop_instance(name))
	{
		(void) pgrl_expire_instance_leases(name, pgrl_now());
		pgrl_instances_changed();
	}
	PG_RETURN_VOID();
}

/* rl_clock(): the limiter's current time */
Datum
rl_clock(PG_FUNCTION_ARGS)
{
	pgrl_api_begin();
	PG_RETURN_TIMESTAMPTZ(pgrl_now());
}

/*
 * rl_debug_set_clock(now timestamptz): set the limiter's clock for the whole
 * server; NULL returns to real time.  Superuser only, and only on a server
 * started with ratelimit.enable_test_clock.
 */
Datum
rl_debug_set_clock(PG_FUNCTION_ARGS)
{
	int64		offset = 0;

	pgrl_require_primary("set the clock");
	pgrl_api_begin();
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to set the pg_ratelimit clock")));
	if (!pgrl_enable_test_clock)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the pg_ratelimit test clock is not enabled"),
				 errhint("The test clock is for tests only: set ratelimit.enable_test_clock = on and restart the server.")));

	if (!PG_ARGISNULL(0))
	{
		TimestampTz target = PG_GETARG_TIMESTAMPTZ(0);

		if (TIMESTAMP_NOT_FINITE(target))
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("the pg_ratelimit clock cannot be set to an infinite time")));
		offset = target - GetCurrentTimestamp();
	}
	pgrl_clock_set_offset(offset);
	/* boundaries and expiries moved: let the worker recompute its sleep */
	pgrl_wake_worker();
	pgrl_wake_all_waiters();
	elog(DEBUG1, "pg_ratelimit clock offset set to " INT64_FORMAT " us", offset);
	PG_RETURN_VOID();
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
	pgrl_require_library_loaded();
	/* elsewhere (a restored dump, a copy) shared memory is not these tables' */
	if (pgrl_in_served_database())
		pgrl_config_changed_in_xact();
	if (!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		PG_RETURN_POINTER(NULL);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		PG_RETURN_POINTER(trigdata->tg_newtuple);
	PG_RETURN_POINTER(trigdata->tg_trigtuple);
}

/*
 * Called by the install script: at commit, make shared memory mirror the
 * (new, empty) tables and forget the instances of an earlier installation.
 * Without the preloaded library, or in a database the limiter does not
 * serve, there is nothing to do.
 */
Datum
rl_internal_resync(PG_FUNCTION_ARGS)
{
	if (pgrl_preloaded && pgrl_in_served_database())
		pgrl_config_reinstalled_in_xact();
	PG_RETURN_VOID();
}

/* Called by the configuration functions: fail early without the library */
Datum
rl_internal_check(PG_FUNCTION_ARGS)
{
	pgrl_require_library();
	PG_RETURN_VOID();
}
