/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The launcher: a background worker connected to no database that
 *		starts the worker (worker.c) in ratelimit.database.
 *
 * A worker that connects at server start to a database that does not
 * exist yet fails, and the postmaster would start it again every second,
 * each time with a FATAL in the log.  The launcher instead looks for the
 * database in the shared catalog pg_database (as the autovacuum launcher
 * does) and starts the worker, as a dynamic background worker that reports
 * to it, only when the database is there and accepts connections.  Until
 * then it says so once in the log and looks again after 1 s, 2 s, 4 s ...
 * up to RL_BACKOFF_MAX_MS, and at once when woken: a backend that created
 * or renamed a database to that name, or changed whether it allows
 * connections, wakes it at commit (utility.c).
 *
 * When the worker exits the launcher decides what next (workerstate.c
 * holds what the worker said): after an error it logs the failure and
 * starts the worker again with the same backoff, reset once a worker has
 * run for RL_STABLE_RUN_MS; after a SIGTERM (pg_terminate_backend) one
 * second later, as the postmaster did for a static worker; after it left
 * because a statement needed the database alone (DROP DATABASE, ...: see
 * utility.c), once that statement's transaction has ended and if the
 * database is (still) there.  Every start after a stop that nobody asked
 * for counts as a restart.
 *
 * Like the worker it runs only on a primary (BgWorkerStart_RecoveryFinished):
 * a standby has neither, as before.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "launcher.h"
#include "settings.h"
#include "waitevent.h"
#include "workerstate.h"

PGDLLEXPORT void rl_launcher_main(Datum main_arg);

/* Backoff of the checks for the database and of restarts after errors */
#define RL_BACKOFF_MIN_MS		1000
#define RL_BACKOFF_MAX_MS		30000

/* A worker that ran this long before an error restarts without delay growth */
#define RL_STABLE_RUN_MS		60000

/* How soon to look again whether an earlier launcher's worker has left */
#define RL_BUSY_POLL_MS			100

/* What pg_database says about ratelimit.database */
typedef enum RlDatabaseLookup
{
	RL_DATABASE_FOUND,
	RL_DATABASE_MISSING,
	RL_DATABASE_NO_CONNECTIONS
} RlDatabaseLookup;

/* The launcher's own bookkeeping, between rounds of its loop */
typedef struct RlLauncher
{
	uint32		generation;
	BackgroundWorkerHandle *handle; /* the registered worker, or NULL */
	RlLauncherPhase phase;
	TimestampTz next_attempt;	/* when to look for the database again */
	int			check_delay_ms; /* backoff of the look for the database */
	int			restart_delay_ms;	/* backoff of restarts after errors */
	RlDatabaseLookup logged;	/* what the log last said of the database */
	bool		no_slot_logged;
	bool		restart_pending;	/* the next start is a restart */
} RlLauncher;

