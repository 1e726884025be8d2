/*-------------------------------------------------------------------------
 *
 * grant.h
 *		How a lease leaves the lease table: released, expired, its
 *		instance or model gone, its session ended.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_GRANT_H
#define RL_GRANT_H

#include "ledger.h"

extern void pgrl_release_lease(int64 lease_id, const RlUsage *usage, TimestampTz now,
							   RlSettlement *result);
extern void pgrl_expire_due_leases(TimestampTz now);
extern int	pgrl_expire_instance_leases(const char *instance, TimestampTz now);
extern void pgrl_discard_leases(const bool *models, RlLeaseRemoval *removal);
extern void pgrl_release_session_leases_at_exit(void);

#endif							/* RL_GRANT_H */
