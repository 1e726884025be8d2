/*-------------------------------------------------------------------------
 *
 * acquire.h
 *		An acquire: admit on the first model that can, or wait.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_ACQUIRE_H
#define RL_ACQUIRE_H

#include "ledger.h"

/* What rl_acquire and rl_acquire_any were asked, checked */
typedef struct RlAcquireArgs
{
	char	  **names;			/* the models, in order, each once */
	int			num_models;
	const char *job_type;		/* checked name, or NULL */
	bool		has_tokens;
	int64		tokens;			/* the whole estimate, input and output */
	bool		has_output_tokens;
	int64		output_tokens;
	bool		has_requests;
	int32		requests;
	int64		max_wait_us;	/* -1: the job type's wait */
	char		instance[RL_NAME_MAX_LEN + 1];	/* empty when none */
	int64		ttl_us;
	bool		session_bound;	/* released when this backend exits */
	int			role_slot;		/* set by pgrl_acquire (holders.c) */
} RlAcquireArgs;

/* What an acquire returns */
typedef struct RlAcquireResult
{
	bool		granted;
	int64		lease_id;
	int			model_index;	/* the model granted, or the refusal reported */
	TimestampTz retry_at;		/* 0 when unknown */
	int			limited_by;
	TimestampTz now;			/* the limiter's time at the end */
} RlAcquireResult;

extern void pgrl_acquire(RlAcquireArgs *args, RlAcquireResult *result);
extern void pgrl_report_needs_output(const char *model);
extern void pgrl_report_output_exceeds(const RlRequest *request);
extern bool pgrl_resolve_request(const char *job_type_name, const int64 *tokens,
								 const int64 *output,
								 const int32 *requests, RlRequest *request);
extern void pgrl_report_no_job_type(const char *name);
extern void pgrl_report_no_model(const char *name);

#endif							/* RL_ACQUIRE_H */
