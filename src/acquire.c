/*-------------------------------------------------------------------------
 *
 * acquire.c
 *		An acquire: try the models in order, store a lease for the first
 *		that admits, and wait in the queue of the models when none does.
 *
 * An attempt resolves the names and tries the models under config_lock
 * held shared, from the first lookup until the lease is in the lease
 * table, so no model is dropped in between; errors are raised only after
 * it is released.  Waiting registers in the wait queue (wait.c) and sleeps
 * until a wake-up, the window reset that can help, or max_wait.
 *
 * How a call ends is counted on the models (ledger.c, for rl_stats): a
 * refused call once on each model that refused it, under the limit that
 * did; a call that waited by how its wait ended (granted, timed out,
 * cancelled) and how long it took.  This backend's wait in progress is
 * kept in a static record, so that a session that ends while waiting
 * counts it from its exit callback.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "acquire.h"
#include "catalog.h"
#include "clock.h"
#include "debug.h"
#include "grant.h"
#include "holders.h"
#include "instance.h"
#include "lease.h"
#include "ledger.h"
#include "settings.h"
#include "wait.h"
#include "waitevent.h"

/*
 * From libpq/libpq.h, whose libpq-be.h needs the GSSAPI headers that a
 * server development install may not have.
 */
extern bool pq_check_connection(void);

/* A waiter checks that its client is still there at least this often */
#define RL_CLIENT_CHECK_MS	500

/* The outcome of one pass over the models of an acquire */
typedef struct RlAttempt
{
	int			slots[RL_MAX_WAIT_MODELS];	/* of the first models, for
											 * waiting */
	int		   *all_slots;		/* [num_models], scratch */
	RlRequest	request;
	int64		max_wait_us;	/* the longest configured wait of the models */
	int			granted_index;	/* -1 when no model admitted */
	int64		lease_id;
	int			reported_index; /* the denial to report, -1 when none */
	RlAdmission reported;
	int			never_fits_index;	/* first model the request can never fit */
	RlAdmission never_fits;
	bool		awaiting_mark;	/* a model that fits waits for new marks */
	int		   *refused_by;		/* [num_models]: limited_by of the model's
								 * refusal this pass, or -1 */
	uint32		generations[RL_MAX_WAIT_MODELS];	/* of slots[], this pass */
	bool		limit_refused[RL_MAX_WAIT_MODELS];	/* refused by a limit this
													 * pass, not waiting for
													 * new marks */
	uint32		granted_generation; /* of the model granted */
	RlMemoryCap memory;			/* of the instance named, for its job type */
} RlAttempt;

/*
 * The wait in progress in this backend, for counting how it ends: when it
 * began, and the models whose limits refused the call while it waited (by
 * their place in the call's list, with the slot and generation they had
 * then).  A call that only waited for new high-water marks, which fit every
 * limit, did not wait for capacity and counts no wait.
 */
typedef struct RlWaitRecord
{
	bool		active;
	TimestampTz started;		/* real time */
	int			num_models;
	bool		refused[RL_MAX_WAIT_MODELS];
	int			slots[RL_MAX_WAIT_MODELS];
	uint32		generations[RL_MAX_WAIT_MODELS];
} RlWaitRecord;

static RlWaitRecord current_wait;
static bool wait_exit_callback_registered = false;

/* What made an attempt fail; raised once config_lock is released */
typedef enum RlAttemptFailure
{
	RL_ATTEMPT_OK = 0,
	RL_ATTEMPT_NO_JOB_TYPE,
	RL_ATTEMPT_NO_MODEL,		/* names[failed_index] */
	RL_ATTEMPT_NEVER_FITS,		/* the only model; attempt->never_fits */
	RL_ATTEMPT_NEEDS_OUTPUT,	/* names[failed_index] limits output tokens */
	RL_ATTEMPT_OUTPUT_EXCEEDS,	/* output_tokens > tokens */
	RL_ATTEMPT_LEASES_FULL,
	RL_ATTEMPT_LEASE_NOT_STORED
} RlAttemptFailure;

