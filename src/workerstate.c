/*-------------------------------------------------------------------------
 *
 * workerstate.c
 *		What the launcher, the worker and the backends know of each other.
 *
 * The launcher (launcher.c) starts the worker (worker.c) as a dynamic
 * background worker whenever ratelimit.database exists and no statement
 * needs that database alone.  This file holds what they share:
 *
 * - who runs: the launcher's pid and latch, the connected worker's pid, and
 *   whether the launcher has a worker registered that it has not yet seen
 *   stop (worker_active: from registration until the postmaster reports
 *   the process gone, which is later than the worker's own exit callback);
 * - a generation, bumped by each launcher start: a worker runs only while
 *   its launcher's generation is current, so a launcher restarted by hand
 *   never ends up with two workers;
 * - requests to leave the database (detach_holders): a backend about to run
 *   DROP DATABASE, ALTER DATABASE ... RENAME, CREATE DATABASE ... TEMPLATE
 *   or a tablespace move of the served database holds one until its
 *   transaction ends (utility.c).  While any is held the worker saves its
 *   state and leaves, and the launcher starts none;
 * - health counters for the rl_worker view, since shared memory was set up
 *   (server start, or the restart after a crash), and the last error the
 *   launcher or the worker reported.
 *
 * Locking: one spinlock, mutex, protects every field; it is held only to
 * copy a few words (and one error message) in or out, never across a call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/elog.h"
#include "utils/timestamp.h"

#include "wait.h"
#include "workerstate.h"

/* How often a backend looks whether the worker has left (a short poll) */
#define RL_DETACH_POLL_MS		10

typedef struct RlWorkerShared
{
	slock_t		mutex;
	uint32		generation;		/* bumped by each launcher start */
	int			launcher_pid;	/* 0 when no launcher runs */
	Latch	   *launcher_latch;
	RlLauncherPhase phase;
	TimestampTz next_attempt_at;
	bool		worker_active;	/* registered, not yet seen stopped */
	int			worker_pid;		/* the connected worker, or 0 */
	RlWorkerExit worker_exit;	/* how the last worker said it left */
	int			detach_holders; /* backends that need the database alone */
	TimestampTz stats_since;
	TimestampTz started_at;
	int64		restarts;
	int64		rounds;
	TimestampTz last_round_at;
	int64		persist_rounds;
	TimestampTz last_persist_at;
	int64		last_persist_us;
	int64		last_persist_rows;
	int64		rows_written;	/* by every save since start */
	int64		notifications_sent;
	char		last_error[RL_WORKER_ERROR_LEN];
	TimestampTz last_error_at;
} RlWorkerShared;

static RlWorkerShared *shared = NULL;

/* This backend holds a request to leave (released at its transaction's end) */
static bool detach_held = false;
static bool exit_callback_registered = false;

static emit_log_hook_type prev_emit_log_hook = NULL;

Size
pgrl_worker_state_shmem_size(void)
{
	return sizeof(RlWorkerShared);
}

/* Create or attach; caller holds AddinShmemInitLock */
void
pgrl_worker_state_shmem_init(void)
{
	bool		found;

	shared = ShmemInitStruct("pg_ratelimit worker state", sizeof(RlWorkerShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(RlWorkerShared));
		SpinLockInit(&shared->mutex);
		shared->phase = RL_LAUNCHER_IDLE;
		shared->worker_exit = RL_WORKER_EXIT_ERROR;
		shared->stats_since = GetCurrentTimestamp();
	}
}

/*
 * A launcher starts: take over from any earlier one.  A worker an earlier
 * launcher started sees the new generation and leaves.  Returns the
 * generation to start workers with.
 */
uint32
pgrl_launcher_attach(Latch *latch)
{
	uint32		generation;

	SpinLockAcquire(&shared->mutex);
	generation = ++shared->generation;
	shared->launcher_pid = MyProcPid;
	shared->launcher_latch = latch;
	shared->phase = RL_LAUNCHER_IDLE;
	shared->worker_active = false;
	SpinLockRelease(&shared->mutex);
	pgrl_wake_worker();
	return generation;
}

