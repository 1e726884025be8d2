/*-------------------------------------------------------------------------
 *
 * ledger_provider.c
 *		What the provider said, applied to a model (rl_observe).
 *
 * The limiter's view of a limit can drift from the provider's: actual
 * usage differs from the estimates until releases settle it, other users
 * of the same key are invisible, and the provider counts its own way.  Each
 * response's headers (parsed in observe.c) bring the two back together,
 * only ever toward caution:
 *
 * - where the provider reports less remaining of a limit than the limiter
 *   holds, the model's usage rises to match (limit - remaining); it never
 *   falls because of a header, since a response can be older than grants
 *   the limiter made meanwhile.  Requests map to rpm, tokens to tpm, input
 *   and output tokens to itpm and otpm.
 * - the provider settles a call's actual usage when it answers; the limiter
 *   when the lease is released, usually after rl_observe.  What a raise
 *   added is kept as an advance on the overages releases will report
 *   (provider.advance): an overage the advance covers is not counted again.
 *   The advance ends with the window (fixed models) and when no lease is
 *   in flight on the model: then no overage is still to come.  A raise for
 *   another reason (another user of the key) may so excuse a later overage
 *   once; the next response raises the usage again.
 * - a 429, or a retry-after, puts the model in a cooldown shared by every
 *   session, of at most ratelimit.max_provider_pause (lowering it shortens
 *   pauses in progress; a change of the model's configuration ends one): every acquire is refused (limited_by 'provider', retry_after
 *   the end of it) until then, and then listeners and waiters are told
 *   (notice cooldown_end).  A 429 without retry-after pauses a second.
 * - the last limits, remaining and resets reported are kept for rl_status,
 *   so that a key whose limits differ from the configured ones shows, and
 *   so are the malformed headers counted.
 *
 * Locking: the provider state is part of the model, under the model's lock
 * (ledger.c).  It lives in shared memory only: a restart forgets it, and
 * the next response says it again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog.h"
#include "ledger_internal.h"
#include "settings.h"
#include "wait.h"

/* How long a 429 without retry-after pauses the model */
#define RL_DEFAULT_COOLDOWN_US	USECS_PER_SEC

/* The limit of the model each provider limit maps to, or -1 */
static const int provider_dimension[RL_NUM_PROVIDER_DIMS] = {
	[RL_PROVIDER_REQUESTS] = RL_DIM_RPM,
	[RL_PROVIDER_TOKENS] = RL_DIM_TPM,
	[RL_PROVIDER_INPUT_TOKENS] = RL_DIM_ITPM,
	[RL_PROVIDER_OUTPUT_TOKENS] = RL_DIM_OTPM,
};

/* The latest end of a pause that starts now (ratelimit.max_provider_pause) */
TimestampTz
pgrl_provider_pause_limit(TimestampTz now)
{
	return pgrl_add_saturating(now, (int64) pgrl_max_provider_pause_s * USECS_PER_SEC);
}

/*
 * How much of an overage (delta > 0) of dimension d the provider already
 * reported through rl_observe: taken from the model's advance.  Caller
 * holds the model's lock exclusively.
 */
int64
pgrl_absorb_overage(RlModel *model, int d, int64 delta)
{
	int64		absorbed;

	if (delta <= 0 || model->provider.advance[d] <= 0)
		return 0;
	absorbed = Min(delta, model->provider.advance[d]);
	model->provider.advance[d] -= absorbed;
	return absorbed;
}

/* The body of pgrl_ledger_observe, with the model locked and in use */
static bool
pgrl_observe_locked(RlModel *model, const RlObservation *obs, TimestampTz now,
					RlProviderEffect *effect)
{
	RlProviderState *provider = &model->provider;
	bool		wake_worker = false;

	AssertModelLocked(model, LW_EXCLUSIVE);
	pgrl_roll_windows(model, now);
	for (int p = 0; p < RL_NUM_PROVIDER_DIMS; p++)
	{
		int			d = provider_dimension[p];

		if (obs->has_limit[p])
			provider->limit[p] = obs->limit[p];
		if (obs->has_reset[p])
			provider->reset_at[p] = obs->reset_at[p];
		if (!obs->has_remaining[p])
			continue;
		provider->remaining[p] = obs->remaining[p];
		if (d >= 0 && model->limit[d] != RL_UNLIMITED &&
			model->limit[d] - obs->remaining[p] > model->used[d])
		{
			int64		provider_used = model->limit[d] - obs->remaining[p];

			/* with no lease in flight, no overage is still to come */
			if (model->used[RL_DIM_CONCURRENCY] > 0)
				provider->advance[d] = pgrl_add_saturating(provider->advance[d],
														   provider_used - model->used[d]);
			model->used[d] = provider_used;
			effect->raised[d] = true;
			model->version++;
			wake_worker = true;
		}
	}
	if (obs->status == 429 || obs->has_retry_after)
	{
		TimestampTz until = obs->has_retry_after ? obs->retry_at :
			pgrl_add_saturating(now, RL_DEFAULT_COOLDOWN_US);

		/* never longer than ratelimit.max_provider_pause */
		until = Min(until, pgrl_provider_pause_limit(now));
		provider->cooldown_until = Max(provider->cooldown_until, until);
	}
	if (obs->understood > 0 || obs->status != 0)
		provider->observed_at = now;
	provider->observations++;
	provider->headers_ignored += obs->ignored;
	effect->cooldown_until = provider->cooldown_until > now ? provider->cooldown_until :
		DT_NOBEGIN;
	/* usage past the mark: have a new mark cover it soon */
	return wake_worker && pgrl_mark_note_usage(model);
}

/*
 * Apply what a provider's response said to a model.  False when the model
 * is not in use.  Caller holds config_lock.
 */
bool
pgrl_ledger_observe(int slot, const RlObservation *obs, TimestampTz now,
					RlProviderEffect *effect)
{
	RlModel    *model = &pgrl_models[slot];
	bool		in_use;
	bool		wake_worker = false;

	Assert(pgrl_config_lock_held(LW_SHARED));
	memset(effect, 0, sizeof(*effect));
	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	in_use = model->in_use;
	if (in_use)
		wake_worker = pgrl_observe_locked(model, obs, now, effect);
	LWLockRelease(&model->lock);
	if (wake_worker)
		pgrl_wake_worker();
	return in_use;
}
