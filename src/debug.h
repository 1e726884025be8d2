/*-------------------------------------------------------------------------
 *
 * debug.h
 *		Pause points for tests (ratelimit.debug_pause).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_DEBUG_H
#define RL_DEBUG_H

#include "utils/guc.h"

#include "settings.h"

/*
 * The named places where a backend can be held for a test.  The value is
 * the second key of the advisory lock that holds it (the first is
 * RL_PAUSE_LOCK_KEY).
 */
typedef enum RlPausePoint
{
	RL_PAUSE_BEFORE_ADMISSION = 1,	/* an acquire has read its time */
	RL_PAUSE_BEFORE_SLEEP = 2	/* a waiter is about to sleep */
} RlPausePoint;

/* The first key of the advisory locks that hold a pause point */
#define RL_PAUSE_LOCK_KEY		7411

/* Bit (1 << point) for each point named in ratelimit.debug_pause */
extern uint32 pgrl_debug_pause_points;

extern void pgrl_debug_pause_wait(RlPausePoint point);
extern void pgrl_debug_define_settings(void);
#ifdef USE_INJECTION_POINTS
extern void pgrl_debug_injection_point(RlPausePoint point);
#endif

/*
 * Stop at a pause point while a test holds its lock.  Costs one test of a
 * backend-local flag when ratelimit.debug_pause is empty.  Never call it
 * with an LWLock held: it may wait on a heavyweight lock.
 *
 * Built against a server with injection points (PostgreSQL 17+ configured
 * with --enable-injection-points, as scripts/build-postgres.sh does; no
 * distribution's packages are), each pause point is also the injection
 * point "pg-ratelimit-" followed by its name with dashes
 * (pg-ratelimit-before-sleep), for tests that drive it with the
 * injection_points module.  Only on a server started with
 * ratelimit.enable_test_clock, like the pause points: elsewhere that costs
 * one more test of a backend-local flag.
 */
static inline void
pgrl_debug_pause(RlPausePoint point)
{
	if (unlikely((pgrl_debug_pause_points & ((uint32) 1 << point)) != 0))
		pgrl_debug_pause_wait(point);
#ifdef USE_INJECTION_POINTS
	if (unlikely(pgrl_enable_test_clock))
		pgrl_debug_injection_point(point);
#endif
}

#endif							/* RL_DEBUG_H */