/*
 * Resolve the job type (args->job_type, NULL for none) and the request's
 * size: explicit tokens/requests, else the job type's estimates, else 0
 * tokens and 1 request.  The tokens are the whole estimate; an output
 * estimate (output, may be NULL) says how many of them are output, the
 * rest being input.  False when the job type does not exist.  Caller holds
 * config_lock.
 */
bool
pgrl_resolve_request(const char *job_type_name, const int64 *tokens, const int64 *output,
					 const int32 *requests, RlRequest *request)
{
	const RlJobType *job_type = NULL;

	request->job_type_slot = -1;
	request->job_type_generation = 0;
	if (job_type_name != NULL)
	{
		request->job_type_slot = pgrl_job_type_slot(job_type_name);
		if (request->job_type_slot < 0)
			return false;
		job_type = pgrl_job_type(request->job_type_slot);
		request->job_type_generation = job_type->generation;
	}
	request->tokens = tokens ? *tokens : job_type ? job_type->est_tokens : 0;
	request->has_output = output != NULL;
	request->output_tokens = output ? *output : 0;
	request->requests = requests ? *requests : job_type ? job_type->est_requests : 1;
	return true;
}

void
pgrl_report_no_job_type(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("job type \"%s\" does not exist", name)));
}

void
pgrl_report_no_model(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("model \"%s\" does not exist", name)));
}

/*
 * The error for a request without an output estimate on a model that
 * limits output tokens: the reservation would be wrong either way
 */
void
pgrl_report_needs_output(const char *model)
{
	ereport(ERROR,
			(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
			 errmsg("model \"%s\" limits output tokens (otpm): the request needs an output estimate",
					model),
			 errhint("Pass output_tokens => the request's max_tokens, and tokens => its input and output tokens together.")));
}

/* The error for an output estimate larger than the whole estimate */
void
pgrl_report_output_exceeds(const RlRequest *request)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("output_tokens (" INT64_FORMAT ") must not exceed tokens (" INT64_FORMAT ")",
					request->output_tokens, request->tokens),
			 errhint("tokens is the whole estimate, input and output: the input is tokens - output_tokens.")));
}

/* The error for a request larger than one of a model's limits */
static void
pgrl_report_never_fits(const char *model, const RlAdmission *admission,
					   const RlRequest *size)
{
	RlDimension dim = admission->never_fits;

	const char *unit = dim == RL_DIM_TPM || dim == RL_DIM_TPD ? "tokens" :
		dim == RL_DIM_ITPM ? "input tokens" :
		dim == RL_DIM_OTPM ? "output tokens" : "requests";

	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("request can never fit model \"%s\"", model),
			 errdetail("It needs " INT64_FORMAT " %s, and the model's %s limit is " INT64_FORMAT ".",
					   pgrl_dimension_amount(dim, size->tokens, size->output_tokens, size->requests),
					   unit, pgrl_dimension_names[dim], admission->never_fits_limit)));
}

