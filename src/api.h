/*-------------------------------------------------------------------------
 *
 * api.h
 *		What the SQL-callable functions share.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_API_H
#define RL_API_H

extern void pgrl_api_begin(void);

#endif							/* RL_API_H */
