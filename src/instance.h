/*-------------------------------------------------------------------------
 *
 * instance.h
 *		Application instances: heartbeats, memory slots, allocations.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_INSTANCE_H
#define RL_INSTANCE_H

#include "port/atomics.h"

#include "lease.h"
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

extern Size pgrl_instances_shmem_size(void);
extern void pgrl_instances_shmem_init(int tranche_id);
extern int	pgrl_instance_heartbeat(const char *name, int64 memory_kb, TimestampTz now);
extern bool pgrl_drop_instance(const char *name);
extern void pgrl_instances_changed(void);
extern int	pgrl_drop_stale_instances(TimestampTz now, const char **names, TimestampTz *next);
extern void pgrl_check_instance_privilege(const char *name);
extern bool pgrl_instance_rank(const char *name, TimestampTz now, int *live, int *rank,
							   int64 *memory_kb);
extern bool pgrl_instance_info_live(const RlInstanceInfo *info, TimestampTz now);
extern int	pgrl_live_instances(TimestampTz now);
extern uint64 pgrl_instances_membership_version(void);
extern uint64 pgrl_instances_heartbeat_version(void);
extern int	pgrl_copy_instances(RlInstanceInfo **instances);
extern void pgrl_forget_all_instances(void);

/* memory caps (acquire, admission) */
extern void pgrl_memory_cap(const char *instance, int job_type_slot, RlMemoryCap *cap);
extern bool pgrl_memory_take(const RlMemoryCap *cap);
extern void pgrl_instance_lease_gone(const RlLease *lease);

/* restore (persist.c) */
extern bool pgrl_restore_instance(const RlInstanceInfo *info);
extern void pgrl_restore_instance_lease(RlLease *lease);

#endif							/* RL_INSTANCE_H */