/* Try the models in order under config_lock; see pgrl_attempt() */
static RlAttemptFailure
pgrl_attempt_locked(const RlAcquireArgs *args, int64 ticket, TimestampTz now,
					RlAttempt *attempt, int *failed_index)
{
	char	  **names = args->names;
	int			num_models = args->num_models;
	int		   *slots = attempt->all_slots;
	RlAdmission admission;
	RlMemoryCap *memory = &attempt->memory;
	TimestampTz expires_at = pgrl_add_saturating(now, args->ttl_us);

	Assert(pgrl_config_lock_held(LW_SHARED));
	if (!pgrl_resolve_request(args->job_type, args->has_tokens ? &args->tokens : NULL,
							  args->has_output_tokens ? &args->output_tokens : NULL,
							  args->has_requests ? &args->requests : NULL,
							  &attempt->request))
		return RL_ATTEMPT_NO_JOB_TYPE;
	if (attempt->request.output_tokens > attempt->request.tokens)
		return RL_ATTEMPT_OUTPUT_EXCEEDS;
	pgrl_memory_cap(args->instance, attempt->request.job_type_slot, memory);
	for (int i = 0; i < num_models; i++)
	{
		slots[i] = pgrl_model_slot(names[i]);
		if (slots[i] < 0)
		{
			*failed_index = i;
			return RL_ATTEMPT_NO_MODEL;
		}

		/*
		 * checked on every model before any is tried: a failed call changes
		 * nothing
		 */
		if (pgrl_ledger_needs_output(slots[i], &attempt->request))
		{
			*failed_index = i;
			return RL_ATTEMPT_NEEDS_OUTPUT;
		}
		if (i < RL_MAX_WAIT_MODELS)
			attempt->slots[i] = slots[i];
		attempt->max_wait_us = Max(attempt->max_wait_us,
								   pgrl_job_type_wait_us(attempt->request.job_type_slot,
														 slots[i]));
	}

	for (int i = 0; i < num_models; i++)
	{
		pgrl_ledger_admit(slots[i], &attempt->request, memory, ticket, now, expires_at,
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
			lease.lease_id = pgrl_leases_next_id();
			lease.model_slot = slots[i];
			lease.model_generation = admission.model_generation;
			lease.job_type_slot = attempt->request.job_type_slot;
			lease.job_type_generation = attempt->request.job_type_generation;
			lease.tokens = attempt->request.tokens;
			lease.output_tokens = attempt->request.output_tokens;
			lease.requests = attempt->request.requests;
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
			attempt->granted_generation = admission.model_generation;
			attempt->lease_id = lease.lease_id;
			break;
		}

		/* counted as a denial only if the call ends refused */
		attempt->refused_by[i] = admission.limited_by;
		if (i < RL_MAX_WAIT_MODELS)
		{
			attempt->generations[i] = admission.model_generation;
			attempt->limit_refused[i] = !admission.awaiting_mark;
		}

		/*
		 * A model that fits but waits for new marks (a moment) is taken over
		 * the models after it, as if it had admitted: wait for it.
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
	return RL_ATTEMPT_OK;
}

/*
 * One pass of an acquire: resolve the names, try the models in order and
 * store a lease for the first that admits.  config_lock is held shared
 * until the lease is stored, so no model is dropped meanwhile; errors are
 * raised only after it is released.
 */
static void
pgrl_attempt(const RlAcquireArgs *args, int64 ticket, TimestampTz now, RlAttempt *attempt)
{
	char	  **names = args->names;
	int			num_models = args->num_models;
	RlAttemptFailure failure;
	int			failed_index = -1;

	attempt->granted_index = -1;
	attempt->reported_index = -1;
	attempt->never_fits_index = -1;
	attempt->awaiting_mark = false;
	attempt->max_wait_us = 0;
	for (int i = 0; i < num_models; i++)
		attempt->refused_by[i] = -1;
	memset(attempt->limit_refused, 0, sizeof(attempt->limit_refused));

	pgrl_config_lock(LW_SHARED);
	failure = pgrl_attempt_locked(args, ticket, now, attempt, &failed_index);
	pgrl_config_unlock();

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
			pgrl_report_never_fits(names[0], &attempt->never_fits, &attempt->request);
			break;
		case RL_ATTEMPT_NEEDS_OUTPUT:
			pgrl_report_needs_output(names[failed_index]);
			break;
		case RL_ATTEMPT_OUTPUT_EXCEEDS:
			pgrl_report_output_exceeds(&attempt->request);
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
	pgrl_config_lock(LW_SHARED);
	job_type_slot = pgrl_job_type_slot(job_type_name);
	for (int i = 0; job_type_slot >= 0 && i < num_models; i++)
	{
		int			slot = pgrl_model_slot(names[i]);

		if (slot >= 0)
			longest = Max(longest, pgrl_job_type_wait_us(job_type_slot, slot));
	}
	pgrl_config_unlock();
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
						 Min(pgrl_sleep_ms(now, end), RL_CLIENT_CHECK_MS),
						 pgrl_wait_event(RL_WAIT_EVENT_ACQUIRE));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		pgrl_check_client_connection();
	}
}

