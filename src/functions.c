/*-------------------------------------------------------------------------
 *
 * functions.c
 *		The SQL-callable API: acquire, release, capacity and the state views.
 *
 * These functions validate their arguments completely before they change
 * anything, so a call that fails leaves the limiter as it was.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "admission.h"
#include "holders.h"
#include "debug.h"
#include "instance.h"
#include "lease.h"
#include "mark.h"
#include "pg_ratelimit.h"
#include "share.h"
#include "wait.h"

PG_FUNCTION_INFO_V1(rl_acquire);
PG_FUNCTION_INFO_V1(rl_acquire_any);
PG_FUNCTION_INFO_V1(rl_release);
PG_FUNCTION_INFO_V1(rl_capacity);
PG_FUNCTION_INFO_V1(rl_status_internal);
PG_FUNCTION_INFO_V1(rl_leases_internal);

/* Argument positions shared by rl_acquire and rl_acquire_any */
#define ARG_MODELS		0
#define ARG_JOB_TYPE	1
#define ARG_TOKENS		2
#define ARG_REQUESTS	3
#define ARG_MAX_WAIT	4
#define ARG_INSTANCE	5
#define ARG_TTL			6
#define ARG_SESSION_BOUND	7

/*
 * From libpq/libpq.h, whose libpq-be.h needs the GSSAPI headers that a
 * server development install may not have.
 */
extern bool pq_check_connection(void);

/* A waiter checks that its client is still there at least this often */
#define RL_CLIENT_CHECK_MS	500

/* Display order of rl_capacity rows */
static const RlDimension capacity_order[] = {
	RL_DIM_RPM, RL_DIM_TPM, RL_DIM_RPD, RL_DIM_TPD, RL_DIM_CONCURRENCY
};

/* The size of a request once defaults are applied */
typedef struct RlRequestSize
{
	int			job_type_slot;	/* -1 without a job type */
	uint32		job_type_generation;
	int64		tokens;
	int32		requests;
} RlRequestSize;

/* A per-backend cache of a composite result type's descriptor */
typedef struct RlResultType
{
	Oid			type;
	TupleDesc	desc;
} RlResultType;

static RlResultType grant_type;
static RlResultType settlement_type;

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

static void
pgrl_report_no_job_type(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("job type \"%s\" does not exist", name)));
}

static void
pgrl_report_no_model(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("model \"%s\" does not exist", name)));
}

/*
 * Resolve the job type (job_type_name, NULL for none) and the request's
 * size: explicit tokens/requests, else the job type's estimates, else 0
 * tokens and 1 request.  False when the job type does not exist.  Caller
 * holds config_lock.
 */
static bool
pgrl_resolve_size(FunctionCallInfo fcinfo, const char *job_type_name, int tokens_arg,
				int requests_arg, RlRequestSize *size)
{
	RlJobType  *job_type = NULL;

	size->job_type_slot = -1;
	size->job_type_generation = 0;
	if (job_type_name != NULL)
	{
		size->job_type_slot = pgrl_lookup_slot(pgrl_job_type_index, job_type_name);
		if (size->job_type_slot < 0)
			return false;
		job_type = &pgrl_job_types[size->job_type_slot];
		size->job_type_generation = job_type->generation;
	}
	size->tokens = !PG_ARGISNULL(tokens_arg) ? PG_GETARG_INT64(tokens_arg) :
		job_type ? job_type->est_tokens : 0;
	size->requests = !PG_ARGISNULL(requests_arg) ? PG_GETARG_INT32(requests_arg) :
		job_type ? job_type->est_requests : 1;
	return true;
}

static Datum
pgrl_interval_datum(int64 us)
{
	Interval   *interval = palloc0(sizeof(Interval));

	interval->time = us;
	return IntervalPGetDatum(interval);
}

/* The error for a request larger than one of a model's limits */
static void
pgrl_report_never_fits(const char *model, const RlAdmission *admission,
					 const RlRequestSize *size)
{
	RlDimension dim = admission->never_fits;

	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("request can never fit model \"%s\"", model),
			 errdetail("It needs " INT64_FORMAT " %s, and the model's %s limit is " INT64_FORMAT ".",
					   pgrl_dimension_amount(dim, size->tokens, size->requests),
					   dim == RL_DIM_TPM || dim == RL_DIM_TPD ? "tokens" : "requests",
					   pgrl_dimension_names[dim], admission->never_fits_limit)));
}

