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
 * the name-to-number table is PostgreSQL's shared memory, not ours.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/wait_event.h"

#include "waitevent.h"

#if PG_VERSION_NUM >= 170000

static const char *const wait_event_names[] = {
	[RL_WAIT_EVENT_ACQUIRE] = "RateLimitAcquire",
	[RL_WAIT_EVENT_WORKER_MAIN] = "RateLimitWorkerMain",
	[RL_WAIT_EVENT_LAUNCHER_MAIN] = "RateLimitLauncherMain",
};

/* This process's numbers of the events, 0 until first used */
static uint32 wait_event_ids[lengthof(wait_event_names)];

uint32
pgrl_wait_event(RlWaitEvent event)
{
	Assert(event >= 0 && event < lengthof(wait_event_names));
	if (wait_event_ids[event] == 0)
		wait_event_ids[event] = WaitEventExtensionNew(wait_event_names[event]);
	return wait_event_ids[event];
}

#else

uint32
pgrl_wait_event(RlWaitEvent event)
{
	return event == RL_WAIT_EVENT_ACQUIRE ? PG_WAIT_EXTENSION : 0;
}

#endif
