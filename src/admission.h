/*-------------------------------------------------------------------------
 *
 * admission.h
 *		The outcome of one admission attempt.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_ADMISSION_H
#define RL_ADMISSION_H

#include "instance.h"
#include "pg_ratelimit.h"

typedef struct RlAdmission
{
	bool		granted;
	int			limited_by;		/* RlDimension that refused,
								 * RL_LIMITED_BY_JOB_TYPE or _MEMORY, or -1 */
	TimestampTz retry_at;		/* when that limit's window resets, or 0 */
	bool		awaiting_mark;	/* fits the limits; waits for new marks */
	bool		leases_full;	/* the lease table has no room */
	int			never_fits;		/* RlDimension the request exceeds, or -1 */
	int64		never_fits_limit;
	uint32		model_generation;	/* the rest only when granted */
	bool		memory_counted; /* counted against the instance's memory */
	TimestampTz minute_start;
	TimestampTz day_start;
} RlAdmission;

extern int64 pgrl_used_now(const RlModel *model, RlDimension dim, TimestampTz now);
extern void pgrl_try_admit(int slot, int64 tokens, int32 requests, int job_type_slot,
						 const RlMemoryCap *memory, int64 ticket, TimestampTz now,
						 TimestampTz expires_at, RlAdmission *result);
extern void pgrl_count_refusal(char **names, const bool *refused, int num_models,
							 int job_type_slot, uint32 job_type_generation);

#endif							/* RL_ADMISSION_H */
