/*-------------------------------------------------------------------------
 *
 * debug.c
 *		Pause points: holding a backend at a named place, for tests that
 *		must force one interleaving of concurrent calls.
 *
 * ratelimit.debug_pause names the points a session stops at (a comma
 * separated list; superuser only, and only on a server started with
 * ratelimit.enable_test_clock).  At a named point the backend takes and at
 * once gives back a share-mode session advisory lock with the keys
 * (RL_PAUSE_LOCK_KEY, point): the lock that
 * pg_advisory_lock(7411, point) takes exclusively.  A test session that
 * holds that lock stops the backend there, the isolation tester sees it
 * blocked on the lock, and pg_advisory_unlock(7411, point) lets it go.  A
 * heavyweight lock, not a latch or a sleep, so that waiting for it is
 * cancellable, visible in pg_locks and pg_blocking_pids(), and needs no
 * shared state of ours.
 *
 * The points are placed where the backend holds no LWLock.  With the
 * setting empty a point costs one test of a backend-local flag.
 *
 * On PostgreSQL 17+ built with injection points, each pause point is also
 * an injection point (debug.h), which the injection_points test module
 * drives (on a server started with ratelimit.enable_test_clock too); the
 * advisory locks stay because they work on every version and on the
 * servers distributions ship.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/varlena.h"
#ifdef USE_INJECTION_POINTS
#include "utils/injection_point.h"
#endif

#include "debug.h"
#include "pg_ratelimit.h"
#include "settings.h"

/* The names of the points, indexed by RlPausePoint */
static const char *const pause_point_names[] = {
	[RL_PAUSE_BEFORE_ADMISSION] = "before_admission",
	[RL_PAUSE_BEFORE_SLEEP] = "before_sleep",
};

#ifdef USE_INJECTION_POINTS
/* The injection points at the same places (debug.h) */
static const char *const injection_point_names[] = {
	[RL_PAUSE_BEFORE_ADMISSION] = "pg-ratelimit-before-admission",
	[RL_PAUSE_BEFORE_SLEEP] = "pg-ratelimit-before-sleep",
};

/* Run the injection point of a pause point: whatever a test attached */
void
pgrl_debug_injection_point(RlPausePoint point)
{
#if PG_VERSION_NUM >= 180000
	INJECTION_POINT(injection_point_names[point], NULL);
#else
	INJECTION_POINT(injection_point_names[point]);
#endif
}
#endif

uint32		pgrl_debug_pause_points = 0;

/* The setting as written, parsed into pgrl_debug_pause_points */
static char *pgrl_debug_pause_setting = NULL;

/* Hold here while a test session holds the point's advisory lock */
void
pgrl_debug_pause_wait(RlPausePoint point)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, RL_PAUSE_LOCK_KEY, (uint32) point, 2);
	(void) LockAcquire(&tag, ShareLock, true, false);
	LockRelease(&tag, ShareLock, true);
}

/*
 * Check hook of ratelimit.debug_pause: every name must be a pause point,
 * and the test clock must be enabled for any.  Passes the points on as a
 * bit mask.
 */
static bool
pgrl_debug_pause_check(char **newval, void **extra, GucSource source)
{
	char	   *copy;
	List	   *names;
	ListCell   *cell;
	uint32		points = 0;
	uint32	   *result;

	copy = pstrdup(*newval);
	if (!SplitIdentifierString(copy, ',', &names))
	{
		GUC_check_errdetail("The value must be a comma-separated list of pause point names.");
		pfree(copy);
		list_free(names);
		return false;
	}
	foreach(cell, names)
	{
		const char *name = (const char *) lfirst(cell);
		int			point;

		for (point = 0; point < (int) lengthof(pause_point_names); point++)
			if (pause_point_names[point] != NULL && strcmp(name, pause_point_names[point]) == 0)
				break;
		if (point == (int) lengthof(pause_point_names))
		{
			GUC_check_errdetail("Unknown pause point \"%s\".", name);
			GUC_check_errhint("The pause points are before_admission and before_sleep.");
			pfree(copy);
			list_free(names);
			return false;
		}
		points |= (uint32) 1 << point;
	}
	pfree(copy);
	list_free(names);

	if (points != 0 && !pgrl_enable_test_clock)
	{
		GUC_check_errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
		GUC_check_errmsg("pause points need ratelimit.enable_test_clock");
		GUC_check_errhint("They are for tests only: set ratelimit.enable_test_clock = on and restart the server.");
		return false;
	}

	/* GUC frees it: from PostgreSQL 16 on, it must come from guc_malloc */
#if PG_VERSION_NUM >= 160000
	result = guc_malloc(LOG, sizeof(uint32));
#else
	result = malloc(sizeof(uint32));
#endif
	if (result == NULL)
		return false;
	*result = points;
	*extra = result;
	return true;
}

/* Assign hook of ratelimit.debug_pause */
static void
pgrl_debug_pause_assign(const char *newval, void *extra)
{
	pgrl_debug_pause_points = *(uint32 *) extra;
}

/*
 * Define ratelimit.debug_pause; after the other settings (its check hook
 * reads ratelimit.enable_test_clock).
 */
void
pgrl_debug_define_settings(void)
{
	DefineCustomStringVariable("ratelimit.debug_pause",
							   "Pause points this session stops at (for tests only).",
							   "A comma-separated list of before_admission and before_sleep; needs ratelimit.enable_test_clock.",
							   &pgrl_debug_pause_setting,
							   "",
							   PGC_SUSET,
							   GUC_LIST_INPUT | GUC_NOT_IN_SAMPLE,
							   pgrl_debug_pause_check, pgrl_debug_pause_assign, NULL);
}