/* What a lease records besides its size: the same on every attempt */
typedef struct RlLeaseArgs
{
	char	   *job_type;		/* checked name, or NULL */
	char		instance[RL_NAME_MAX_LEN + 1];
	int64		ttl_us;
	bool		session_bound;	/* released when this backend exits */
	int			role_slot;		/* the role's count, reserved (holders.c) */
} RlLeaseArgs;

/* The outcome of one pass over the models of an acquire */
typedef struct RlAttempt
{
	int			slots[RL_MAX_WAIT_MODELS];	/* of the first models, for waiting */
	RlRequestSize size;
	int64		max_wait_us;	/* the longest configured wait of the models */
	int			granted_index;	/* -1 when no model admitted */
	int64		lease_id;
	int			reported_index; /* the denial to report, -1 when none */
	RlAdmission reported;
	int			never_fits_index;	/* first model the request can never fit */
	RlAdmission never_fits;
	bool		awaiting_mark;	/* a model that fits waits for new marks */
	bool	   *refused;		/* [num_models]: refused this pass */
	RlMemoryCap memory;			/* of the instance named, for its job type */
} RlAttempt;

/* What made an attempt fail; raised once config_lock is released */
typedef enum RlAttemptFailure
{
	RL_ATTEMPT_OK = 0,
	RL_ATTEMPT_NO_JOB_TYPE,
	RL_ATTEMPT_NO_MODEL,		/* names[failed_index] */
	RL_ATTEMPT_NEVER_FITS,		/* the only model; attempt->never_fits */
	RL_ATTEMPT_LEASES_FULL,
	RL_ATTEMPT_LEASE_NOT_STORED
} RlAttemptFailure;

/*
 * How long a request of a job type (slot, -1 for none) may wait on a model:
 * its wait for that model (rl_set_max_wait), else the job type's default;
 * -1 when neither is set.  Caller holds config_lock.
 */
static int64
pgrl_job_type_wait_us(int job_type_slot, int model_slot)
{
	int64		max_wait_us = -1;

	if (job_type_slot < 0)
		return -1;
	max_wait_us = pgrl_waits[(Size) job_type_slot * pgrl_max_models + model_slot];
	if (max_wait_us < 0)
		max_wait_us = pgrl_job_types[job_type_slot].max_wait_us;
	return max_wait_us;
}

