/*-------------------------------------------------------------------------
 *
 * holders.h
 *		Who holds leases: open leases per role, session-bound leases.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_HOLDERS_H
#define RL_HOLDERS_H

#include "lease.h"
#include "pg_ratelimit.h"

/* pgrl_role_lease_add() refusals */
#define RL_ROLE_AT_CAP			(-2)
#define RL_ROLE_NO_ROOM			(-3)

extern Size pgrl_holders_shmem_size(void);
extern void pgrl_holders_shmem_init(int tranche_id);
extern int	pgrl_role_lease_add(Oid role, int cap);
extern void pgrl_role_lease_gone(const RlLease *lease);
extern int	pgrl_holders_start_acquire(bool session_bound);
extern void pgrl_holders_granted(int64 lease_id, bool session_bound);
extern void pgrl_holders_end_acquire(void);
extern void pgrl_session_lease_forget(int64 lease_id);
extern int	pgrl_session_leases(const int64 **ids);

#endif							/* RL_HOLDERS_H */
