/*-------------------------------------------------------------------------
 *
 * holders.h
 *		Who holds leases: open leases per role, session-bound leases.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_HOLDERS_H
#define RL_HOLDERS_H

#include "pg_ratelimit.h"

/* rl_role_lease_add() refusals */
#define RL_ROLE_AT_CAP			(-2)
#define RL_ROLE_NO_ROOM			(-3)

extern Size rl_holders_shmem_size(void);
extern void rl_holders_shmem_init(int tranche_id);
extern int	rl_role_lease_add(Oid role, int cap);
extern void rl_role_lease_gone(const RlLease *lease);
extern int	rl_holders_start_acquire(bool session_bound);
extern void rl_holders_granted(int64 lease_id, bool session_bound);
extern void rl_holders_end_acquire(void);
extern void rl_session_lease_forget(int64 lease_id);

#endif							/* RL_HOLDERS_H */
