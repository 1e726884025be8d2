/*-------------------------------------------------------------------------
 *
 * utility.h
 *		Making the worker leave before statements that need its database
 *		alone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_UTILITY_H
#define RL_UTILITY_H

extern void pgrl_install_utility_hook(void);

#endif							/* RL_UTILITY_H */
