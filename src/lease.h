/*-------------------------------------------------------------------------
 *
 * lease.h
 *		Leases: the lease table and settling a lease.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_LEASE_H
#define RL_LEASE_H

#include "pg_ratelimit.h"

/* Actual usage reported by a release */
typedef struct RlUsage
{
	bool		has_tokens;		/* any of input, output, cached given */
	int64		input;
	int64		output;
	int64		cached;
	int64		tokens_with_cached;
	int64		tokens_without_cached;
	bool		has_requests;
	int32		requests;
} RlUsage;

/* What a release did */
typedef struct RlSettlement
{
	bool		released;
	bool		model_known;
	char		model[RL_NAME_MAX_LEN + 1];
	int64		tokens_estimated;
	bool		has_actual;		/* the rest only with actual usage */
	int64		tokens_actual;
	int64		tokens_refunded;
	int64		overage;
	Numeric		cost;
} RlSettlement;

extern bool rl_put_lease(const RlLease *lease);
extern bool rl_take_lease(int64 lease_id, RlLease *lease);
extern bool rl_take_session_lease(int64 lease_id, int session_pid, RlLease *lease);
extern bool rl_lease_is_open(int64 lease_id);
extern void rl_settle_lease(const RlLease *lease, const RlUsage *usage,
							TimestampTz now, RlSettlement *result);
extern int	rl_copy_open_leases(RlLease **leases);

#endif							/* RL_LEASE_H */
