/*-------------------------------------------------------------------------
 *
 * mark.h
 *		High-water marks: a durable bound on what a model may have granted,
 *		so that a crash or a failover never leads to over-admission.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_MARK_H
#define RL_MARK_H

#include "pg_ratelimit.h"

/* How long an acquire waits for the worker to make a new mark durable */
#define RL_MARK_WAIT_US			(5 * USECS_PER_SEC)

/* What a refused acquire reports as retry_after when a mark never came */
#define RL_MARK_RETRY_US		USECS_PER_SEC

extern void pgrl_reset_marks(RlModel *model);
extern int64 pgrl_mark_room(const RlModel *model, RlDimension dim);
extern bool pgrl_mark_covers_expiry(const RlModel *model, TimestampTz expires_at);
extern bool pgrl_mark_refused(RlModel *model, int64 tokens, int32 requests,
							TimestampTz expires_at);
extern bool pgrl_mark_note_usage(RlModel *model);
extern void pgrl_mark_note_lease(RlModel *model, TimestampTz expires_at);
extern void pgrl_mark_free_slot(RlModel *model, const RlLease *lease, TimestampTz now);
extern void pgrl_mark_release_held(RlModel *model, TimestampTz now);

/* worker side */
extern bool pgrl_marks_requested(void);
extern TimestampTz pgrl_marks_next_release(void);
extern uint32 pgrl_mark_start_lease_save(void);
extern bool pgrl_mark_propose(RlModel *model, TimestampTz now, bool exact, bool lower,
							uint32 saved_epoch, RlMarkSet *proposal);
extern void pgrl_mark_publish(RlModel *model, uint32 generation, const RlMarkSet *saved);

/* restore */
extern int64 pgrl_mark_bound(const RlMarkSet *set, RlDimension dim,
						   TimestampTz minute_start, TimestampTz day_start);

#endif							/* RL_MARK_H */
