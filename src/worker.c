/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The background worker: one per server, connected to
 *		ratelimit.database.
 *
 * It loads the configuration and saved state as soon as the server is up
 * (so the first acquire rarely has to), saves what changed every
 * ratelimit.persist_interval and once more at a clean shutdown, saves new
 * high-water marks whenever a model asks (ledger_marks.c), re-reads the
 * configuration when it changed behind the triggers' back (config.c),
 * expires leases on time, wakes at every minute boundary of the limiter's
 * clock to wake waiters, and sends the NOTIFY rl_capacity notifications.
 * Acquire and release load, expire and roll windows themselves when they
 * need to; they depend on the worker only for new marks.
 *
 * The launcher (launcher.c) starts it once the database exists, and again
 * after it exits.  It leaves, after saving its state as at a clean stop,
 * when a backend needs the database alone (DROP DATABASE and the like,
 * utility.c) or when a newer launcher took over (workerstate.c).  It
 * counts its rounds for the rl_worker view, and its errors are kept there.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "config.h"
#include "extsql.h"
#include "grant.h"
#include "instance.h"
#include "lease.h"
#include "ledger.h"
#include "notify.h"
#include "persist.h"
#include "settings.h"
#include "wait.h"
#include "waitevent.h"
#include "workerstate.h"

PGDLLEXPORT void rl_worker_main(Datum main_arg);

/*
 * The worker's own settings (see rl_worker_main).  synchronous_commit: a
 * mark must be durable, on synchronous standbys too, before anything is
 * granted under it.
 */
static const char *const worker_settings[][2] = {
	{"search_path", RL_PINNED_SEARCH_PATH},
	{"synchronous_commit", "on"},
	{"default_transaction_read_only", "off"},
	{"default_transaction_isolation", "read committed"},
	{"statement_timeout", "0"},
	{"lock_timeout", "0"},
	{"idle_in_transaction_session_timeout", "0"},
	{"session_replication_role", "origin"},
};

/* The longest the worker sleeps at once (a latch wait's timeout is an int) */
#define RL_LONGEST_SLEEP_MS		(3600 * 1000)

/* How long to sleep when the extension is not installed yet */
#define RL_NO_EXTENSION_SLEEP_MS	1000

static void
pgrl_worker_exit(int code, Datum arg)
{
	pgrl_set_worker_latch(NULL);
	pgrl_worker_release();
}

/*
 * Milliseconds from now until a time, rounded up, at least 0 and at most
 * RL_LONGEST_SLEEP_MS.  Overflow-safe: "never" is DT_NOEND, and from can be
 * any time the test clock was set to (DT_NOEND minus a time before
 * 2000-01-01 does not fit in an int64: wrapped, it made the worker spin).
 */
static long
pgrl_ms_until(TimestampTz from, TimestampTz to)
{
	int64		us;

	if (to <= from)
		return 0;
	if (pg_sub_s64_overflow(to, from, &us) || us > (int64) RL_LONGEST_SLEEP_MS * 1000)
		return RL_LONGEST_SLEEP_MS;
	return (long) ((us + 999) / 1000);
}

/*
 * Drop the instances whose heartbeat stopped, and expire their leases.
 * Returns when the next live instance goes stale, or DT_NOEND.
 */
static TimestampTz
pgrl_drop_stale(TimestampTz now)
{
	const char *names;
	TimestampTz next;
	int			dropped = pgrl_drop_stale_instances(now, &names, &next);

	for (int i = 0; i < dropped; i++)
		(void) pgrl_expire_instance_leases(names + (Size) i * (RL_NAME_MAX_LEN + 1), now);
	if (dropped > 0)
		pgrl_instances_changed();
	return next;
}

/*
 * One round of work in a transaction.  Returns how long to sleep before the
 * next round.
 */
