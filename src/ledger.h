/*-------------------------------------------------------------------------
 *
 * ledger.h
 *		The ledger: the accounting of every model and of each job type's
 *		share of it.  The only code that changes a counter.
 *
 * Models and shares are private to ledger*.c; everyone else goes through
 * the functions below and gets copies.  See ledger.c for the rules every
 * change keeps, and src/README.md for who calls what.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_LEDGER_H
#define RL_LEDGER_H

#include "catalog.h"
#include "instance.h"
#include "lease.h"
#include "limits.h"
#include "observe.h"
#include "pg_ratelimit.h"

/* Why capacity freed up, for the rl_capacity notification */
typedef enum RlNotifyReason
{
	RL_NOTIFY_NONE = 0,
	RL_NOTIFY_WINDOW_RESET,
	RL_NOTIFY_RELEASE,
	RL_NOTIFY_CONFIG,
	RL_NOTIFY_REFILL,			/* a bucket model holds what it refused */
	RL_NOTIFY_COOLDOWN_END		/* the provider's pause (a 429) is over */
} RlNotifyReason;

/*
 * What the provider last said of a model (rl_observe), per limit it
 * reports on; -1 or 0 where it said nothing.  Kept in shared memory only.
 */
typedef struct RlProviderState
{
	int64		limit[RL_NUM_PROVIDER_DIMS];
	int64		remaining[RL_NUM_PROVIDER_DIMS];
	TimestampTz reset_at[RL_NUM_PROVIDER_DIMS];
	TimestampTz observed_at;	/* 0: never */
	TimestampTz cooldown_until; /* refuse everything until then (a 429);
								 * DT_NOBEGIN: none */
	int64		observations;
	int64		headers_ignored;	/* malformed, since the model was defined */
	int64		advance[RL_NUM_DIMS];	/* raised to the provider's usage and
										 * not yet met by overages
										 * (ledger_provider.c) */
} RlProviderState;

/* What an observation did to a model */
typedef struct RlProviderEffect
{
	bool		raised[RL_NUM_DIMS];	/* usage rose to the provider's */
	TimestampTz cooldown_until; /* DT_NOBEGIN: not in a cooldown */
} RlProviderEffect;

/* A model as configured in rl_model */
typedef struct RlModelConfig
{
	char		name[RL_NAME_MAX_LEN + 1];
	int64		limit[RL_NUM_DIMS]; /* RL_UNLIMITED when not configured */
	RlWindowType window_type;
	bool		count_cached;
	RlNumeric	price_input;
	RlNumeric	price_output;
	RlNumeric	price_cached;
	bool		priced;			/* any price above zero */
} RlModelConfig;

/* The size of a request, once defaults are applied */
typedef struct RlRequest
{
	int64		tokens;			/* input and output */
	int64		output_tokens;	/* of them, the output's (max_tokens) */
	bool		has_output;		/* output_tokens was given */
	int32		requests;
	int			job_type_slot;	/* -1 without a job type */
	uint32		job_type_generation;
} RlRequest;

/* How much of a dimension a request consumes */
static inline int64
pgrl_request_amount(RlDimension dim, const RlRequest *request)
{
	return pgrl_dimension_amount(dim, request->tokens, request->output_tokens, request->requests);
}

/* The outcome of one admission attempt on one model */
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
	uint32		model_generation;	/* of the model tried */
	bool		memory_counted; /* the rest only when granted: counted against
								 * the instance's memory */
	TimestampTz minute_start;
	TimestampTz day_start;
} RlAdmission;

/* Actual usage reported by a release */
typedef struct RlUsage
{
	bool		has_tokens;		/* any of input, output, cached given */
	int64		input;
	int64		output;
	int64		cached;
	int64		tokens_with_cached;
	int64		tokens_without_cached;
	bool		has_requests;
	int32		requests;
} RlUsage;