/* Register the launcher; called from _PG_init while preloading */
void
pgrl_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	/* a connection to no database, to read the shared catalog pg_database */
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* not on a standby: the primary's state is authoritative */
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	strlcpy(worker.bgw_library_name, "pg_ratelimit", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "rl_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "pg_ratelimit launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "pg_ratelimit launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/* Register the worker for database dboid; false when no slot is free */
static bool
pgrl_register_worker(Oid dboid, uint32 generation, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* the launcher restarts it, with a backoff */
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_notify_pid = MyProcPid;
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	memcpy(worker.bgw_extra, &generation, sizeof(generation));
	strlcpy(worker.bgw_library_name, "pg_ratelimit", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "rl_worker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "pg_ratelimit worker", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "pg_ratelimit worker", BGW_MAXLEN);
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/*
 * Look for ratelimit.database in pg_database with a heap scan (as the
 * autovacuum launcher does: without a database only the shared catalogs
 * are at hand).  A database a DROP DATABASE left half-dropped counts as
 * missing.
 */
static RlDatabaseLookup
pgrl_find_database(Oid *dboid)
{
	RlDatabaseLookup result = RL_DATABASE_MISSING;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	pgstat_report_activity(STATE_RUNNING, "pg_ratelimit launcher looks for its database");

	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tuple = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		if (strcmp(NameStr(db->datname), pgrl_database_name) != 0)
			continue;
#ifdef DATCONNLIMIT_INVALID_DB
		if (db->datconnlimit == DATCONNLIMIT_INVALID_DB)
			break;
#endif
		*dboid = db->oid;
		result = db->datallowconn ? RL_DATABASE_FOUND : RL_DATABASE_NO_CONNECTIONS;
		break;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);

	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return result;
}

/* Say once, for as long as it lasts, why no worker runs */
static void
pgrl_log_waiting(RlLauncher *launcher, RlDatabaseLookup lookup)
{
	if (launcher->logged == lookup)
		return;
	launcher->logged = lookup;
	if (lookup == RL_DATABASE_MISSING)
		ereport(LOG,
				(errmsg("database \"%s\" does not exist; pg_ratelimit waits for it",
						pgrl_database_name),
				 errhint("Create it, or set ratelimit.database and restart the server.")));
	else if (lookup == RL_DATABASE_NO_CONNECTIONS)
		ereport(LOG,
				(errmsg("database \"%s\" does not allow connections; pg_ratelimit waits until it does",
						pgrl_database_name)));
}

static void
pgrl_set_phase(RlLauncher *launcher, RlLauncherPhase phase, TimestampTz next_attempt)
{
	launcher->phase = phase;
	launcher->next_attempt = next_attempt;
	pgrl_launcher_set_phase(phase, next_attempt);
}

/*
 * Start the worker if the database is there and no one needs it alone.
 * Returns how long to sleep before trying again, or -1 to sleep until
 * woken (the postmaster wakes us when the worker stops).
 */
static long
pgrl_try_start(RlLauncher *launcher, TimestampTz now)
{
	RlDatabaseLookup lookup;
	Oid			dboid = InvalidOid;

	lookup = pgrl_find_database(&dboid);
	if (lookup != RL_DATABASE_FOUND)
	{
		long		delay = launcher->check_delay_ms;

		pgrl_log_waiting(launcher, lookup);
		launcher->check_delay_ms = Min(launcher->check_delay_ms * 2, RL_BACKOFF_MAX_MS);
		pgrl_set_phase(launcher, lookup == RL_DATABASE_MISSING ?
					   RL_LAUNCHER_WAITING_DATABASE : RL_LAUNCHER_WAITING_CONNECTIONS,
					   TimestampTzPlusMilliseconds(now, delay));
		return delay;
	}
	if (launcher->logged != RL_DATABASE_FOUND)
	{
		if (launcher->phase == RL_LAUNCHER_WAITING_DATABASE ||
			launcher->phase == RL_LAUNCHER_WAITING_CONNECTIONS)
			ereport(LOG,
					(errmsg("database \"%s\" is there; pg_ratelimit starts its worker",
							pgrl_database_name)));
		launcher->logged = RL_DATABASE_FOUND;
	}
	launcher->check_delay_ms = RL_BACKOFF_MIN_MS;

	switch (pgrl_launcher_begin_start())
	{
		case RL_START_DETACHED:
			pgrl_set_phase(launcher, RL_LAUNCHER_DETACHED, 0);
			return -1;
		case RL_START_BUSY:
			launcher->next_attempt = TimestampTzPlusMilliseconds(now, RL_BUSY_POLL_MS);
			return RL_BUSY_POLL_MS;
		case RL_START_OK:
			break;
	}

	if (!pgrl_register_worker(dboid, launcher->generation, &launcher->handle))
	{
		TimestampTz started_at;
		long		delay = launcher->restart_delay_ms;

		launcher->handle = NULL;
		(void) pgrl_launcher_worker_stopped(&started_at);
		if (!launcher->no_slot_logged)
			ereport(LOG,
					(errmsg("pg_ratelimit could not start its worker: no background worker slot is free"),
					 errhint("Raise max_worker_processes: pg_ratelimit needs two slots, one for its launcher and one for its worker.")));
		launcher->no_slot_logged = true;
		pgrl_worker_note_error("could not start the worker: no background worker slot is free");
		launcher->restart_delay_ms = Min(launcher->restart_delay_ms * 2, RL_BACKOFF_MAX_MS);
		pgrl_set_phase(launcher, RL_LAUNCHER_RESTARTING, TimestampTzPlusMilliseconds(now, delay));
		return delay;
	}
	launcher->no_slot_logged = false;
	pgrl_launcher_worker_started(launcher->restart_pending);
	launcher->restart_pending = false;
	launcher->phase = RL_LAUNCHER_STARTING;
	launcher->next_attempt = 0;
	return -1;
}

/*
 * The worker stopped: decide when to start it again (see the top of this
 * file).
 */
static void
pgrl_worker_gone(RlLauncher *launcher, TimestampTz now)
{
	TimestampTz started_at;
	RlWorkerExit how = pgrl_launcher_worker_stopped(&started_at);

	pfree(launcher->handle);
	launcher->handle = NULL;

	switch (how)
	{
		case RL_WORKER_EXIT_DETACHED:
			/* asked to leave: back as soon as it may */
			pgrl_set_phase(launcher, RL_LAUNCHER_DETACHED, now);
			break;
		case RL_WORKER_EXIT_STOPPED:
			launcher->restart_pending = true;
			pgrl_set_phase(launcher, RL_LAUNCHER_RESTARTING,
						   TimestampTzPlusMilliseconds(now, RL_BACKOFF_MIN_MS));
			break;
		case RL_WORKER_EXIT_ERROR:
			if (started_at != 0 &&
				TimestampDifferenceExceeds(started_at, now, RL_STABLE_RUN_MS))
				launcher->restart_delay_ms = RL_BACKOFF_MIN_MS;
			ereport(LOG,
					(errmsg("pg_ratelimit worker exited with an error; the launcher starts it again in %d s",
							launcher->restart_delay_ms / 1000)));
			launcher->restart_pending = true;
			pgrl_set_phase(launcher, RL_LAUNCHER_RESTARTING,
						   TimestampTzPlusMilliseconds(now, launcher->restart_delay_ms));
			launcher->restart_delay_ms = Min(launcher->restart_delay_ms * 2, RL_BACKOFF_MAX_MS);
			break;
	}
}

static void
pgrl_launcher_exit(int code, Datum arg)
{
	pgrl_launcher_detach();
}

/* Entry point of the launcher */
void
rl_launcher_main(Datum main_arg)
{
	RlLauncher	launcher;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgrl_worker_capture_errors();

	memset(&launcher, 0, sizeof(launcher));
	launcher.phase = RL_LAUNCHER_IDLE;
	launcher.check_delay_ms = RL_BACKOFF_MIN_MS;
	launcher.restart_delay_ms = RL_BACKOFF_MIN_MS;
	launcher.logged = RL_DATABASE_FOUND;
	before_shmem_exit(pgrl_launcher_exit, (Datum) 0);
	launcher.generation = pgrl_launcher_attach(MyLatch);
	pgstat_report_activity(STATE_IDLE, NULL);

	while (!ShutdownRequestPending)
	{
		TimestampTz now;
		long		sleep_ms = -1;
		int			events;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		now = GetCurrentTimestamp();
		if (launcher.handle != NULL)
		{
			pid_t		pid;

			/* the postmaster wakes us when it stops */
			if (GetBackgroundWorkerPid(launcher.handle, &pid) == BGWH_STOPPED)
				pgrl_worker_gone(&launcher, now);
		}
		if (launcher.handle == NULL)
		{
			if (now >= launcher.next_attempt)
				sleep_ms = pgrl_try_start(&launcher, now);
			else
				sleep_ms = (long) ((launcher.next_attempt - now + 999) / 1000);
		}

		/* idle: named from PostgreSQL 17 on, else none (waitevent.c) */
		events = WaitLatch(MyLatch,
						   WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | (sleep_ms >= 0 ? WL_TIMEOUT : 0),
						   sleep_ms, pgrl_wait_event(RL_WAIT_EVENT_LAUNCHER_MAIN));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		/* woken while waiting for the database or a statement: look now */
		if ((events & WL_LATCH_SET) && launcher.handle == NULL &&
			launcher.phase != RL_LAUNCHER_RESTARTING)
			launcher.next_attempt = 0;
	}
	/* not 0: the postmaster would forget a static worker that exits with 0 */
	proc_exit(1);
}
