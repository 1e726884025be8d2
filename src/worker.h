/*-------------------------------------------------------------------------
 *
 * worker.h
 *		The background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_WORKER_H
#define RL_WORKER_H

extern void pgrl_register_worker(void);
extern void pgrl_wake_worker(void);

#endif							/* RL_WORKER_H */