static long
pgrl_worker_round(bool shutting_down, TimestampTz *last_save, TimestampTz *minute,
				  TimestampTz *last_ratios)
{
	bool		installed;
	long		sleep_ms = RL_NO_EXTENSION_SLEEP_MS;
	bool		save_state = false;
	TimestampTz persist_start = 0;
	int64		rows = 0;
	int			notices = 0;
	TimestampTz end;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "pg_ratelimit worker round");

	installed = OidIsValid(get_extension_oid("pg_ratelimit", true));
	if (installed)
	{
		TimestampTz now;
		TimestampTz real_now = GetCurrentTimestamp();
		TimestampTz next_save;
		TimestampTz next_minute;
		TimestampTz next_notice;
		TimestampTz next_refill;
		TimestampTz next_ratios;
		TimestampTz next_stale;
		TimestampTz next_allocation_notice;
		bool		new_minute = false;

		pgrl_check_config_triggers();
		pgrl_config_load_if_needed();
		pgrl_resync_config();
		now = pgrl_now();
		pgrl_expire_due_leases(now);
		next_stale = pgrl_drop_stale(now);

		/* a window reset: waiters sleep until it themselves; make sure */
		if (pgrl_window_start(now, USECS_PER_MINUTE) != *minute)
		{
			*minute = pgrl_window_start(now, USECS_PER_MINUTE);
			new_minute = true;
			pgrl_wake_all_waiters();
		}
		next_notice = pgrl_roll_and_queue_notifications(now, &next_refill, &notices);
		if (real_now >= *last_ratios + (int64) pgrl_ratio_interval_ms * 1000)
		{
			next_ratios = pgrl_ledger_adjust_ratios(now, real_now, true);
			*last_ratios = real_now;
		}
		else
			next_ratios = pgrl_ledger_adjust_ratios(now, real_now, false);
		next_allocation_notice = pgrl_queue_allocation_notice(now, &notices);

		save_state = shutting_down ||
			real_now >= *last_save + (int64) pgrl_persist_interval_ms * 1000;
		persist_start = GetCurrentTimestamp();
		rows = pgrl_persist_state(save_state, save_state || new_minute || pgrl_marks_requested(),
								  shutting_down);
		if (save_state)
			*last_save = real_now;

		next_save = *last_save + (int64) pgrl_persist_interval_ms * 1000;
		next_minute = pgrl_window_reset(pgrl_window_start(now, USECS_PER_MINUTE), RL_DIM_RPM);
		sleep_ms = Min(pgrl_ms_until(real_now, next_save), pgrl_ms_until(now, next_minute));
		sleep_ms = Min(sleep_ms, pgrl_ms_until(now, pgrl_earliest_expiry()));
		sleep_ms = Min(sleep_ms, pgrl_ms_until(now, pgrl_marks_next_release()));
		sleep_ms = Min(sleep_ms, pgrl_ms_until(real_now, next_notice));
		sleep_ms = Min(sleep_ms, pgrl_ms_until(now, next_refill));
		sleep_ms = Min(sleep_ms, pgrl_ms_until(real_now,
											   *last_ratios + (int64) pgrl_ratio_interval_ms * 1000));
		if (next_ratios != 0)
			sleep_ms = Min(sleep_ms, pgrl_ms_until(real_now, next_ratios));
		sleep_ms = Min(sleep_ms, pgrl_ms_until(now, next_stale));
		sleep_ms = Min(sleep_ms, pgrl_ms_until(real_now, next_allocation_notice));
	}

	PopActiveSnapshot();

	/*
	 * Synchronous: a mark must be durable, on synchronous standbys too,
	 * before anything is granted under it.  The last round only lowers marks,
	 * which a standby may miss (it then restores higher ones), and must not
	 * hang a shutdown on a standby that is down: local.
	 */
	if (shutting_down)
		SetConfigOption("synchronous_commit", "local", PGC_USERSET, PGC_S_OVERRIDE);
	CommitTransactionCommand();
	pgrl_publish_marks();
	/* for rl_worker; a save's time includes its synchronous commit */
	end = GetCurrentTimestamp();
	pgrl_worker_count_round(end, save_state, end - persist_start, rows, notices);
	/* let autovacuum see the rows we rewrite every interval */
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return sleep_ms;
}

