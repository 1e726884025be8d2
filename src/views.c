/*-------------------------------------------------------------------------
 *
 * views.c
 *		The SQL-callable functions behind the views: rl_status,
 *		rl_job_status, rl_leases, rl_instances, rl_allocation, rl_stats
 *		and rl_worker.
 *
 * They read copies (ledger.h, lease.h, instance.h) and build their rows
 * with no lock held: the tuplestore may write a file, and fail.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "access/htup_details.h"
#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "api.h"
#include "catalog.h"
#include "clock.h"
#include "grant.h"
#include "instance.h"
#include "lease.h"
#include "ledger.h"
#include "names.h"
#include "settings.h"
#include "wait.h"
#include "workerstate.h"

PG_FUNCTION_INFO_V1(rl_status_internal);
PG_FUNCTION_INFO_V1(rl_status_extra_internal);
PG_FUNCTION_INFO_V1(rl_job_status_internal);
PG_FUNCTION_INFO_V1(rl_job_status_extra_internal);
PG_FUNCTION_INFO_V1(rl_leases_internal);
PG_FUNCTION_INFO_V1(rl_instances_internal);
PG_FUNCTION_INFO_V1(rl_allocation_internal);
PG_FUNCTION_INFO_V1(rl_stats_internal);
PG_FUNCTION_INFO_V1(rl_stats_extra_internal);
PG_FUNCTION_INFO_V1(rl_worker_internal);

/* Columns of each view's function */
#define STATUS_COLUMNS		20
#define JOB_STATUS_COLUMNS	20
#define EXTRA_JOB_STATUS_COLUMNS	6
#define LEASES_COLUMNS		11
#define INSTANCES_COLUMNS	7
#define ALLOCATION_COLUMNS	7
#define STATS_COLUMNS		25
#define EXTRA_STATS_COLUMNS	4
#define WORKER_COLUMNS		20

/* pool_slots of a model none of whose limits the estimates consume */
#define RL_UNLIMITED_POOL_SLOTS		100

/* The order of the window limits in rl_status and rl_job_status */
static const RlDimension window_order[] = {RL_DIM_RPM, RL_DIM_TPM, RL_DIM_RPD, RL_DIM_TPD};

/* Nullable limit column */
static void
pgrl_limit_column(int64 limit, Datum *value, bool *isnull)
{
	*isnull = limit == RL_UNLIMITED;
	*value = Int64GetDatum(limit);
}

/* rl_status_internal(): one row per model, behind the rl_status view */
Datum
rl_status_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now;

	pgrl_api_begin();
	InitMaterializedSRF(fcinfo, 0);
	now = pgrl_now();
	pgrl_expire_due_leases(now);

	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		RlModelStatus status;
		Datum		values[STATUS_COLUMNS];
		bool		nulls[STATUS_COLUMNS];
		int			col = 0;
		bool		known;

		/* config_lock: the slot keeps its model while it is copied */
		pgrl_config_lock(LW_SHARED);
		known = pgrl_ledger_model_status(slot, now, &status);
		pgrl_config_unlock();
		if (!known)
			continue;

		memset(nulls, false, sizeof(nulls));
		values[col++] = CStringGetTextDatum(status.name);
		for (int k = 0; k < (int) lengthof(window_order); k++)
		{
			pgrl_limit_column(status.limit[window_order[k]], &values[col], &nulls[col]);
			col++;
		}
		pgrl_limit_column(status.limit[RL_DIM_CONCURRENCY], &values[col], &nulls[col]);
		col++;
		for (int k = 0; k < (int) lengthof(window_order); k++)
			values[col++] = Int64GetDatum(status.used[window_order[k]]);
		values[col++] = Int64GetDatum(status.used[RL_DIM_CONCURRENCY]);
		values[col++] = Int32GetDatum((int32) pgrl_model_waiters(slot));
		values[col++] = TimestampTzGetDatum(status.minute_resets_at);
		values[col++] = TimestampTzGetDatum(status.day_resets_at);
		values[col++] = Int64GetDatum(status.granted);
		values[col++] = Int64GetDatum(status.denied);
		values[col++] = Int64GetDatum(status.expired);
		values[col++] = Int64GetDatum(status.overage_events);
		values[col++] = Int64GetDatum(status.overage_tokens);
		values[col++] = NumericGetDatum(pgrl_numeric_load(&status.cost_today));
		Assert(col == lengthof(values));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* A nullable column: NULL where the provider said nothing (negative or 0) */
static void
pgrl_provider_column(int64 value, Datum *datum, bool *isnull)
{
	*isnull = value < 0;
	*datum = Int64GetDatum(value);
}

#define EXTRA_STATUS_COLUMNS	16

