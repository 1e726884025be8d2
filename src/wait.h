/*-------------------------------------------------------------------------
 *
 * wait.h
 *		Waiting for capacity inside the server.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_WAIT_H
#define RL_WAIT_H

#include "storage/latch.h"

#include "instance.h"
#include "pg_ratelimit.h"

/* Most models one waiting rl_acquire_any can wait on */
#define RL_MAX_WAIT_MODELS		16

/* The ticket of a request that is not waiting: newer than every waiter */
#define RL_NEWCOMER_TICKET		PG_INT64_MAX

/* What an older waiter will take, for admission to set aside */
typedef struct RlClaim
{
	int64		ticket;
	int64		tokens;
	int64		output_tokens;
	int32		requests;
	int			job_type_slot;
} RlClaim;

extern Size pgrl_waiters_shmem_size(void);
extern void pgrl_waiters_shmem_init(void);
extern int64 pgrl_register_waiter(const int *slots, int num_slots, int64 tokens,
								  int64 output_tokens, int32 requests, int job_type_slot,
								  const RlMemoryCap *memory, int64 ticket);
extern void pgrl_waiter_granted(void);
extern uint32 pgrl_waiter_wakeups(void);
extern bool pgrl_waiter_woken_since(uint32 wakeups);
extern void pgrl_waiter_awaiting_mark(bool awaiting);
extern bool pgrl_share_has_waiters(int model_slot, int job_type_slot);
extern void pgrl_unregister_waiter(void);
extern RlClaim *pgrl_claim_buffer(void);
extern int	pgrl_older_claims(int slot, int64 ticket, RlClaim *claims);
extern uint32 pgrl_model_waiters(int model_slot);
extern uint32 pgrl_share_waiters(int model_slot, int job_type_slot);
extern void pgrl_set_worker_latch(Latch *latch);
extern void pgrl_wake_worker(void);
extern uint32 pgrl_worker_wakeups(void);
extern void pgrl_wake_waiters(int slot);
extern void pgrl_wake_all_waiters(void);
extern void pgrl_wake_memory_waiters(void);
extern uint64 pgrl_waiters_woken(void);

#endif							/* RL_WAIT_H */