/*
 * Connected to database dboid: is it still called ratelimit.database?  It
 * may have been renamed between the launcher's look and our connection.
 */
static bool
pgrl_database_is_ours(void)
{
	char	   *name;
	bool		ours;

	StartTransactionCommand();
	name = get_database_name(MyDatabaseId);
	ours = name != NULL && strcmp(name, pgrl_database_name) == 0;
	CommitTransactionCommand();
	return ours;
}

/*
 * Entry point of the background worker, started by the launcher: main_arg
 * is the database's OID, bgw_extra the launcher's generation.
 */
void
rl_worker_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	uint32		generation;
	TimestampTz last_save = 0;
	TimestampTz minute = 0;
	TimestampTz last_ratios = 0;
	bool		leaving = false;

	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(generation));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	pgrl_worker_capture_errors();

	/* asked to leave before we even connected: do not */
	if (!pgrl_worker_may_run(generation))
	{
		pgrl_worker_set_exit(generation, RL_WORKER_EXIT_DETACHED);
		proc_exit(0);
	}
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	/*
	 * Nothing the worker does may depend on settings a role or the owner of
	 * the database chose (ALTER ROLE/DATABASE ... SET): a read-only default,
	 * a timeout, another search_path or isolation level would stop it saving
	 * marks, and with them every grant past them.
	 */
	for (int i = 0; i < (int) lengthof(worker_settings); i++)
		SetConfigOption(worker_settings[i][0], worker_settings[i][1], PGC_SUSET,
						PGC_S_OVERRIDE);

	/* renamed meanwhile, or asked to leave: the launcher looks again */
	if (!pgrl_database_is_ours() || !pgrl_worker_claim(generation))
	{
		pgrl_worker_set_exit(generation, RL_WORKER_EXIT_DETACHED);
		proc_exit(0);
	}
	CacheRegisterRelcacheCallback(pgrl_config_relcache_callback, (Datum) 0);

	before_shmem_exit(pgrl_worker_exit, (Datum) 0);
	pgrl_set_worker_latch(MyLatch);
	/* what changed behind the triggers while no worker ran */
	pgrl_request_config_resync();
	elog(LOG, "pg_ratelimit worker started in database \"%s\"", pgrl_database_name);

	for (;;)
	{
		bool		shutting_down;
		uint32		wakeups = pgrl_worker_wakeups();
		long		sleep_ms;

		/* a statement needs the database alone, or a newer launcher runs */
		leaving = !pgrl_worker_may_run(generation);
		shutting_down = ShutdownRequestPending || leaving;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* the last round saves everything, then we exit */
		sleep_ms = pgrl_worker_round(shutting_down, &last_save, &minute, &last_ratios);
		if (shutting_down)
			break;

		/*
		 * Idle: a named wait event from PostgreSQL 17 on, else none
		 * (waitevent.c).  Woken during the round: its commit may have waited
		 * for a synchronous standby, which resets our latch.  Go again at
		 * once, or a request for marks made meanwhile waits for the next
		 * timed round.
		 */
		if (pgrl_worker_wakeups() == wakeups)
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Max(sleep_ms, 1), pgrl_wait_event(RL_WAIT_EVENT_WORKER_MAIN));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	if (leaving)
	{
		pgrl_worker_set_exit(generation, RL_WORKER_EXIT_DETACHED);
		elog(LOG, "pg_ratelimit worker saved its state and left database \"%s\"",
			 pgrl_database_name);
	}
	else
	{
		pgrl_worker_set_exit(generation, RL_WORKER_EXIT_STOPPED);
		elog(LOG, "pg_ratelimit worker saved its state and stopped");
	}
	proc_exit(0);
}