/* What a release did */
typedef struct RlSettlement
{
	bool		released;
	bool		model_known;
	char		model[RL_NAME_MAX_LEN + 1];
	int64		tokens_estimated;
	bool		has_actual;		/* the rest only with actual usage */
	int64		tokens_actual;
	int64		tokens_refunded;
	int64		overage;
	Numeric		cost;
} RlSettlement;

/* How a call that waited for capacity ended, on a model it waited on */
typedef enum RlWaitOutcome
{
	RL_WAIT_GRANTED = 0,		/* the model granted it */
	RL_WAIT_TIMED_OUT,			/* max_wait passed: it returned refused */
	RL_WAIT_CANCELLED,			/* an error ended it: cancel,
								 * statement_timeout, the session's end */
	RL_NUM_WAIT_OUTCOMES
} RlWaitOutcome;

/*
 * A model's counters for monitoring (rl_stats).  They only grow, from the
 * model's definition (since) on, and are saved with its other counters.
 */
typedef struct RlModelStats
{
	TimestampTz since;			/* real time; DT_NOBEGIN: not known */
	int64		denied_by[RL_NUM_LIMITED_BY];	/* refused calls, by
												 * limited_by */
	int64		waits[RL_NUM_WAIT_OUTCOMES];	/* calls that waited */
	int64		wait_us[RL_NUM_WAIT_OUTCOMES];	/* and how long (real time) */
	int64		requests;		/* admitted, as rl_usage counts them */
	int64		input;			/* reported by releases */
	int64		output;
	int64		cached;
	RlNumeric	cost;			/* empty (size 0) means zero */
} RlModelStats;

/* A model's row of rl_stats */
typedef struct RlModelStatsRow
{
	char		name[RL_NAME_MAX_LEN + 1];
	int64		granted;
	int64		denied;
	int64		expired;
	int64		overage_events;
	int64		overage_tokens;
	RlModelStats stats;
} RlModelStatsRow;

/* What rl_capacity shows of a model for a request */
typedef struct RlCapacity
{
	int64		limit[RL_NUM_DIMS];
	int64		used[RL_NUM_DIMS];
	TimestampTz resets_at[RL_NUM_DIMS]; /* 0: only releases free it */
	int64		slots[RL_NUM_DIMS]; /* -1: not limited for this request */
	int			total_dim;		/* the dimension with fewest slots, or -1 */
} RlCapacity;

/* A model's row of rl_status */
typedef struct RlModelStatus
{
	char		name[RL_NAME_MAX_LEN + 1];
	int64		limit[RL_NUM_DIMS];
	int64		used[RL_NUM_DIMS];	/* in the windows of now */
	TimestampTz minute_resets_at;
	TimestampTz day_resets_at;
	int64		granted;
	int64		denied;
	int64		expired;
	int64		overage_events;
	int64		overage_tokens;
	RlNumeric	cost_today;
	RlWindowType window_type;
	RlProviderState provider;
} RlModelStatus;

/* A job type's row of rl_job_status on one model */
typedef struct RlShareStatus
{
	int			job_type_slot;
	double		ratio;
	double		base_ratio;
	bool		flexible;
	int64		slots;			/* -1: no limit applies to its estimate */
	int			limited_by;
	int64		share[RL_NUM_DIMS]; /* of each limit; RL_UNLIMITED when none */
	int64		used[RL_NUM_DIMS];	/* in the windows of now */
	int64		granted;
	int64		denied;
} RlShareStatus;

/* What the worker saves of a model (rl_counter) */
typedef struct RlModelSnapshot
{
	char		name[RL_NAME_MAX_LEN + 1];
	uint32		generation;
	uint64		version;
	TimestampTz minute_start;
	TimestampTz day_start;
	TimestampTz refilled_at;	/* used[] of bucket limits is as of then */
	int64		used[RL_NUM_DIMS];
	int64		granted;
	int64		denied;
	int64		expired;
	int64		overage_events;
	int64		overage_tokens;
	RlDayUsage	usage;			/* the current day */
	RlDayUsage	usage_ended;	/* the day before, until saved */
	RlModelStats stats;
} RlModelSnapshot;

