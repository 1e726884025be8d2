/*-------------------------------------------------------------------------
 *
 * waitevent.c
 *		The wait events pg_ratelimit's processes show in pg_stat_activity.
 *
 * From PostgreSQL 17 on, an extension can name its own wait events
 * (WaitEventExtensionNew): a caller blocked in rl_acquire shows
 * wait_event_type 'Extension' and wait_event 'RateLimitAcquire', the idle
 * worker 'RateLimitWorkerMain' and the idle launcher
 * 'RateLimitLauncherMain', and pg_wait_events lists them once used.
 *
 * Before 17 every extension wait is the one event 'Extension'.  There only
 * the blocked callers use it; the idle worker and launcher show no wait
 * event, so that wait_event_type = 'Extension' does not mix them in.
 *
 * Each process asks PostgreSQL for an event's number once and keeps it:
 * the name-to-number table is PostgreSQL's shared memory, not ours.  That
 * table has room for a fixed number of names (the server's, for every
 * extension): when it is full, PostgreSQL raises an error, and a process
 * then waits as before 17 rather than fail for a label.  Callers hold no
 * LWLock (they are about to sleep), so the error's cleanup is to release
 * the one PostgreSQL held while registering.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "waitevent.h"

/* The wait event before PostgreSQL 17 */
static uint32
pgrl_unnamed_wait_event(RlWaitEvent event)
{
	return event == RL_WAIT_EVENT_ACQUIRE ? PG_WAIT_EXTENSION : 0;
}

#if PG_VERSION_NUM >= 170000

static const char *const wait_event_names[] = {
	[RL_WAIT_EVENT_ACQUIRE] = "RateLimitAcquire",
	[RL_WAIT_EVENT_WORKER_MAIN] = "RateLimitWorkerMain",
	[RL_WAIT_EVENT_LAUNCHER_MAIN] = "RateLimitLauncherMain",
};

/* This process's numbers of the events, once asked for */
static uint32 wait_event_ids[lengthof(wait_event_names)];
static bool wait_event_known[lengthof(wait_event_names)];

uint32
pgrl_wait_event(RlWaitEvent event)
{
	Assert(event >= 0 && event < lengthof(wait_event_names));
	/* the error's cleanup below assumes this: no LWLock, no holdoff */
	Assert(InterruptHoldoffCount == 0 && CritSectionCount == 0);
	if (!wait_event_known[event])
	{
		MemoryContext context = CurrentMemoryContext;

		PG_TRY();
		{
			wait_event_ids[event] = WaitEventExtensionNew(wait_event_names[event]);
		}
		PG_CATCH();
		{
			ErrorData  *error;

			LWLockReleaseAll();
			MemoryContextSwitchTo(context);
			error = CopyErrorData();
			FlushErrorState();
			ereport(LOG,
					(errmsg("pg_ratelimit waits without the wait event name %s: %s",
							wait_event_names[event], error->message)));
			FreeErrorData(error);
			wait_event_ids[event] = pgrl_unnamed_wait_event(event);
		}
		PG_END_TRY();
		wait_event_known[event] = true;
	}
	return wait_event_ids[event];
}

#else

uint32
pgrl_wait_event(RlWaitEvent event)
{
	return pgrl_unnamed_wait_event(event);
}

#endif
