/*-------------------------------------------------------------------------
 *
 * instance.h
 *		Application instances: heartbeats, memory slots, allocations.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_INSTANCE_H
#define RL_INSTANCE_H

#include "pg_ratelimit.h"

/* A saved or listed instance */
typedef struct RlInstanceInfo
{
	char		name[RL_NAME_MAX_LEN + 1];
	int64		memory_kb;		/* -1 when not reported */
	TimestampTz registered_at;
	TimestampTz last_heartbeat;
	Oid			role;			/* that registered it, or InvalidOid */
} RlInstanceInfo;

/*
 * The memory cap an acquire naming an instance is held to, for its job
 * type: at most cap of the instance's jobs of that type in flight.
 */
typedef struct RlMemoryCap
{
	int			instance_slot;	/* -1 when the instance is not registered */
	uint32		instance_generation;
	pg_atomic_uint32 *in_flight;	/* NULL when no cap applies */
	int64		cap;
} RlMemoryCap;

extern Size rl_instances_shmem_size(void);
extern void rl_instances_shmem_init(bool found);
extern void rl_memory_cap(const char *instance, int job_type_slot, RlMemoryCap *cap);
extern bool rl_memory_take(const RlMemoryCap *cap);
extern void rl_instance_lease_gone(const RlLease *lease);
extern void rl_check_instance_privilege(const char *name);
extern int	rl_live_instances(TimestampTz now);
extern TimestampTz rl_drop_stale_instances(TimestampTz now);
extern uint64 rl_instances_membership_version(void);
extern uint64 rl_instances_heartbeat_version(void);
extern int	rl_copy_instances(RlInstanceInfo **instances);
extern void rl_forget_all_instances(void);
extern bool rl_restore_instance(const RlInstanceInfo *info);
extern void rl_restore_instance_lease(RlLease *lease);

#endif							/* RL_INSTANCE_H */