/* The limit of the model each limit the provider reports on is checked against */
static const RlDimension provider_limit_dims[RL_NUM_PROVIDER_DIMS] = {
	[RL_PROVIDER_REQUESTS] = RL_DIM_RPM,
	[RL_PROVIDER_TOKENS] = RL_DIM_TPM,
	[RL_PROVIDER_INPUT_TOKENS] = RL_DIM_ITPM,
	[RL_PROVIDER_OUTPUT_TOKENS] = RL_DIM_OTPM,
};

/*
 * rl_status_extra_internal(): one row per model, the columns rl_status got
 * in 1.2: its window type, its input and output token limits and their
 * usage, and what the provider last said of it (rl_observe).
 * provider_limits_differ is true when a limit the provider reported is not
 * the one configured (requests: rpm, tokens: tpm, input and output
 * tokens: itpm and otpm).
 */
Datum
rl_status_extra_internal(PG_FUNCTION_ARGS)
{
	TimestampTz now;

	pgrl_api_begin();
	InitMaterializedSRF(fcinfo, 0);
	now = pgrl_now();
	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
		RlModelStatus status;
		const RlProviderState *provider = &status.provider;
		Datum		values[EXTRA_STATUS_COLUMNS];
		bool		nulls[EXTRA_STATUS_COLUMNS];
		int			col = 0;
		bool		known;
		bool		differ = false;
		TimestampTz cooldown_until;

		pgrl_config_lock(LW_SHARED);
		known = pgrl_ledger_model_status(slot, now, &status);
		pgrl_config_unlock();
		if (!known)
			continue;

		memset(nulls, false, sizeof(nulls));
		values[col++] = CStringGetTextDatum(status.name);
		values[col++] = CStringGetTextDatum(pgrl_window_type_names[status.window_type]);
		pgrl_limit_column(status.limit[RL_DIM_ITPM], &values[col], &nulls[col]);
		col++;
		pgrl_limit_column(status.limit[RL_DIM_OTPM], &values[col], &nulls[col]);
		col++;
		values[col++] = Int64GetDatum(status.used[RL_DIM_ITPM]);
		values[col++] = Int64GetDatum(status.used[RL_DIM_OTPM]);
		for (int p = 0; p < RL_NUM_PROVIDER_DIMS; p++, col++)
			pgrl_provider_column(provider->limit[p], &values[col], &nulls[col]);
		pgrl_provider_column(provider->remaining[RL_PROVIDER_REQUESTS], &values[col], &nulls[col]);
		col++;
		pgrl_provider_column(provider->remaining[RL_PROVIDER_TOKENS], &values[col], &nulls[col]);
		col++;
		for (int p = 0; p < RL_NUM_PROVIDER_DIMS; p++)
			if (provider->limit[p] >= 0 &&
				provider->limit[p] != status.limit[provider_limit_dims[p]])
				differ = true;
		values[col] = BoolGetDatum(differ);
		nulls[col++] = provider->observed_at == 0;
		/* as admission sees it: ratelimit.max_provider_pause may have fallen */
		cooldown_until = Min(provider->cooldown_until, pgrl_provider_pause_limit(now));
		values[col] = TimestampTzGetDatum(cooldown_until);
		nulls[col++] = cooldown_until <= now;
		values[col] = TimestampTzGetDatum(provider->observed_at);
		nulls[col++] = provider->observed_at == 0;
		values[col++] = Int64GetDatum(provider->headers_ignored);
		Assert(col == EXTRA_STATUS_COLUMNS);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* The order of the denial columns of rl_stats, by limited_by */
static const int denied_order[] = {
	RL_DIM_RPM, RL_DIM_TPM, RL_DIM_RPD, RL_DIM_TPD, RL_DIM_CONCURRENCY,
	RL_LIMITED_BY_JOB_TYPE, RL_LIMITED_BY_MEMORY
};

/* ... and of those rl_stats got at its end in 1.2 */
static const int denied_order_extra[] = {
	RL_DIM_ITPM, RL_DIM_OTPM, RL_LIMITED_BY_PROVIDER
};

StaticAssertDecl(lengthof(denied_order) + lengthof(denied_order_extra) == RL_NUM_LIMITED_BY,
				 "every limited_by has a column in rl_stats");

/*
 * rl_stats_internal(): one row per model, behind the rl_stats view: the
 * counters that never reset, for monitoring.
 */
Datum
rl_stats_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	pgrl_api_begin();
	InitMaterializedSRF(fcinfo, 0);
	/* expiries due now count in expired */
	pgrl_expire_due_leases(pgrl_now());

	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		RlModelStatsRow row;
		const RlModelStats *stats = &row.stats;
		Datum		values[STATS_COLUMNS];
		bool		nulls[STATS_COLUMNS];
		int			col = 0;
		bool		known;

		/* config_lock: the slot keeps its model while it is copied */
		pgrl_config_lock(LW_SHARED);
		known = pgrl_ledger_model_stats(slot, &row);
		pgrl_config_unlock();
		if (!known)
			continue;

		memset(nulls, false, sizeof(nulls));
		values[col++] = CStringGetTextDatum(row.name);
		values[col++] = Int64GetDatum(row.granted);
		values[col++] = Int64GetDatum(row.denied);
		for (int k = 0; k < (int) lengthof(denied_order); k++)
			values[col++] = Int64GetDatum(stats->denied_by[denied_order[k]]);
		for (int k = 0; k < RL_NUM_WAIT_OUTCOMES; k++)
			values[col++] = Int64GetDatum(stats->waits[k]);
		for (int k = 0; k < RL_NUM_WAIT_OUTCOMES; k++)
			values[col++] = Float8GetDatum((double) stats->wait_us[k] / USECS_PER_SEC);
		values[col++] = Int64GetDatum(stats->requests);
		values[col++] = Int64GetDatum(stats->input);
		values[col++] = Int64GetDatum(stats->output);
		values[col++] = Int64GetDatum(stats->cached);
		values[col++] = NumericGetDatum(pgrl_numeric_load(&stats->cost));
		values[col++] = Int64GetDatum(row.expired);
		values[col++] = Int64GetDatum(row.overage_events);
		values[col++] = Int64GetDatum(row.overage_tokens);
		values[col] = TimestampTzGetDatum(stats->since);
		nulls[col++] = stats->since == DT_NOBEGIN;
		Assert(col == lengthof(values));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * rl_stats_extra_internal(): one row per model, the columns rl_stats got at
 * its end in 1.2: the refusals by itpm, otpm and the provider's pause.
 */
Datum
rl_stats_extra_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	pgrl_api_begin();
	InitMaterializedSRF(fcinfo, 0);
	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		RlModelStatsRow row;
		Datum		values[EXTRA_STATS_COLUMNS];
		bool		nulls[EXTRA_STATS_COLUMNS] = {false, false, false, false};
		int			col = 0;
		bool		known;

		pgrl_config_lock(LW_SHARED);
		known = pgrl_ledger_model_stats(slot, &row);
		pgrl_config_unlock();
		if (!known)
			continue;
		values[col++] = CStringGetTextDatum(row.name);
		for (int k = 0; k < (int) lengthof(denied_order_extra); k++)
			values[col++] = Int64GetDatum(row.stats.denied_by[denied_order_extra[k]]);
		Assert(col == lengthof(values));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* Writes one row of a job status view */
typedef void (*RlJobStatusRow) (ReturnSetInfo *rsinfo, const char *model, const char *job_type,
								int model_slot, const RlShareStatus *row);

/* Each (model, job type) of the shares in use, to a job status view */
static void
pgrl_job_status_rows(FunctionCallInfo fcinfo, RlJobStatusRow write_row)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RlShareStatus *rows = palloc(sizeof(RlShareStatus) * pgrl_max_job_types);
	RlJobTypeName *job_types = palloc(sizeof(RlJobTypeName) * pgrl_max_job_types);
	TimestampTz now;

	pgrl_api_begin();
	InitMaterializedSRF(fcinfo, 0);
	now = pgrl_now();

	for (int m = 0; m < pgrl_max_models; m++)
	{
		char		model[RL_NAME_MAX_LEN + 1];
		int			count;

		pgrl_config_lock(LW_SHARED);
		count = pgrl_ledger_share_status(m, now, model, rows);
		/* the names of the job types the rows are for, as they were */
		for (int i = 0; i < count; i++)
			strlcpy(job_types[i].name, pgrl_job_type(rows[i].job_type_slot)->name,
					sizeof(job_types[i].name));
		pgrl_config_unlock();

		for (int i = 0; i < count; i++)
			write_row(rsinfo, model, job_types[i].name, m, &rows[i]);
	}
}