/* The launcher exits */
void
pgrl_launcher_detach(void)
{
	SpinLockAcquire(&shared->mutex);
	if (shared->launcher_pid == MyProcPid)
	{
		shared->launcher_pid = 0;
		shared->launcher_latch = NULL;
		shared->phase = RL_LAUNCHER_IDLE;
	}
	SpinLockRelease(&shared->mutex);
}

/* What the launcher does now, and when it looks again (0: when woken) */
void
pgrl_launcher_set_phase(RlLauncherPhase phase, TimestampTz next_attempt_at)
{
	SpinLockAcquire(&shared->mutex);
	shared->phase = phase;
	shared->next_attempt_at = next_attempt_at;
	SpinLockRelease(&shared->mutex);
}

/*
 * The launcher is about to register a worker: refused while a backend needs
 * the database alone (the launcher waits to be woken) or while a worker of
 * an earlier launcher is still connected (it is leaving).
 */
RlStartVerdict
pgrl_launcher_begin_start(void)
{
	RlStartVerdict verdict = RL_START_OK;

	SpinLockAcquire(&shared->mutex);
	if (shared->detach_holders > 0)
		verdict = RL_START_DETACHED;
	else if (shared->worker_pid != 0)
		verdict = RL_START_BUSY;
	else
	{
		shared->worker_active = true;
		shared->worker_exit = RL_WORKER_EXIT_ERROR;
	}
	SpinLockRelease(&shared->mutex);
	return verdict;
}

/* The worker the launcher registered is on its way (restart: counted) */
void
pgrl_launcher_worker_started(bool restart)
{
	SpinLockAcquire(&shared->mutex);
	shared->phase = RL_LAUNCHER_STARTING;
	shared->next_attempt_at = 0;
	if (restart)
		shared->restarts++;
	SpinLockRelease(&shared->mutex);
}

/*
 * The postmaster reports the launcher's worker gone (or it could not be
 * registered).  Returns how it said it left; *started_at is when it
 * connected (0 if it never did).
 */
RlWorkerExit
pgrl_launcher_worker_stopped(TimestampTz *started_at)
{
	RlWorkerExit how;

	SpinLockAcquire(&shared->mutex);
	shared->worker_active = false;
	how = shared->worker_exit;
	*started_at = shared->started_at;
	shared->started_at = 0;
	SpinLockRelease(&shared->mutex);
	return how;
}

/* Is a worker connected to the database? */
bool
pgrl_worker_connected(void)
{
	bool		connected;

	SpinLockAcquire(&shared->mutex);
	connected = shared->worker_pid != 0;
	SpinLockRelease(&shared->mutex);
	return connected;
}

/* Wake the launcher: a request was released, or the database may be there */
void
pgrl_wake_launcher(void)
{
	Latch	   *latch;

	SpinLockAcquire(&shared->mutex);
	latch = shared->launcher_latch;
	SpinLockRelease(&shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/* May a worker of this generation run: no one needs the database alone? */
bool
pgrl_worker_may_run(uint32 generation)
{
	bool		may_run;

	SpinLockAcquire(&shared->mutex);
	may_run = shared->detach_holders == 0 && shared->generation == generation;
	SpinLockRelease(&shared->mutex);
	return may_run;
}

/*
 * A worker that has connected becomes the worker, unless it should leave
 * already or another one still is.
 */
bool
pgrl_worker_claim(uint32 generation)
{
	bool		claimed = false;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&shared->mutex);
	if (shared->detach_holders == 0 && shared->generation == generation &&
		shared->worker_pid == 0)
	{
		shared->worker_pid = MyProcPid;
		shared->started_at = now;
		claimed = true;
	}
	SpinLockRelease(&shared->mutex);
	return claimed;
}

/* The worker exits (before_shmem_exit) */
void
pgrl_worker_release(void)
{
	SpinLockAcquire(&shared->mutex);
	if (shared->worker_pid == MyProcPid)
		shared->worker_pid = 0;
	SpinLockRelease(&shared->mutex);
}

/*
 * The worker says how it leaves, just before it exits (a worker of an
 * earlier launcher says nothing: no one waits for it)
 */
void
pgrl_worker_set_exit(uint32 generation, RlWorkerExit how)
{
	SpinLockAcquire(&shared->mutex);
	if (shared->generation == generation)
		shared->worker_exit = how;
	SpinLockRelease(&shared->mutex);
}

/*
 * A worker round committed at "at".  persisted: it saved the state, in
 * persist_us microseconds (with its commit), writing rows rows.
 */
void
pgrl_worker_count_round(TimestampTz at, bool persisted, int64 persist_us, int64 rows,
						int notifications)
{
	SpinLockAcquire(&shared->mutex);
	shared->rounds++;
	shared->last_round_at = at;
	if (persisted)
	{
		shared->persist_rounds++;
		shared->last_persist_at = at;
		shared->last_persist_us = persist_us;
		shared->last_persist_rows = rows;
		shared->rows_written += rows;
	}
	shared->notifications_sent += notifications;
	SpinLockRelease(&shared->mutex);
}

/* Keep an error message for rl_worker */
void
pgrl_worker_note_error(const char *message)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&shared->mutex);
	strlcpy(shared->last_error, message, sizeof(shared->last_error));
	shared->last_error_at = now;
	SpinLockRelease(&shared->mutex);
}