/* Note the models a pass of the waiting call was refused by */
static void
pgrl_wait_note_refusals(const RlAttempt *attempt)
{
	for (int i = 0; i < current_wait.num_models; i++)
		if (attempt->limit_refused[i])
		{
			current_wait.refused[i] = true;
			current_wait.slots[i] = attempt->slots[i];
			current_wait.generations[i] = attempt->generations[i];
		}
}

/*
 * The wait in progress ended: count how, and how long it took, on the
 * model that granted it, or else on each model whose limits refused it
 * while it waited.  Takes config_lock: call with no lock held.
 */
static void
pgrl_wait_count_end(RlWaitOutcome outcome, const RlAttempt *attempt)
{
	int64		waited_us;
	bool		for_capacity = false;

	if (!current_wait.active)
		return;
	current_wait.active = false;
	for (int i = 0; i < current_wait.num_models; i++)
		for_capacity |= current_wait.refused[i];
	if (!for_capacity)
		return;
	waited_us = GetCurrentTimestamp() - current_wait.started;
	pgrl_config_lock(LW_SHARED);
	if (outcome == RL_WAIT_GRANTED)
		pgrl_ledger_count_wait(attempt->all_slots[attempt->granted_index],
							   attempt->granted_generation, outcome, waited_us);
	else
		for (int i = 0; i < current_wait.num_models; i++)
			if (current_wait.refused[i])
				pgrl_ledger_count_wait(current_wait.slots[i], current_wait.generations[i],
									   outcome, waited_us);
	pgrl_config_unlock();
}

/*
 * The session ends while it waits (terminated, its client gone, the
 * postmaster gone): the wait was cancelled.  A FATAL error skips the wait's
 * error handling; the locks it may have left are released at exit anyway.
 */