/* A row of rl_job_status_internal() */
static void
pgrl_job_status_row(ReturnSetInfo *rsinfo, const char *model, const char *job_type,
					int model_slot, const RlShareStatus *row)
{
	Datum		values[JOB_STATUS_COLUMNS];
	bool		nulls[JOB_STATUS_COLUMNS];
	int			col = 0;

	memset(nulls, 0, sizeof(nulls));
	values[col++] = CStringGetTextDatum(model);
	values[col++] = CStringGetTextDatum(job_type);
	values[col++] = Float8GetDatum(row->ratio);
	values[col++] = Float8GetDatum(row->base_ratio);
	values[col++] = BoolGetDatum(row->flexible);
	values[col] = Int64GetDatum(row->slots);
	nulls[col++] = row->slots < 0;
	values[col] = row->limited_by >= 0 ?
		CStringGetTextDatum(pgrl_dimension_names[row->limited_by]) : (Datum) 0;
	nulls[col++] = row->limited_by < 0;
	values[col++] = Int64GetDatum(row->used[RL_DIM_CONCURRENCY]);
	values[col++] = Int32GetDatum((int32) pgrl_share_waiters(model_slot, row->job_type_slot));

	/* rpm, tpm, rpd, tpd: the share of the limit, and what is used of it */
	for (int k = 0; k < (int) lengthof(window_order); k++)
	{
		RlDimension d = window_order[k];

		pgrl_limit_column(row->share[d], &values[col], &nulls[col]);
		col++;
		values[col++] = Int64GetDatum(row->used[d]);
	}
	pgrl_limit_column(row->share[RL_DIM_CONCURRENCY], &values[col], &nulls[col]);
	col++;
	values[col++] = Int64GetDatum(row->granted);
	values[col++] = Int64GetDatum(row->denied);
	Assert(col == lengthof(values));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * rl_job_status_internal(): one row per (model, job type), behind the
 * rl_job_status view.
 */
Datum
rl_job_status_internal(PG_FUNCTION_ARGS)
{
	pgrl_job_status_rows(fcinfo, pgrl_job_status_row);
	return (Datum) 0;
}

/* A row of rl_job_status_extra_internal(): the share of itpm and otpm */
static void
pgrl_job_status_extra_row(ReturnSetInfo *rsinfo, const char *model, const char *job_type,
						  int model_slot, const RlShareStatus *row)
{
	Datum		values[EXTRA_JOB_STATUS_COLUMNS];
	bool		nulls[EXTRA_JOB_STATUS_COLUMNS];
	int			col = 0;

	memset(nulls, 0, sizeof(nulls));
	values[col++] = CStringGetTextDatum(model);
	values[col++] = CStringGetTextDatum(job_type);
	pgrl_limit_column(row->share[RL_DIM_ITPM], &values[col], &nulls[col]);
	col++;
	values[col++] = Int64GetDatum(row->used[RL_DIM_ITPM]);
	pgrl_limit_column(row->share[RL_DIM_OTPM], &values[col], &nulls[col]);
	col++;
	values[col++] = Int64GetDatum(row->used[RL_DIM_OTPM]);
	Assert(col == lengthof(values));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * rl_job_status_extra_internal(): one row per (model, job type), the
 * columns rl_job_status got at its end in 1.2
 */
Datum
rl_job_status_extra_internal(PG_FUNCTION_ARGS)
{
	pgrl_job_status_rows(fcinfo, pgrl_job_status_extra_row);
	return (Datum) 0;
}

/* One row of rl_leases, gathered under config_lock */
typedef struct RlLeaseRow
{
	RlLease		lease;
	char		model[RL_NAME_MAX_LEN + 1];
	char		job_type[RL_NAME_MAX_LEN + 1];	/* empty when none */
} RlLeaseRow;

/*
 * rl_leases_internal(): one row per open lease, behind the rl_leases view.
 * The leases are read a batch at a time (lease.c), so the view is not one
 * instant: a lease open for the whole call is shown once, one acquired or
 * released meanwhile may or may not be.
 */
Datum
rl_leases_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now;
	RlLeaseWalk walk;
	RlLeaseBatch batch;
	RlLeaseRow *rows = NULL;
	int			room = 0;
	MemoryContext row_context;
	MemoryContext old_context;

	pgrl_api_begin();
	InitMaterializedSRF(fcinfo, 0);
	now = pgrl_now();
	pgrl_expire_due_leases(now);

	/* what a batch's rows need is freed after each batch */
	row_context = AllocSetContextCreate(CurrentMemoryContext, "pg_ratelimit lease rows",
										ALLOCSET_DEFAULT_SIZES);
	memset(&batch, 0, sizeof(batch));
	pgrl_lease_walk_begin(&walk);
	while (pgrl_lease_walk_next(&walk, &batch))
	{
		int			num_rows = 0;

		if (batch.room > room)
		{
			room = batch.room;
			rows = rows ? repalloc(rows, sizeof(RlLeaseRow) * room) :
				palloc(sizeof(RlLeaseRow) * room);
		}
		/* config_lock keeps slot names and generations still while we look */
		pgrl_config_lock(LW_SHARED);
		for (int i = 0; i < batch.count; i++)
		{
			RlLease    *lease = &batch.leases[i];
			const RlJobType *job_type = lease->job_type_slot >= 0 ?
				pgrl_job_type(lease->job_type_slot) : NULL;
			RlLeaseRow *row = &rows[num_rows];

			if (lease->expires_at <= now ||
				!pgrl_model_name(lease->model_slot, lease->model_generation, row->model))
				continue;
			row->lease = *lease;
			row->job_type[0] = '\0';
			if (job_type && job_type->in_use &&
				job_type->generation == lease->job_type_generation)
				strlcpy(row->job_type, job_type->name, sizeof(row->job_type));
			num_rows++;
		}
		pgrl_config_unlock();

		/* role names come from the catalogs: never under an LWLock */
		old_context = MemoryContextSwitchTo(row_context);
		for (int i = 0; i < num_rows; i++)
		{
			RlLeaseRow *row = &rows[i];
			Datum		values[LEASES_COLUMNS];
			bool		nulls[LEASES_COLUMNS];
			char	   *role = OidIsValid(row->lease.role) ?
				GetUserNameFromId(row->lease.role, true) : NULL;

			memset(nulls, false, sizeof(nulls));
			values[0] = Int64GetDatum(row->lease.lease_id);
			values[1] = CStringGetTextDatum(row->model);
			values[2] = CStringGetTextDatum(row->job_type);
			nulls[2] = row->job_type[0] == '\0';
			values[3] = CStringGetTextDatum(row->lease.instance);
			nulls[3] = row->lease.instance[0] == '\0';
			values[4] = Int64GetDatum(row->lease.tokens);
			values[5] = Int32GetDatum(row->lease.requests);
			values[6] = TimestampTzGetDatum(row->lease.acquired_at);
			values[7] = TimestampTzGetDatum(row->lease.expires_at);
			values[8] = Int32GetDatum(row->lease.pid);
			values[9] = role ? CStringGetTextDatum(role) : (Datum) 0;
			nulls[9] = role == NULL;
			values[10] = BoolGetDatum(row->lease.session_bound);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		MemoryContextSwitchTo(old_context);
		MemoryContextReset(row_context);
	}
	MemoryContextDelete(row_context);
	return (Datum) 0;
}

/* Open leases of one instance, for rl_instances */
typedef struct RlLeaseCount
{
	char		instance[RL_NAME_MAX_LEN + 1];	/* hash key: must be first */
	int64		leases;
} RlLeaseCount;

/* rl_instances_internal(): one row per registered instance */
Datum
rl_instances_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RlInstanceInfo *instances;
	RlLeaseWalk walk;
	RlLeaseBatch batch;
	int			num_instances;
	TimestampTz now;
	HASHCTL		info;
	HTAB	   *held;

	pgrl_api_begin();
	InitMaterializedSRF(fcinfo, 0);
	now = pgrl_now();
	num_instances = pgrl_copy_instances(&instances);

	/* open leases per instance name, counted in one walk (a batch at a time) */
	info.keysize = RL_NAME_MAX_LEN + 1;
	info.entrysize = sizeof(RlLeaseCount);
	info.hcxt = CurrentMemoryContext;
	held = hash_create("pg_ratelimit leases per instance", Max(num_instances, 16), &info,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	/* only registered instances are counted: the hash stays that small */
	for (int i = 0; i < num_instances; i++)
		((RlLeaseCount *) hash_search(held, instances[i].name, HASH_ENTER, NULL))->leases = 0;
	memset(&batch, 0, sizeof(batch));
	pgrl_lease_walk_begin(&walk);
	while (pgrl_lease_walk_next(&walk, &batch))
	{
		for (int l = 0; l < batch.count; l++)
		{
			RlLeaseCount *count;

			if (batch.leases[l].instance[0] == '\0')
				continue;
			count = hash_search(held, batch.leases[l].instance, HASH_FIND, NULL);
			if (count)
				count->leases++;
		}
	}

	for (int i = 0; i < num_instances; i++)
	{
		Datum		values[INSTANCES_COLUMNS];
		bool		nulls[INSTANCES_COLUMNS] = {false, false, false, false, false, false, false};
		RlLeaseCount *count = hash_search(held, instances[i].name, HASH_FIND, NULL);
		char	   *role = OidIsValid(instances[i].role) ?
			GetUserNameFromId(instances[i].role, true) : NULL;

		values[0] = CStringGetTextDatum(instances[i].name);
		values[1] = TimestampTzGetDatum(instances[i].registered_at);
		values[2] = TimestampTzGetDatum(instances[i].last_heartbeat);
		values[3] = Int64GetDatum(instances[i].memory_kb);
		nulls[3] = instances[i].memory_kb < 0;
		values[4] = BoolGetDatum(pgrl_instance_info_live(&instances[i], now));
		values[5] = Int64GetDatum(count ? count->leases : 0);
		values[6] = role ? CStringGetTextDatum(role) : (Datum) 0;
		nulls[6] = role == NULL;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	hash_destroy(held);
	return (Datum) 0;
}

/*
 * An instance's part of each limit of a model: the limit split among the n
 * live instances exactly, floor(limit / n) each and one more unit for each
 * of the first limit mod n instances in rank order, so that the parts add
 * up to the limit.  RL_UNLIMITED where the model has no limit.
 */
static void
pgrl_instance_part(const int64 *limits, int n, int rank, int64 *part)
{
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		limit = limits[d];

		part[d] = limit == RL_UNLIMITED ? RL_UNLIMITED :
			limit / n + (rank < limit % n ? 1 : 0);
	}
}

/*
 * pool_slots of one instance: how many requests of the mean estimate fit
 * its part (pgrl_fit); RL_UNLIMITED_POOL_SLOTS when no limit applies.
 * Sets *limited_by (or -1).
 */
static int64
pgrl_pool_slots(const int64 *part, int64 avg_tokens, int32 avg_requests, int *limited_by)
{
	int64		pool = pgrl_fit(part, avg_tokens, 0, avg_requests, limited_by);

	return pool < 0 ? RL_UNLIMITED_POOL_SLOTS : pool;
}

/*
 * The ratio part of a job type's slots on one instance:
 * min(floor(floor(part x ratio) / estimate) over the limits,
 * floor(pool_slots x ratio)), ties toward the longer window.
 */
static int64
pgrl_job_type_slots(const int64 *part, const RlJobType *job_type, double ratio,
					int64 pool, int pool_limited_by, int *limited_by)
{
	int64		slots = pgrl_ratio_fit(part, ratio, job_type->est_tokens, 0, job_type->est_requests,
									   limited_by);
	int64		from_pool = pgrl_share_of(pool, ratio);

	/* the pool's part, ranked by the window that limits the pool */
	if (slots < 0 || from_pool < slots ||
		(from_pool == slots && pool_limited_by >= 0 && pool_limited_by < *limited_by))
	{
		slots = from_pool;
		*limited_by = pool_limited_by;
	}
	return slots;
}

/*
 * want, capped by the jobs of the type an instance's memory holds
 * (floor(memory_kb x configured ratio / est_memory_kb)) when it reported
 * memory; *limited_by says 'memory' when the cap decides.
 */
static int64
pgrl_memory_slots(const RlJobType *job_type, int64 memory_kb, int64 want, int *limited_by)
{
	int64		memory_slots;

	if (memory_kb < 0 || job_type->est_memory_kb <= 0)
		return want;
	memory_slots = pgrl_share_of(memory_kb, job_type->base_ratio) / job_type->est_memory_kb;
	if (memory_slots >= want)
		return want;
	*limited_by = RL_LIMITED_BY_MEMORY;
	return memory_slots;
}

/*
 * Take up to want jobs of a job type from what is left of an instance's
 * part of the limits (left, per dimension; RL_UNLIMITED where none);
 * returns how many fit.  When fewer than want fit, *limited_by names the
 * first limit that ran out.
 */
static int64
pgrl_take_part(int64 *left, const RlJobType *job_type, int64 want, int *limited_by)
{
	int64		got = Max(want, 0);
	int			fit_limited_by;
	int64		fit = pgrl_fit(left, job_type->est_tokens, 0, job_type->est_requests,
							   &fit_limited_by);

	if (fit >= 0 && fit < got)
	{
		got = fit;
		*limited_by = fit_limited_by;
	}
	for (int d = 0; d < RL_NUM_DIMS; d++)
		if (left[d] != RL_UNLIMITED)
			left[d] -= got * pgrl_dimension_amount(d, job_type->est_tokens, 0,
												   job_type->est_requests);
	return got;
}

static Datum
pgrl_limited_by_datum(int limited_by, bool *isnull)
{
	*isnull = limited_by < 0;
	if (limited_by < 0)
		return (Datum) 0;
	return CStringGetTextDatum(pgrl_dimension_names[limited_by]);
}

/*
 * rl_allocation_internal(instance): per model, the pool (job_type NULL) and
 * each job type's slots for one of the live instances.
 *
 * The slots of all live instances together never exceed any limit of a
 * model: each instance gets its part of every limit (pgrl_instance_part; the
 * parts add up to the limit), and the jobs its slots stand for never take
 * more than its part.  Within the part, each job type gets its ratio's
 * share (floored), and then, from what those shares leave, the jobs that
 * ratelimit.min_job_type_slots guarantees, as far as they fit: the job
 * types are served in name order, starting at a different one on each
 * instance (the instance of rank r starts at the (r mod J)-th of the J job
 * types), so that over the instances every job type gets some.  A job type
 * with no slot on an instance (or a pool of 0) is to be admitted centrally,
 * with rl_acquire: the admission column says so.  Rank is the order of the
 * live instances by registered_at, then name.
 */
Datum
rl_allocation_internal(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char		name[RL_NAME_MAX_LEN + 1];
	TimestampTz now;
	int			n = 0;
	int			rank = 0;
	int64		memory_kb;
	int128		sum_tokens = 0; /* of up to max_job_types bigints: no overflow */
	int64		sum_requests = 0;
	int			num_job_types = 0;
	int64		avg_tokens;
	int32		avg_requests;
	int		   *job_type_slots;
	RlJobType  *job_types;
	double	   *ratios;
	int64	   *slots;
	int		   *limited_by;

	pgrl_api_begin();
	pgrl_copy_name_arg(fcinfo, 0, name, "instance");
	InitMaterializedSRF(fcinfo, 0);
	now = pgrl_now();

	if (!pgrl_instance_rank(name, now, &n, &rank, &memory_kb))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("instance \"%s\" is not registered", name),
				 errhint("Call rl_heartbeat('%s') first, and again more often than ratelimit.instance_timeout (%d s).",
						 name, pgrl_instance_timeout_s)));

	job_type_slots = palloc(sizeof(int) * pgrl_max_job_types);
	job_types = palloc(sizeof(RlJobType) * pgrl_max_job_types);
	ratios = palloc(sizeof(double) * pgrl_max_job_types);
	slots = palloc(sizeof(int64) * pgrl_max_job_types);
	limited_by = palloc(sizeof(int) * pgrl_max_job_types);

	/*
	 * Copies of the job types, and of each model under its lock: the rows go
	 * to the tuplestore, which may write a file (and fail), with no lock
	 * held.
	 */
	pgrl_config_lock(LW_SHARED);
	for (int j = 0; j < pgrl_max_job_types; j++)
		job_types[j] = *pgrl_job_type(j);
	pgrl_config_unlock();
	for (int j = 0; j < pgrl_max_job_types; j++)
	{
		if (!job_types[j].in_use)
			continue;
		sum_tokens += job_types[j].est_tokens;
		sum_requests += job_types[j].est_requests;
		job_type_slots[num_job_types++] = j;
	}
	/* in name order: the order the minimum slots go round in */
	for (int k = 1; k < num_job_types; k++)
		for (int i = k; i > 0 && strcmp(job_types[job_type_slots[i - 1]].name,
										job_types[job_type_slots[i]].name) > 0; i--)
		{
			int			swap = job_type_slots[i];

			job_type_slots[i] = job_type_slots[i - 1];
			job_type_slots[i - 1] = swap;
		}
	/* the floored mean estimate; without job types, an acquire's default */
	avg_tokens = num_job_types > 0 ? (int64) (sum_tokens / num_job_types) : 0;
	avg_requests = num_job_types > 0 ? (int32) (sum_requests / num_job_types) : 1;

	for (int m = 0; m < pgrl_max_models; m++)
	{
		char		model[RL_NAME_MAX_LEN + 1];
		int64		limits[RL_NUM_DIMS];
		int64		part[RL_NUM_DIMS];
		int64		left[RL_NUM_DIMS];
		int64		pool;
		int			pool_limited_by;
		Datum		values[ALLOCATION_COLUMNS];
		bool		nulls[ALLOCATION_COLUMNS] = {false, false, false, false, false, false, false};

		if (!pgrl_ledger_model_limits(m, model, limits, job_type_slots, num_job_types, ratios))
			continue;

		pgrl_instance_part(limits, n, rank, part);
		pool = pgrl_pool_slots(part, avg_tokens, avg_requests, &pool_limited_by);
		values[0] = CStringGetTextDatum(model);
		nulls[1] = true;
		values[2] = Int32GetDatum(n);
		values[3] = Int64GetDatum(pool);
		values[4] = Int64GetDatum(pool);
		values[5] = pgrl_limited_by_datum(pool_limited_by, &nulls[5]);
		values[6] = CStringGetTextDatum(pool > 0 ? "local" : "central");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

		/*
		 * Each job type's ratio share of the part, then what the minimum
		 * slots add from what is left; a job type never takes more than is
		 * left (ratios in force can sum to a hair above 1).
		 */
		memcpy(left, part, sizeof(left));
		for (int k = 0; k < num_job_types; k++)
		{
			RlJobType  *job_type = &job_types[job_type_slots[k]];
			int64		want = pgrl_job_type_slots(part, job_type, ratios[k], pool,
												   pool_limited_by, &limited_by[k]);

			slots[k] = pgrl_take_part(left, job_type, pgrl_memory_slots(job_type, memory_kb,
																		want, &limited_by[k]),
									  &limited_by[k]);
		}
		for (int i = 0; i < num_job_types; i++)
		{
			/* a different job type first on each instance */
			int			k = (rank + i) % num_job_types;
			RlJobType  *job_type = &job_types[job_type_slots[k]];
			int			ignored;
			int64		want;

			if (slots[k] >= pgrl_min_job_type_slots)
				continue;
			want = pgrl_memory_slots(job_type, memory_kb, pgrl_min_job_type_slots,
									 &ignored) - slots[k];
			slots[k] += pgrl_take_part(left, job_type, want, &ignored);
		}

		for (int k = 0; k < num_job_types; k++)
		{
			nulls[1] = false;
			values[1] = CStringGetTextDatum(job_types[job_type_slots[k]].name);
			values[4] = Int64GetDatum(slots[k]);
			values[5] = pgrl_limited_by_datum(limited_by[k], &nulls[5]);
			values[6] = CStringGetTextDatum(slots[k] > 0 ? "local" : "central");
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}

/* A worker that has not finished a round for this long is not healthy */
#define RL_HEALTHY_ROUND_MIN_US		(10 * USECS_PER_SEC)

/* The state column of rl_worker */
static const char *
pgrl_worker_state_name(const RlWorkerStatus *status)
{
	if (RecoveryInProgress())
		return "standby";
	if (status->worker_pid != 0)
		return status->detach_requested ? "detaching" : "running";
	if (status->launcher_pid == 0)
		return "stopped";
	switch (status->phase)
	{
		case RL_LAUNCHER_IDLE:
		case RL_LAUNCHER_STARTING:
			return "starting";
		case RL_LAUNCHER_WAITING_DATABASE:
			return "waiting for database";
		case RL_LAUNCHER_WAITING_CONNECTIONS:
			return "waiting for connections";
		case RL_LAUNCHER_DETACHED:
			return "detached";
		case RL_LAUNCHER_RESTARTING:
			return "restarting";
	}
	return "unknown";
}

/*
 * Healthy: on a standby (which has no worker), or a worker is connected
 * and finished a round lately: rounds come at least every
 * ratelimit.persist_interval, so within three of them (at least 10 s).
 */
static bool
pgrl_worker_healthy(const RlWorkerStatus *status, TimestampTz now)
{
	TimestampTz last;
	int64		allowed = Max((int64) pgrl_persist_interval_ms * 3000, RL_HEALTHY_ROUND_MIN_US);

	if (RecoveryInProgress())
		return true;
	if (status->worker_pid == 0 || status->detach_requested)
		return false;
	last = Max(status->last_round_at, status->started_at);
	return now - last <= allowed;
}

/* A timestamp column, NULL for 0 (never) */
static void
pgrl_time_column(TimestampTz t, Datum *value, bool *isnull)
{
	*isnull = t == 0;
	*value = TimestampTzGetDatum(t);
}

/*
 * rl_worker_internal(): one row about the launcher and the worker, behind
 * the rl_worker view.  Server-wide, so it answers in any database (the
 * database may not exist yet).
 */
Datum
rl_worker_internal(PG_FUNCTION_ARGS)
{
	RlWorkerStatus status;
	TupleDesc	desc;
	Datum		values[WORKER_COLUMNS];
	bool		nulls[WORKER_COLUMNS];
	int			c = 0;

	pgrl_require_library_loaded();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = BlessTupleDesc(desc);
	pgrl_worker_status(&status);
	memset(nulls, 0, sizeof(nulls));

	values[c] = Int32GetDatum(status.launcher_pid);
	nulls[c++] = status.launcher_pid == 0;
	values[c] = Int32GetDatum(status.worker_pid);
	nulls[c++] = status.worker_pid == 0;
	values[c++] = CStringGetTextDatum(pgrl_worker_state_name(&status));
	values[c++] = BoolGetDatum(pgrl_worker_healthy(&status, GetCurrentTimestamp()));
	values[c++] = CStringGetTextDatum(pgrl_database_name);
	pgrl_time_column(status.started_at, &values[c], &nulls[c]);
	c++;
	values[c++] = Int64GetDatum(status.restarts);
	values[c++] = Int64GetDatum(status.rounds);
	pgrl_time_column(status.last_round_at, &values[c], &nulls[c]);
	c++;
	values[c++] = Int64GetDatum(status.persist_rounds);
	pgrl_time_column(status.last_persist_at, &values[c], &nulls[c]);
	c++;
	values[c] = Float8GetDatum((double) status.last_persist_us / 1000.0);
	nulls[c++] = status.persist_rounds == 0;
	values[c] = Int64GetDatum(status.last_persist_rows);
	nulls[c++] = status.persist_rounds == 0;
	values[c++] = Int64GetDatum(status.rows_written);
	values[c++] = Int64GetDatum(status.notifications_sent);
	values[c++] = Int64GetDatum((int64) pgrl_waiters_woken());

	/*
	 * An error message may quote table contents or settings: only roles that
	 * may read every session's statistics see it (as with the query column of
	 * pg_stat_activity); the others see that there was one.
	 */
	values[c] = CStringGetTextDatum(has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS) ?
									status.last_error : "<insufficient privilege>");
	nulls[c++] = status.last_error[0] == '\0';
	pgrl_time_column(status.last_error_at, &values[c], &nulls[c]);
	c++;
	pgrl_time_column(status.worker_pid == 0 && status.launcher_pid != 0 &&
					 (status.phase == RL_LAUNCHER_WAITING_DATABASE ||
					  status.phase == RL_LAUNCHER_WAITING_CONNECTIONS ||
					  status.phase == RL_LAUNCHER_RESTARTING) ? status.next_attempt_at : 0,
					 &values[c], &nulls[c]);
	c++;
	pgrl_time_column(status.stats_since, &values[c], &nulls[c]);
	c++;
	Assert(c == WORKER_COLUMNS);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
