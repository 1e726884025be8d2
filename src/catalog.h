/*-------------------------------------------------------------------------
 *
 * catalog.h
 *		The configuration in shared memory besides the models: job types,
 *		per-model waits, config_lock and whether shared memory mirrors the
 *		tables.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_CATALOG_H
#define RL_CATALOG_H

#include "storage/lwlock.h"

#include "pg_ratelimit.h"

/* One job type: estimates and waiting defaults (read under config_lock) */
typedef struct RlJobType
{
	bool		in_use;
	uint32		generation;		/* bumped whenever the slot is (re)assigned */
	char		name[RL_NAME_MAX_LEN + 1];
	int64		est_tokens;
	int32		est_requests;
	int64		est_memory_kb;
	double		ratio;			/* negative when not set */
	bool		flexible;
	int64		max_wait_us;	/* negative when not set */
	double		base_ratio;		/* ratio, or its part of what set ratios leave */
} RlJobType;

/* A job type as read from rl_job_type */
typedef struct RlJobTypeConfig
{
	char		name[RL_NAME_MAX_LEN + 1];
	int64		est_tokens;
	int32		est_requests;
	int64		est_memory_kb;
	double		ratio;
	bool		flexible;
	int64		max_wait_us;
	int			slot;			/* filled while applying */
} RlJobTypeConfig;

/* A row of rl_job_type_wait, its names resolved to slots */
typedef struct RlWaitSetting
{
	int			job_type_slot;
	int			model_slot;
	int64		max_wait_us;
} RlWaitSetting;

/* A job type in use, as seen at one moment (for saving) */
typedef struct RlJobTypeName
{
	int			slot;
	uint32		generation;
	char		name[RL_NAME_MAX_LEN + 1];
} RlJobTypeName;

extern Size pgrl_catalog_shmem_size(void);
extern void pgrl_catalog_shmem_init(int tranche_id);

extern void pgrl_config_lock(LWLockMode mode);
extern void pgrl_config_unlock(void);
extern bool pgrl_config_lock_held(LWLockMode mode);

extern int	pgrl_job_type_slot(const char *name);
extern const RlJobType *pgrl_job_type(int slot);
extern int64 pgrl_job_type_wait_us(int job_type_slot, int model_slot);
extern int	pgrl_job_type_names(RlJobTypeName *names);

extern bool pgrl_config_loaded(void);
extern void pgrl_config_set_loaded(bool loaded);
extern uint64 pgrl_config_generation(void);
extern void pgrl_config_request_resync(void);
extern bool pgrl_config_resync_pending(void);
extern uint64 pgrl_config_resync_requested(void);
extern void pgrl_config_applied(uint64 resync_seen);

extern bool pgrl_catalog_apply_job_types(RlJobTypeConfig *configs, int count);
extern void pgrl_catalog_apply_waits(const RlWaitSetting *waits, int count);
extern void pgrl_catalog_clear(void);

#endif							/* RL_CATALOG_H */