static void
pgrl_wait_exit(int code, Datum arg)
{
	if (!current_wait.active)
		return;
	LWLockReleaseAll();
	pgrl_wait_count_end(RL_WAIT_CANCELLED, NULL);
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
pgrl_wait_for_capacity(const RlAcquireArgs *args, int64 max_wait_us, RlAttempt *attempt)
{
	int			num_models = args->num_models;
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

	if (!wait_exit_callback_registered)
	{
		before_shmem_exit(pgrl_wait_exit, (Datum) 0);
		wait_exit_callback_registered = true;
	}
	memset(&current_wait, 0, sizeof(current_wait));
	current_wait.started = start;
	current_wait.num_models = num_models;
	pgrl_wait_note_refusals(attempt);
	current_wait.active = true;

	memcpy(registered, attempt->slots, sizeof(int) * num_models);
	ticket = pgrl_register_waiter(registered, num_models, attempt->request.tokens,
								  attempt->request.output_tokens, attempt->request.requests, attempt->request.job_type_slot,
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
			pgrl_attempt(args, ticket, now, attempt);
			MemoryContextSwitchTo(caller_context);
			pgrl_wait_note_refusals(attempt);
			if (attempt->granted_index >= 0 || attempt->reported_index < 0)
				break;

			/* a model was re-created in another slot: follow it */
			if (memcmp(registered, attempt->slots, sizeof(int) * num_models) != 0)
			{
				memcpy(registered, attempt->slots, sizeof(int) * num_models);
				pgrl_register_waiter(registered, num_models, attempt->request.tokens,
									 attempt->request.output_tokens, attempt->request.requests,
									 attempt->request.job_type_slot, &attempt->memory, ticket);
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
		pgrl_wait_count_end(RL_WAIT_CANCELLED, attempt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	pgrl_unregister_waiter();
	MemoryContextDelete(pass_context);
	/* refused in the end: max_wait passed (or an error follows: never fits) */
	pgrl_wait_count_end(attempt->granted_index >= 0 ? RL_WAIT_GRANTED :
						attempt->reported_index >= 0 ? RL_WAIT_TIMED_OUT : RL_WAIT_CANCELLED,
						attempt);
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
 * A call refused on every model it tried: count one denial on each model
 * that refused it (and on the job type's share of each), under the limit
 * that refused it in its last pass, however often it was tried while it
 * waited.
 */
static void
pgrl_count_refusal(const RlAcquireArgs *args, const RlAttempt *attempt)
{
	pgrl_config_lock(LW_SHARED);
	for (int i = 0; i < args->num_models; i++)
	{
		int			slot;

		if (attempt->refused_by[i] >= 0 && (slot = pgrl_model_slot(args->names[i])) >= 0)
			pgrl_ledger_count_refusal(slot, &attempt->request, attempt->refused_by[i]);
	}
	pgrl_config_unlock();
}

/*
 * rl_acquire and rl_acquire_any: try the models in order and grant the
 * first that admits, waiting up to max_wait (args->max_wait_us, -1 for the
 * job type's wait) when none does.  Errors for a request that can never
 * fit, names that do not exist, a role at its lease cap, a full lease
 * table.
 */
void
pgrl_acquire(RlAcquireArgs *args, RlAcquireResult *result)
{
	RlAttempt	attempt;
	int64		max_wait_us = args->max_wait_us;
	int			num_models = args->num_models;
	TimestampTz now;
	int			role_slot;

	/* a call that could wait on too many models fails before it tries any */
	if (num_models > RL_MAX_WAIT_MODELS &&
		(max_wait_us > 0 ||
		 (max_wait_us < 0 &&
		  pgrl_configured_max_wait(args->names, num_models, args->job_type) > 0)))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("cannot wait on more than %d models at once", RL_MAX_WAIT_MODELS),
				 errhint("Name at most %d models, or pass max_wait => 0.",
						 RL_MAX_WAIT_MODELS)));

	pgrl_check_instance_privilege(args->instance);
	if (args->session_bound)
		pgrl_release_session_leases_at_exit();
	role_slot = pgrl_holders_start_acquire(args->session_bound);
	if (role_slot == RL_ROLE_AT_CAP || role_slot == RL_ROLE_NO_ROOM)
		pgrl_report_role_cap(role_slot);
	args->role_slot = role_slot;

	/* everything an attempt needs, allocated before it takes a lock */
	attempt.refused_by = palloc(sizeof(int) * num_models);
	attempt.all_slots = palloc(sizeof(int) * num_models);
	pgrl_ledger_prepare();
	now = pgrl_now();
	/* for tests: another backend may roll the windows past now meanwhile */
	pgrl_debug_pause(RL_PAUSE_BEFORE_ADMISSION);
	pgrl_expire_due_leases(now);
	pgrl_attempt(args, RL_NEWCOMER_TICKET, now, &attempt);

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
			pgrl_wait_for_capacity(args, max_wait_us, &attempt);
			now = pgrl_now();
		}
	}

	/* a refused call counts once on each model that refused it */
	if (attempt.granted_index < 0)
		pgrl_count_refusal(args, &attempt);

	/* the worker saved no new mark in time: say so where operators look */
	if (attempt.granted_index < 0 && attempt.awaiting_mark)
	{
		ereport(LOG,
				(errmsg("pg_ratelimit refused a request that fits the limits of model \"%s\": no new high-water mark was saved in time",
						args->names[attempt.reported_index]),
				 errhint("Check that the pg_ratelimit worker is running (pg_stat_activity) and that its commits are not waiting, for example for a synchronous standby.")));
	}

	/* no lease: the role's count reserved for it goes back */
	pgrl_holders_end_acquire();

	/* every model refused the request as too large */
	if (attempt.granted_index < 0 && attempt.reported_index < 0)
		pgrl_report_never_fits(args->names[attempt.never_fits_index], &attempt.never_fits,
							   &attempt.request);

	result->granted = attempt.granted_index >= 0;
	result->now = now;
	if (result->granted)
	{
		result->lease_id = attempt.lease_id;
		result->model_index = attempt.granted_index;
		result->retry_at = 0;
		result->limited_by = -1;
	}
	else
	{
		result->lease_id = 0;
		result->model_index = attempt.reported_index;
		result->retry_at = attempt.reported.retry_at;
		result->limited_by = attempt.reported.limited_by;
	}
}