/* Try the models in order under config_lock; see pgrl_attempt() */
static RlAttemptFailure
pgrl_attempt_locked(FunctionCallInfo fcinfo, char **names, int num_models, int64 ticket,
				  const RlLeaseArgs *args, TimestampTz now, RlAttempt *attempt,
				  int *failed_index)
{
	int		   *slots = palloc(sizeof(int) * num_models);
	RlAdmission admission;
	RlMemoryCap *memory = &attempt->memory;
	TimestampTz expires_at = pgrl_add_saturating(now, args->ttl_us);

	if (!pgrl_resolve_size(fcinfo, args->job_type, ARG_TOKENS, ARG_REQUESTS, &attempt->size))
		return RL_ATTEMPT_NO_JOB_TYPE;
	pgrl_memory_cap(args->instance, attempt->size.job_type_slot, memory);
	for (int i = 0; i < num_models; i++)
	{
		slots[i] = pgrl_lookup_slot(pgrl_model_index, names[i]);
		if (slots[i] < 0)
		{
			*failed_index = i;
			return RL_ATTEMPT_NO_MODEL;
		}
		if (i < RL_MAX_WAIT_MODELS)
			attempt->slots[i] = slots[i];
		attempt->max_wait_us = Max(attempt->max_wait_us,
								   pgrl_job_type_wait_us(attempt->size.job_type_slot, slots[i]));
	}

	for (int i = 0; i < num_models; i++)
	{
		pgrl_try_admit(slots[i], attempt->size.tokens, attempt->size.requests,
					 attempt->size.job_type_slot, memory, ticket, now, expires_at,
					 &admission);
		if (admission.leases_full)
			return RL_ATTEMPT_LEASES_FULL;
		if (admission.never_fits >= 0)
		{
			if (attempt->never_fits_index < 0)
			{
				attempt->never_fits_index = i;
				attempt->never_fits = admission;
			}
			if (num_models == 1)
				return RL_ATTEMPT_NEVER_FITS;
			continue;
		}
		if (admission.granted)
		{
			RlLease		lease;

			memset(&lease, 0, sizeof(lease));
			lease.lease_id = (int64) pg_atomic_fetch_add_u64(&pgrl_state->next_lease_id, 1);
			lease.model_slot = slots[i];
			lease.model_generation = admission.model_generation;
			lease.job_type_slot = attempt->size.job_type_slot;
			lease.job_type_generation = attempt->size.job_type_generation;
			lease.tokens = attempt->size.tokens;
			lease.requests = attempt->size.requests;
			lease.minute_start = admission.minute_start;
			lease.day_start = admission.day_start;
			lease.acquired_at = now;
			lease.expires_at = expires_at;
			lease.pid = MyProcPid;
			lease.role = GetUserId();
			lease.role_slot = args->role_slot;
			lease.session_bound = args->session_bound;
			memcpy(lease.instance, args->instance, sizeof(lease.instance));
			lease.instance_slot = memory->instance_slot;
			lease.instance_generation = memory->instance_generation;
			lease.memory_counted = admission.memory_counted;
			if (!pgrl_put_lease(&lease))
				return RL_ATTEMPT_LEASE_NOT_STORED;
			pgrl_holders_granted(lease.lease_id, args->session_bound);
			attempt->granted_index = i;
			attempt->lease_id = lease.lease_id;
			break;
		}

		/* counted as a denial only if the call ends refused */
		attempt->refused[i] = true;

		/*
		 * A model that fits but waits for new marks (a moment) is taken
		 * over the models after it, as if it had admitted: wait for it.
		 */
		if (admission.awaiting_mark)
		{
			attempt->awaiting_mark = true;
			attempt->reported_index = i;
			attempt->reported = admission;
			break;
		}
		/* Of the denials, report the one that frees soonest */
		if (attempt->reported_index < 0 ||
			(admission.retry_at != 0 &&
			 (attempt->reported.retry_at == 0 ||
			  admission.retry_at < attempt->reported.retry_at)))
		{
			attempt->reported_index = i;
			attempt->reported = admission;
		}
	}
	pfree(slots);
	return RL_ATTEMPT_OK;
}

/*
 * One pass of an acquire: resolve the names, try the models in order and
 * store a lease for the first that admits.  config_lock is held shared
 * until the lease is stored, so no model is dropped meanwhile; errors are
 * raised only after it is released.
 */
static void
pgrl_attempt(FunctionCallInfo fcinfo, char **names, int num_models, int64 ticket,
		   const RlLeaseArgs *args, TimestampTz now, RlAttempt *attempt)
{
	RlAttemptFailure failure;
	int			failed_index = -1;

	attempt->granted_index = -1;
	attempt->reported_index = -1;
	attempt->never_fits_index = -1;
	attempt->awaiting_mark = false;
	attempt->max_wait_us = 0;
	memset(attempt->refused, 0, sizeof(bool) * num_models);

	LWLockAcquire(&pgrl_state->config_lock, LW_SHARED);
	failure = pgrl_attempt_locked(fcinfo, names, num_models, ticket, args, now, attempt,
								&failed_index);
	LWLockRelease(&pgrl_state->config_lock);

	switch (failure)
	{
		case RL_ATTEMPT_OK:
			break;
		case RL_ATTEMPT_NO_JOB_TYPE:
			pgrl_report_no_job_type(args->job_type);
			break;
		case RL_ATTEMPT_NO_MODEL:
			pgrl_report_no_model(names[failed_index]);
			break;
		case RL_ATTEMPT_NEVER_FITS:
			pgrl_report_never_fits(names[0], &attempt->never_fits, &attempt->size);
			break;
		case RL_ATTEMPT_LEASES_FULL:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("too many open pg_ratelimit leases"),
					 errdetail("ratelimit.max_leases is %d.", pgrl_max_leases),
					 errhint("Release leases, shorten their ttl, or raise ratelimit.max_leases and restart the server.")));
			break;
		case RL_ATTEMPT_LEASE_NOT_STORED:
			elog(ERROR, "pg_ratelimit could not store a lease");
			break;
	}
}

