/*-------------------------------------------------------------------------
 *
 * observe.h
 *		What a provider's response said about its rate limits (rl_observe).
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_OBSERVE_H
#define RL_OBSERVE_H

#include "datatype/timestamp.h"

/* The limits a provider reports on */
typedef enum RlProviderDim
{
	RL_PROVIDER_REQUESTS = 0,
	RL_PROVIDER_TOKENS,
	RL_PROVIDER_INPUT_TOKENS,
	RL_PROVIDER_OUTPUT_TOKENS,
	RL_NUM_PROVIDER_DIMS
} RlProviderDim;

extern const char *const pgrl_provider_dim_names[RL_NUM_PROVIDER_DIMS];

/*
 * One response's rate-limit headers, parsed.  Times are on the limiter's
 * clock (the test clock's offset applied to the provider's real times).
 */
typedef struct RlObservation
{
	bool		has_limit[RL_NUM_PROVIDER_DIMS];
	int64		limit[RL_NUM_PROVIDER_DIMS];
	bool		has_remaining[RL_NUM_PROVIDER_DIMS];
	int64		remaining[RL_NUM_PROVIDER_DIMS];
	bool		has_reset[RL_NUM_PROVIDER_DIMS];
	TimestampTz reset_at[RL_NUM_PROVIDER_DIMS]; /* when it is full again */
	bool		has_retry_after;
	TimestampTz retry_at;
	int			status;			/* the HTTP status, 0 when not given */
	int			understood;		/* headers taken */
	int			ignored;		/* headers of a known name with a value that
								 * does not parse */
} RlObservation;

#endif							/* RL_OBSERVE_H */