/* ... and of a job type's share of it (rl_share_counter) */
typedef struct RlShareSnapshot
{
	int			job_type;		/* index into the caller's job type names */
	uint64		version;
	double		base_ratio;
	double		ratio;
	TimestampTz refilled_at;	/* the model's */
	int64		used[RL_NUM_DIMS];
	int64		jobs_minute;
	int64		jobs_day;
	int64		granted;
	int64		denied;
	RlDayUsage	usage;
	RlDayUsage	usage_ended;
} RlShareSnapshot;

/* A saved rl_counter row, for a restore */
typedef struct RlSavedCounter
{
	char		model[RL_NAME_MAX_LEN + 1];
	TimestampTz minute_start;
	int64		requests_minute;
	int64		tokens_minute;
	TimestampTz day_start;
	int64		requests_day;
	int64		tokens_day;
	TimestampTz refilled_at;	/* a bucket model's: its usage is as of then
								 * (RL_NO_WINDOW: saved by a fixed model) */
	int64		input_tokens_minute;	/* itpm and otpm (1.2 on) */
	int64		output_tokens_minute;
	int64		granted;
	int64		denied;
	int64		expired;
	int64		overage_events;
	int64		overage_tokens;
	RlDayUsage	usage;			/* of the day the row was saved in */
	bool		has_stats;		/* the row has them (extension 1.1 on) */
	RlModelStats stats;
} RlSavedCounter;

/* A saved rl_share_counter row */
typedef struct RlSavedShare
{
	char		model[RL_NAME_MAX_LEN + 1];
	char		job_type[RL_NAME_MAX_LEN + 1];
	double		base_ratio;
	double		ratio;
	TimestampTz minute_start;
	int64		requests_minute;
	int64		tokens_minute;
	int64		jobs_minute;
	TimestampTz day_start;
	int64		requests_day;
	int64		tokens_day;
	int64		jobs_day;
	TimestampTz refilled_at;	/* as in RlSavedCounter */
	int64		input_tokens_minute;
	int64		output_tokens_minute;
	int64		granted;
	int64		denied;
	RlDayUsage	usage;
} RlSavedShare;

/*
 * A durable bound on a model's usage (ledger_marks.c): what the model may
 * have granted by now, saved (rl_mark) before anything past it is granted.
 */
typedef struct RlMarkSet
{
	TimestampTz minute_start;	/* the windows mark[] is for */
	TimestampTz day_start;
	int64		mark[RL_NUM_DIMS];	/* usage of those windows (in flight for
									 * concurrency) may have reached this */
	int64		next[RL_NUM_DIMS];	/* the same for the windows that follow */
	TimestampTz horizon;		/* no lease granted under it expires later */
	bool		clean;			/* exact: saved when nothing more was granted */
	bool		bucket;			/* of a bucket model: mark[] bounds usage
								 * whatever the window (not saved: the model's
								 * configuration says) */
} RlMarkSet;

/* A pending rl_capacity notice of a model (notify.c) */
typedef struct RlNotice
{
	RlNotifyReason reason;		/* RL_NOTIFY_NONE: none to send now */
	TimestampTz at;
	bool		held;			/* one is pending but held back */
	TimestampTz refill_at;		/* limiter's clock: a refill notice is due
								 * then (DT_NOEND: none) */
	char		model[RL_NAME_MAX_LEN + 1];
} RlNotice;

/* How long an acquire waits for the worker to make a new mark durable */
#define RL_MARK_WAIT_US			(5 * USECS_PER_SEC)

extern Size pgrl_ledger_shmem_size(void);
extern void pgrl_ledger_shmem_init(int tranche_id);

extern void pgrl_ledger_prepare(void);

/* models by name (caller holds config_lock) */
extern int	pgrl_model_slot(const char *name);
extern bool pgrl_model_name(int slot, uint32 generation, char *name);