/*
 * Has the client gone?  Then end the session as PostgreSQL does when it
 * finds out (client_connection_check_interval): FATAL "connection to
 * client lost", which leaves the wait queue and takes nothing.
 */
static void
pgrl_check_client_connection(void)
{
	if (MyProcPort == NULL || pq_check_connection())
		return;
	ClientConnectionLost = true;
	InterruptPending = true;
	CHECK_FOR_INTERRUPTS();
}

/*
 * The longest configured wait of the job type (NULL: none) on the models,
 * as an attempt resolves max_wait NULL; 0 when none is set.  Names that do
 * not resolve are left to the attempt to report.
 */
static int64
pgrl_configured_max_wait(char **names, int num_models, const char *job_type_name)
{
	int64		longest = 0;
	int			job_type_slot;

	if (job_type_name == NULL)
		return 0;
	LWLockAcquire(&pgrl_state->config_lock, LW_SHARED);
	job_type_slot = pgrl_lookup_slot(pgrl_job_type_index, job_type_name);
	for (int i = 0; job_type_slot >= 0 && i < num_models; i++)
	{
		int			slot = pgrl_lookup_slot(pgrl_model_index, names[i]);

		if (slot >= 0)
			longest = Max(longest, pgrl_job_type_wait_us(job_type_slot, slot));
	}
	LWLockRelease(&pgrl_state->config_lock);
	return longest;
}

/* Milliseconds from one time to a later one, rounded up, at least 1 */
static long
pgrl_sleep_ms(TimestampTz from, TimestampTz to)
{
	return to <= from ? 1 : (long) Min((to - from + 999) / 1000, (int64) INT_MAX);
}

/*
 * Sleep up to sleep_ms, unless a wake-up came since the count was read
 * (before the attempt that failed): then return at once.  Between
 * wake-ups, check every RL_CLIENT_CHECK_MS that the client is still there;
 * those checks do not end the sleep, so a lost wake-up could not hide
 * behind them.
 */
static void
pgrl_sleep_unless_woken(uint32 wakeups, long sleep_ms)
{
	TimestampTz end = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sleep_ms);

	for (;;)
	{
		TimestampTz now;

		if (pgrl_waiter_woken_since(wakeups))
			return;
		now = GetCurrentTimestamp();
		if (now >= end)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(pgrl_sleep_ms(now, end), RL_CLIENT_CHECK_MS), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		pgrl_check_client_connection();
	}
}

/*
 * Wait in the queue of the models until an attempt admits or max_wait has
 * passed (real time); while a model that fits waits only for new
 * high-water marks, at least RL_MARK_WAIT_US.  Sleeps until the earliest
 * window reset that can help, or until a release, expiry, configuration
 * change or new marks wake us.  Registers before its first attempt and
 * reads its wake-up count before each, so no wake-up between an attempt
 * and the sleep is lost.
 */
