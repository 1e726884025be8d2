/*-------------------------------------------------------------------------
 *
 * waitevent.h
 *		The wait events pg_ratelimit's processes show in pg_stat_activity.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_WAITEVENT_H
#define RL_WAITEVENT_H

typedef enum RlWaitEvent
{
	RL_WAIT_EVENT_ACQUIRE,		/* a caller blocked in rl_acquire */
	RL_WAIT_EVENT_WORKER_MAIN,	/* the worker between its rounds */
	RL_WAIT_EVENT_LAUNCHER_MAIN /* the launcher between its checks */
} RlWaitEvent;

extern uint32 pgrl_wait_event(RlWaitEvent event);

#endif							/* RL_WAITEVENT_H */
