/*-------------------------------------------------------------------------
 *
 * persist.h
 *		Saving the limiter's state to tables and reading it back.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_PERSIST_H
#define RL_PERSIST_H

#include "utils/palloc.h"

#include "extsql.h"
#include "pg_ratelimit.h"

typedef struct RlStateSnapshot RlStateSnapshot;

extern RlStateSnapshot *pgrl_read_state(MemoryContext context, const RlExtSql *session);
extern void pgrl_restore_saved_state(RlStateSnapshot *state);
extern void pgrl_report_restore(const RlStateSnapshot *state);
extern int64 pgrl_persist_state(bool save_state, bool save_marks, bool final);
extern void pgrl_publish_marks(void);

#endif							/* RL_PERSIST_H */