static void
pgrl_wait_for_capacity(FunctionCallInfo fcinfo, char **names, int num_models,
					 const RlLeaseArgs *args, int64 max_wait_us, RlAttempt *attempt)
{
	TimestampTz start = GetCurrentTimestamp();
	TimestampTz deadline = pgrl_add_saturating(start, max_wait_us);
	TimestampTz mark_deadline = pgrl_add_saturating(start, RL_MARK_WAIT_US);
	int64		ticket;
	int			registered[RL_MAX_WAIT_MODELS];
	MemoryContext pass_context;
	MemoryContext caller_context = CurrentMemoryContext;

	/* each pass allocates: free it every time, however often we wake */
	pass_context = AllocSetContextCreate(caller_context, "pg_ratelimit wait pass",
										 ALLOCSET_SMALL_SIZES);

	memcpy(registered, attempt->slots, sizeof(int) * num_models);
	ticket = pgrl_register_waiter(registered, num_models, attempt->size.tokens,
								attempt->size.requests, attempt->size.job_type_slot,
								&attempt->memory, 0);
	pgrl_waiter_awaiting_mark(attempt->awaiting_mark);
	PG_TRY();
	{
		for (;;)
		{
			TimestampTz now = pgrl_now();
			TimestampTz real_now;
			TimestampTz until;
			long		sleep_ms;
			uint32		wakeups;

			/* a client that went away must not be granted what it waited for */
			pgrl_check_client_connection();
			wakeups = pgrl_waiter_wakeups();
			MemoryContextReset(pass_context);
			MemoryContextSwitchTo(pass_context);
			pgrl_expire_due_leases(now);
			pgrl_attempt(fcinfo, names, num_models, ticket, args, now, attempt);
			MemoryContextSwitchTo(caller_context);
			if (attempt->granted_index >= 0 || attempt->reported_index < 0)
				break;

			/* a model was re-created in another slot: follow it */
			if (memcmp(registered, attempt->slots, sizeof(int) * num_models) != 0)
			{
				memcpy(registered, attempt->slots, sizeof(int) * num_models);
				pgrl_register_waiter(registered, num_models, attempt->size.tokens,
								   attempt->size.requests, attempt->size.job_type_slot,
								   &attempt->memory, ticket);
				/* a release on the new slot before we were there woke nobody */
				continue;
			}
			pgrl_waiter_awaiting_mark(attempt->awaiting_mark);

			real_now = GetCurrentTimestamp();
			until = attempt->awaiting_mark ? Max(deadline, mark_deadline) : deadline;
			if (real_now >= until)
				break;
			sleep_ms = pgrl_sleep_ms(real_now, until);
			if (!attempt->awaiting_mark && attempt->reported.retry_at != 0)
				sleep_ms = Min(sleep_ms, pgrl_sleep_ms(now, attempt->reported.retry_at));
			/* for tests: a release may come between the attempt and the sleep */
			pgrl_debug_pause(RL_PAUSE_BEFORE_SLEEP);
			pgrl_sleep_unless_woken(wakeups, sleep_ms);
		}
	}
	PG_CATCH();
	{
		/* cancel, statement_timeout, a dropped model: leave the queue */
		LWLockReleaseAll();
		MemoryContextSwitchTo(caller_context);
		pgrl_unregister_waiter();
		PG_RE_THROW();
	}
	PG_END_TRY();
	pgrl_unregister_waiter();
	MemoryContextDelete(pass_context);
}

/* The login role holds ratelimit.max_leases_per_role leases already */
static void
pgrl_report_role_cap(int refusal)
{
	char	   *role = GetUserNameFromId(GetSessionUserId(), true);

	if (refusal == RL_ROLE_NO_ROOM)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many roles hold pg_ratelimit leases to count those of role \"%s\"",
						role ? role : "?"),
				 errhint("ratelimit.max_leases_per_role applies to this role; retry once other roles have released their leases.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("role \"%s\" holds too many pg_ratelimit leases", role ? role : "?"),
			 errdetail("ratelimit.max_leases_per_role is %d for this role.",
					   pgrl_max_leases_per_role),
			 errhint("Release leases first, or have an administrator raise the cap, for example ALTER ROLE ... SET ratelimit.max_leases_per_role.")));
}

/*
 * Shared body of rl_acquire and rl_acquire_any: try the models in order and
 * grant the first that admits, waiting up to max_wait when none does.
 */