/* configuration (config.c; caller holds config_lock exclusively) */
extern bool pgrl_ledger_apply_models(const RlModelConfig *configs, int count, bool *dropped);
extern void pgrl_ledger_apply_shares(void);
extern void pgrl_ledger_clear(void);

/* acquire and release */
extern void pgrl_ledger_admit(int slot, const RlRequest *request, const RlMemoryCap *memory,
							  int64 ticket, TimestampTz now, TimestampTz expires_at,
							  RlAdmission *result);
extern bool pgrl_ledger_needs_output(int slot, const RlRequest *request);
extern TimestampTz pgrl_provider_pause_limit(TimestampTz now);
extern void pgrl_ledger_count_refusal(int slot, const RlRequest *request, int limited_by);
extern void pgrl_ledger_count_wait(int slot, uint32 generation, RlWaitOutcome outcome,
								   int64 waited_us);
extern void pgrl_ledger_settle(const RlLease *lease, const RlUsage *usage, TimestampTz now,
							   RlSettlement *result);
extern void pgrl_ledger_expire(const RlLease *lease, TimestampTz now);
extern bool pgrl_ledger_observe(int slot, const RlObservation *observation, TimestampTz now,
								RlProviderEffect *effect);

/* what the views and rl_capacity show */
extern bool pgrl_ledger_capacity(int slot, const RlRequest *request, TimestampTz now,
								 RlCapacity *capacity);
extern bool pgrl_ledger_model_status(int slot, TimestampTz now, RlModelStatus *status);
extern bool pgrl_ledger_model_stats(int slot, RlModelStatsRow *row);
extern int	pgrl_ledger_share_status(int slot, TimestampTz now, char *model,
									 RlShareStatus *rows);
extern bool pgrl_ledger_model_limits(int slot, char *name, int64 *limits,
									 const int *job_type_slots, int num_job_types,
									 double *ratios);

/* the worker */
extern void pgrl_ledger_roll(int slot, TimestampTz now, bool hold_release, RlNotice *notice);
extern TimestampTz pgrl_ledger_adjust_ratios(TimestampTz now, TimestampTz real_now, bool all);
extern uint64 pgrl_ledger_ratio_version(void);
extern bool pgrl_ledger_snapshot(int slot, uint32 saved_generation, uint64 saved_version,
								 const RlJobTypeName *job_types, int num_job_types,
								 const uint64 *saved_share_versions,
								 RlModelSnapshot *model, RlShareSnapshot *shares,
								 int *num_shares);

/* high-water marks (ledger_marks.c) */
extern bool pgrl_marks_requested(void);
extern TimestampTz pgrl_marks_next_release(void);
extern uint32 pgrl_ledger_start_lease_save(void);
extern bool pgrl_ledger_propose_marks(int slot, TimestampTz now, bool exact, bool lower,
									  uint32 saved_epoch, RlMarkSet *proposal,
									  uint32 *generation, char *name);
extern void pgrl_ledger_publish_marks(int slot, uint32 generation, const RlMarkSet *saved);
extern int64 pgrl_mark_bound(const RlMarkSet *set, RlDimension dim,
							 TimestampTz minute_start, TimestampTz day_start);

/* restoring saved state (persist.c; config_lock held exclusively) */
extern Size pgrl_ledger_restore_scratch_size(void);
extern void pgrl_ledger_restore_begin(TimestampTz now, TimestampTz minute_start,
									  TimestampTz day_start, int64 *scratch);
extern void pgrl_ledger_restore_counter(const RlSavedCounter *saved);
extern void pgrl_ledger_restore_marks(const char *model, const RlMarkSet *saved);
extern void pgrl_ledger_restore_share(const RlSavedShare *saved);
extern bool pgrl_ledger_restore_lease(const char *model, RlLease *lease);
extern void pgrl_ledger_restore_lease_counted(const RlLease *lease);
extern void pgrl_ledger_restore_lease_left_out(const RlLease *lease);
extern void pgrl_ledger_restore_end(TimestampTz now, int64 *held_slots,
									TimestampTz *held_until);

#endif							/* RL_LEDGER_H */
