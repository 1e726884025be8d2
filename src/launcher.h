/*-------------------------------------------------------------------------
 *
 * launcher.h
 *		The launcher, which starts the worker in ratelimit.database.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_LAUNCHER_H
#define RL_LAUNCHER_H

extern void pgrl_register_launcher(void);

#endif							/* RL_LAUNCHER_H */