/* emit_log_hook of the launcher and the worker: keep their errors */
static void
pgrl_capture_error(ErrorData *edata)
{
	if (edata->elevel >= ERROR && edata->message != NULL && shared != NULL)
		pgrl_worker_note_error(edata->message);
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* In the launcher and the worker: keep every error they report */
void
pgrl_worker_capture_errors(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = pgrl_capture_error;
}

static void
pgrl_release_detach_at_exit(int code, Datum arg)
{
	pgrl_release_detach();
}

/*
 * This backend is about to run a statement that needs the served database
 * without other sessions: hold a request to leave it (until
 * pgrl_release_detach, at the end of the transaction), wake the worker and
 * the launcher, and wait until the worker has saved its state and its
 * process is gone, at most timeout_ms.  Returns whether it is gone.
 */
bool
pgrl_request_detach(int timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	if (!detach_held)
	{
		if (!exit_callback_registered)
		{
			before_shmem_exit(pgrl_release_detach_at_exit, (Datum) 0);
			exit_callback_registered = true;
		}
		SpinLockAcquire(&shared->mutex);
		shared->detach_holders++;
		SpinLockRelease(&shared->mutex);
		detach_held = true;
	}
	pgrl_wake_worker();
	pgrl_wake_launcher();

	for (;;)
	{
		bool		gone;

		/* without a launcher no one reports the process gone: its pid */
		SpinLockAcquire(&shared->mutex);
		gone = shared->worker_pid == 0 &&
			(!shared->worker_active || shared->launcher_pid == 0);
		SpinLockRelease(&shared->mutex);
		if (gone)
			return true;
		if (GetCurrentTimestamp() >= deadline)
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 RL_DETACH_POLL_MS, WAIT_EVENT_BGWORKER_SHUTDOWN);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Give back this backend's request, if it holds one: the worker may return */
void
pgrl_release_detach(void)
{
	if (!detach_held)
		return;
	SpinLockAcquire(&shared->mutex);
	shared->detach_holders--;
	SpinLockRelease(&shared->mutex);
	detach_held = false;
	pgrl_wake_launcher();
}

/* Does this backend hold a request to leave? */
bool
pgrl_detach_held(void)
{
	return detach_held;
}

/* A copy of everything, for rl_worker */
void
pgrl_worker_status(RlWorkerStatus *status)
{
	SpinLockAcquire(&shared->mutex);
	status->launcher_pid = shared->launcher_pid;
	status->worker_pid = shared->worker_pid;
	status->phase = shared->phase;
	status->detach_requested = shared->detach_holders > 0;
	status->stats_since = shared->stats_since;
	status->started_at = shared->worker_pid != 0 ? shared->started_at : 0;
	status->next_attempt_at = shared->next_attempt_at;
	status->restarts = shared->restarts;
	status->rounds = shared->rounds;
	status->last_round_at = shared->last_round_at;
	status->persist_rounds = shared->persist_rounds;
	status->last_persist_at = shared->last_persist_at;
	status->last_persist_us = shared->last_persist_us;
	status->last_persist_rows = shared->last_persist_rows;
	status->rows_written = shared->rows_written;
	status->notifications_sent = shared->notifications_sent;
	memcpy(status->last_error, shared->last_error, sizeof(status->last_error));
	status->last_error_at = shared->last_error_at;
	SpinLockRelease(&shared->mutex);
}
