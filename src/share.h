/*-------------------------------------------------------------------------
 *
 * share.h
 *		A job type's share of a model: the room it leaves a request.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_SHARE_H
#define RL_SHARE_H

#include "pg_ratelimit.h"

/*
 * What a job type's share of a model still admits, per dimension: room is
 * the share less the job type's usage; guaranteed counts the jobs it may
 * still start whatever its share (ratelimit.min_job_type_slots).  A
 * dimension the model does not limit has unlimited room.
 */
typedef struct RlShareRoom
{
	int64		room[RL_NUM_DIMS];
	int64		guaranteed[RL_NUM_DIMS];
} RlShareRoom;

extern int64 pgrl_share_of(int64 limit, double ratio);
extern void pgrl_share_room(const RlModel *model, const RlShare *share, RlShareRoom *room);
extern int	pgrl_share_blocking(const RlShareRoom *room, int64 tokens, int32 requests);
extern void pgrl_share_take(RlShareRoom *room, int64 tokens, int32 requests);
extern void pgrl_share_grant(RlShare *share, const RlModel *model, int64 tokens,
						   int32 requests);
extern RlDayUsage *pgrl_share_usage(RlShare *share, const RlModel *model);
extern void pgrl_share_denied(RlShare *share);
extern void pgrl_share_count_denial(RlShare *share);
extern int64 pgrl_job_type_fit(const int64 *limits, const RlJobType *job_type, double ratio,
							 int *limited_by);

#endif							/* RL_SHARE_H */