static Datum
pgrl_acquire_models(FunctionCallInfo fcinfo, char **names, int num_models)
{
	RlLeaseArgs args;
	RlAttempt	attempt;
	int64		max_wait_us = -1;
	TimestampTz now;
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	pgrl_require_non_negative(fcinfo, ARG_TOKENS, "tokens", false);
	pgrl_require_non_negative(fcinfo, ARG_REQUESTS, "requests", true);
	if (!PG_ARGISNULL(ARG_MAX_WAIT))
	{
		max_wait_us = pgrl_interval_to_us(PG_GETARG_INTERVAL_P(ARG_MAX_WAIT), "max_wait");
		if (max_wait_us < 0)
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
	memset(args.instance, 0, sizeof(args.instance));
	if (!PG_ARGISNULL(ARG_INSTANCE))
		pgrl_copy_name(args.instance, text_to_cstring(PG_GETARG_TEXT_PP(ARG_INSTANCE)), "instance");
	tupdesc = pgrl_result_desc(fcinfo, &grant_type);

	/* a call that could wait on too many models fails before it tries any */
	if (num_models > RL_MAX_WAIT_MODELS &&
		(max_wait_us > 0 ||
		 (max_wait_us < 0 && pgrl_configured_max_wait(names, num_models, args.job_type) > 0)))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("cannot wait on more than %d models at once", RL_MAX_WAIT_MODELS),
				 errhint("Name at most %d models, or pass max_wait => 0.",
						 RL_MAX_WAIT_MODELS)));

	pgrl_check_instance_privilege(args.instance);
	args.role_slot = pgrl_holders_start_acquire(args.session_bound);
	if (args.role_slot == RL_ROLE_AT_CAP || args.role_slot == RL_ROLE_NO_ROOM)
		pgrl_report_role_cap(args.role_slot);

	attempt.refused = palloc(sizeof(bool) * num_models);
	now = pgrl_now();
	/* for tests: another backend may roll the windows past now meanwhile */
	pgrl_debug_pause(RL_PAUSE_BEFORE_ADMISSION);
	pgrl_expire_due_leases(now);
	pgrl_attempt(fcinfo, names, num_models, RL_NEWCOMER_TICKET, &args, now, &attempt);

	/* max_wait: the argument, else the job type's wait for the models */
	if (max_wait_us < 0)
		max_wait_us = attempt.max_wait_us;
	if (attempt.granted_index < 0 && attempt.reported_index >= 0 &&
		(max_wait_us > 0 || attempt.awaiting_mark))
	{
		if (num_models > RL_MAX_WAIT_MODELS)
		{
			if (max_wait_us > 0)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("cannot wait on more than %d models at once",
								RL_MAX_WAIT_MODELS)));
		}
		else
		{
			pgrl_wait_for_capacity(fcinfo, names, num_models, &args, max_wait_us, &attempt);
			now = pgrl_now();
		}
	}

	/* a refused call counts once on each model that refused it */
	if (attempt.granted_index < 0)
		pgrl_count_refusal(names, attempt.refused, num_models, attempt.size.job_type_slot,
						 attempt.size.job_type_generation);

	/* the worker saved no new mark in time: say so where operators look */
	if (attempt.granted_index < 0 && attempt.awaiting_mark)
	{
		ereport(LOG,
				(errmsg("pg_ratelimit refused a request that fits the limits of model \"%s\": no new high-water mark was saved in time",
						names[attempt.reported_index]),
				 errhint("Check that the pg_ratelimit worker is running (pg_stat_activity) and that its commits are not waiting, for example for a synchronous standby.")));
	}

	/* no lease: the role's count reserved for it goes back */
	pgrl_holders_end_acquire();

	/* every model refused the request as too large */
	if (attempt.granted_index < 0 && attempt.reported_index < 0)
		pgrl_report_never_fits(names[attempt.never_fits_index], &attempt.never_fits,
							 &attempt.size);

	values[0] = BoolGetDatum(attempt.granted_index >= 0);
	if (attempt.granted_index >= 0)
	{
		values[1] = Int64GetDatum(attempt.lease_id);
		values[2] = CStringGetTextDatum(names[attempt.granted_index]);
		nulls[3] = true;
		nulls[4] = true;
	}
	else
	{
		nulls[1] = true;
		values[2] = CStringGetTextDatum(names[attempt.reported_index]);
		if (attempt.reported.retry_at != 0)
			values[3] = pgrl_interval_datum(Max(attempt.reported.retry_at - now, 0));
		else
			nulls[3] = true;
		values[4] = CStringGetTextDatum(pgrl_dimension_names[attempt.reported.limited_by]);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* Copy and validate a model name argument */
static char *
pgrl_model_name(text *arg)
{
	char	   *name = palloc(RL_NAME_MAX_LEN + 1);

	pgrl_copy_name(name, text_to_cstring(arg), "model");
	return name;
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
	pgrl_require_ready();
	name = pgrl_model_name(pgrl_require_text(fcinfo, ARG_MODELS, "model"));
	return pgrl_acquire_models(fcinfo, &name, 1);
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
	pgrl_require_ready();
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
		names[i] = pgrl_model_name(DatumGetTextPP(elements[i]));
	}
	return pgrl_acquire_models(fcinfo, names, pgrl_unique_names(names, count));
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
	RlLease		lease;
	RlSettlement settlement;
	TimestampTz now;
	TupleDesc	tupdesc;
	Datum		values[7];
	bool		nulls[7];

	pgrl_require_primary("release leases");
	pgrl_require_ready();
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

	memset(&settlement, 0, sizeof(settlement));
	if (pgrl_take_lease(lease_id, &lease))
	{
		if (lease.session_bound && lease.pid == MyProcPid)
			pgrl_session_lease_forget(lease_id);
		pgrl_settle_lease(&lease, &usage, now, &settlement);
	}

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
	RlRequestSize size;
	RlModel    *model;
	TimestampTz now;
	int64		limit[RL_NUM_DIMS];
	int64		used[RL_NUM_DIMS];
	TimestampTz resets_at[RL_NUM_DIMS];
	int64		slots[RL_NUM_DIMS];
	int			total_dim = -1;
	const int	num_dims = (int) lengthof(capacity_order);
	RlShareRoom share_room;
	int			model_slot;
	char	   *job_type;

	pgrl_require_ready();
	name = pgrl_model_name(pgrl_require_text(fcinfo, 0, "model"));
	job_type = pgrl_job_type_arg(fcinfo, 1);
	pgrl_require_non_negative(fcinfo, 2, "tokens", false);
	pgrl_require_non_negative(fcinfo, 3, "requests", true);
	InitMaterializedSRF(fcinfo, 0);

	now = pgrl_now();
	pgrl_expire_due_leases(now);

	LWLockAcquire(&pgrl_state->config_lock, LW_SHARED);
	if (!pgrl_resolve_size(fcinfo, job_type, 2, 3, &size))
	{
		LWLockRelease(&pgrl_state->config_lock);
		pgrl_report_no_job_type(job_type);
	}
	model_slot = pgrl_lookup_slot(pgrl_model_index, name);
	if (model_slot < 0)
	{
		LWLockRelease(&pgrl_state->config_lock);
		pgrl_report_no_model(name);
	}
	model = &pgrl_models[model_slot];
	/* exclusive: the windows of the model and its shares may need rolling */
	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	pgrl_roll_windows(model, now);
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		limit[d] = model->limit[d];
		used[d] = model->used[d];
		resets_at[d] = pgrl_dimension_resets_at(model, d);
	}
	if (size.job_type_slot >= 0)
		pgrl_share_room(model, pgrl_share(model_slot, size.job_type_slot), &share_room);
	LWLockRelease(&model->lock);
	LWLockRelease(&pgrl_state->config_lock);

	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		amount = pgrl_dimension_amount(d, size.tokens, size.requests);

		slots[d] = -1;
		if (limit[d] == RL_UNLIMITED || amount == 0)
			continue;
		slots[d] = Max(0, limit[d] - used[d]) / amount;
		/* a job type also counts what its share leaves */
		if (size.job_type_slot >= 0)
			slots[d] = Min(slots[d], Max(Max(0, share_room.room[d]) / amount,
										 share_room.guaranteed[d]));
		/* dimensions come longest window first: ties keep the earlier */
		if (total_dim < 0 || slots[d] < slots[total_dim])
			total_dim = d;
	}

	/* One row per configured limit, then the 'total' row */
	for (int i = 0; i <= num_dims; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};
		int			d = i < num_dims ? (int) capacity_order[i] : total_dim;

		if (i < num_dims)
		{
			if (limit[d] == RL_UNLIMITED)
				continue;
			values[0] = CStringGetTextDatum(pgrl_dimension_names[d]);
			values[1] = Int64GetDatum(limit[d]);
			values[2] = Int64GetDatum(used[d]);
			values[3] = Int64GetDatum(Max(0, limit[d] - used[d]));
		}
		else
		{
			values[0] = CStringGetTextDatum("total");
			nulls[1] = nulls[2] = nulls[3] = true;
		}
		if (d >= 0 && slots[d] >= 0)
			values[4] = Int64GetDatum(slots[d]);
		else
			nulls[4] = true;
		if (d >= 0 && resets_at[d] != 0)
			values[5] = TimestampTzGetDatum(resets_at[d]);
		else
			nulls[5] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

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

	pgrl_require_ready();
	InitMaterializedSRF(fcinfo, 0);
	now = pgrl_now();
	pgrl_expire_due_leases(now);

	LWLockAcquire(&pgrl_state->config_lock, LW_SHARED);
	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		RlModel    *model = &pgrl_models[slot];
		RlModel		copy;
		Datum		values[20];
		bool		nulls[20];
		int			col = 0;
		bool		same_day;

		if (!model->in_use)
			continue;
		LWLockAcquire(&model->lock, LW_SHARED);
		memcpy(&copy, model, sizeof(RlModel));
		LWLockRelease(&model->lock);

		memset(nulls, false, sizeof(nulls));
		values[col++] = CStringGetTextDatum(copy.name);
		pgrl_limit_column(copy.limit[RL_DIM_RPM], &values[col], &nulls[col]);
		col++;
		pgrl_limit_column(copy.limit[RL_DIM_TPM], &values[col], &nulls[col]);
		col++;
		pgrl_limit_column(copy.limit[RL_DIM_RPD], &values[col], &nulls[col]);
		col++;
		pgrl_limit_column(copy.limit[RL_DIM_TPD], &values[col], &nulls[col]);
		col++;
		pgrl_limit_column(copy.limit[RL_DIM_CONCURRENCY], &values[col], &nulls[col]);
		col++;
		values[col++] = Int64GetDatum(pgrl_used_now(&copy, RL_DIM_RPM, now));
		values[col++] = Int64GetDatum(pgrl_used_now(&copy, RL_DIM_TPM, now));
		values[col++] = Int64GetDatum(pgrl_used_now(&copy, RL_DIM_RPD, now));
		values[col++] = Int64GetDatum(pgrl_used_now(&copy, RL_DIM_TPD, now));
		values[col++] = Int64GetDatum(copy.used[RL_DIM_CONCURRENCY]);
		values[col++] = Int32GetDatum((int32) pg_atomic_read_u32(&model->num_waiters));
		/* the windows do not move back when the clock does */
		values[col++] = TimestampTzGetDatum(pgrl_window_at(copy.minute_start, now, USECS_PER_MINUTE) +
											USECS_PER_MINUTE);
		values[col++] = TimestampTzGetDatum(pgrl_window_at(copy.day_start, now, USECS_PER_DAY) +
											USECS_PER_DAY);
		values[col++] = Int64GetDatum(copy.granted);
		values[col++] = Int64GetDatum(copy.denied);
		values[col++] = Int64GetDatum(copy.expired);
		values[col++] = Int64GetDatum(copy.overage_events);
		values[col++] = Int64GetDatum(copy.overage_tokens);
		same_day = copy.usage.day_start == pgrl_window_at(copy.day_start, now, USECS_PER_DAY);
		values[col] = NumericGetDatum(same_day ? pgrl_numeric_load(&copy.usage.cost) :
									  int64_to_numeric(0));
		col++;
		Assert(col == lengthof(values));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(&pgrl_state->config_lock);
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

	pgrl_require_ready();
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
		LWLockAcquire(&pgrl_state->config_lock, LW_SHARED);
		for (int i = 0; i < batch.count; i++)
		{
			RlLease    *lease = &batch.leases[i];
			RlModel    *model = &pgrl_models[lease->model_slot];
			RlJobType  *job_type = lease->job_type_slot >= 0 ?
				&pgrl_job_types[lease->job_type_slot] : NULL;
			RlLeaseRow *row = &rows[num_rows];

			if (lease->expires_at <= now || !model->in_use ||
				model->generation != lease->model_generation)
				continue;
			row->lease = *lease;
			strlcpy(row->model, model->name, sizeof(row->model));
			row->job_type[0] = '\0';
			if (job_type && job_type->in_use &&
				job_type->generation == lease->job_type_generation)
				strlcpy(row->job_type, job_type->name, sizeof(row->job_type));
			num_rows++;
		}
		LWLockRelease(&pgrl_state->config_lock);

		/* role names come from the catalogs: never under an LWLock */
		old_context = MemoryContextSwitchTo(row_context);
		for (int i = 0; i < num_rows; i++)
		{
			RlLeaseRow *row = &rows[i];
			Datum		values[11];
			bool		nulls[11];
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
