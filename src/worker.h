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

#endif							/* RL_WORKER_H */
