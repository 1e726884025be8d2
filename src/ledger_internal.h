/*-------------------------------------------------------------------------
 *
 * ledger_internal.h
 *		The ledger's private structures, shared by ledger.c,
 *		ledger_shares.c and ledger_marks.c and by nothing else.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_LEDGER_INTERNAL_H
#define RL_LEDGER_INTERNAL_H

#include "port/atomics.h"
#include "storage/lwlock.h"

#include "ledger.h"

/* A model's high-water marks and what the worker needs to move them */
typedef struct RlMarks
{
	RlMarkSet	saved;			/* durable */
	RlMarkSet	proposed;		/* being made durable, while proposing */
	bool		proposing;
	bool		closed;			/* exact marks saved for a stop: grant nothing */
	bool		requested;		/* the worker should propose new marks now */
	int64		demand[RL_NUM_DIMS];	/* asked for by refused requests */
	int64		largest_demand[RL_NUM_DIMS];
	TimestampTz demand_expiry;	/* the latest lease expiry they asked for */
	int64		headroom[RL_NUM_DIMS];	/* of the last proposal, for the low
										 * water check */
	TimestampTz proposed_minute_start;	/* windows of the last proposal */
	TimestampTz proposed_day_start;
	int64		used_at_proposal[RL_NUM_DIMS];
	int64		granted_at_proposal;
	TimestampTz proposed_at;	/* real time */

	/*
	 * Leases granted in the last two lease save epochs the model granted in:
	 * while a save of the leases is under way, two epochs may be unsaved
	 */
	uint32		unsaved_epoch;	/* lease save epoch they were granted in */
	TimestampTz unsaved_expiry; /* the latest of their expiries */
	uint32		prior_epoch;	/* the epoch before it */
	TimestampTz prior_expiry;

	/* after a restore that was not clean: slots held for unknown leases */
	int64		held;			/* concurrency slots held, counted in used */
	TimestampTz held_until;		/* the restored horizon */
	bool		held_released;	/* released: the worker wakes the waiters */
} RlMarks;

/* One model: limits, prices, window counters and totals */
typedef struct RlModel
{
	LWLock		lock;			/* protects every field below, and the model's
								 * shares */
	bool		in_use;
	uint32		generation;		/* bumped whenever the slot is (re)assigned */
	char		name[RL_NAME_MAX_LEN + 1];

	int64		limit[RL_NUM_DIMS]; /* RL_UNLIMITED when not configured */
	RlWindowType window_type;
	bool		count_cached;
	RlNumeric	price_input;
	RlNumeric	price_output;
	RlNumeric	price_cached;
	bool		priced;			/* any price above zero */

	/*
	 * Usage in the current windows (RL_NO_WINDOW before the first);
	 * used[RL_DIM_CONCURRENCY] is in-flight.  The windows only move forward.
	 */
	TimestampTz minute_start;
	TimestampTz day_start;
	int64		used[RL_NUM_DIMS];

	/*
	 * Bucket limits (pgrl_is_bucket): used[] is what the bucket lacks to be
	 * full, refilled (decreased) up to refilled_at, with the fraction of a
	 * unit refilled since carried over.  refilled_at only moves forward, for
	 * fixed models too, so that one made a bucket starts from now.
	 */
	TimestampTz refilled_at;
	int64		refill_carry[RL_NUM_DIMS];
	TimestampTz notice_due_at;	/* a notice is due then (0: none): a bucket
								 * holds what it refused, or the provider's
								 * cooldown ends */
	RlNotifyReason notice_due_reason;

	RlProviderState provider;	/* what the provider said (rl_observe) */

	/* Totals since the model was defined (or the server started) */
	int64		granted;
	int64		denied;
	int64		expired;
	int64		overage_events;
	int64		overage_tokens;
	RlModelStats stats;			/* for rl_stats: never reset */

	/* For NOTIFY rl_capacity, sent by the worker (notify.c) */
	bool		denied_in_minute;	/* a minute limit denied in this minute */
	bool		denied_in_day;	/* a day limit denied in this day */
	bool		denied_since_notify;	/* any denial since the last notice */
	RlNotifyReason notify_reason;	/* what to send, or RL_NOTIFY_NONE */
	TimestampTz notify_at;

	RlDayUsage	usage;			/* the current day window */
	RlDayUsage	usage_ended;	/* the day before, until persisted */
	uint64		version;		/* bumped by every change, for persistence */

	RlMarks		marks;			/* high-water marks (ledger_marks.c) */

	/* Flexible ratios: releases since the last adjustment (ledger_shares.c) */
	int32		releases_since_ratio_change;
	bool		ratio_adjust_due;
	TimestampTz ratios_adjusted_at; /* real time */
} RlModel;

/*
 * One job type's share of one model: its ratio there and its own usage of
 * the model's current windows.  Protected by the model's lock; the windows
 * are the model's (rolled with it).
 */
typedef struct RlShare
{
	uint32		model_generation;	/* the model and job type these */
	uint32		job_type_generation;	/* counters belong to */
	double		base_ratio;		/* from the configuration */
	double		ratio;			/* in force: moves when flexible */
	bool		flexible;
	int64		used[RL_NUM_DIMS];	/* [RL_DIM_CONCURRENCY] is in flight */
	int64		refill_carry[RL_NUM_DIMS];	/* bucket limits: refilled with
											 * the model's */
	int64		jobs_minute;	/* jobs admitted in the minute window */
	int64		jobs_day;		/* jobs admitted in the day window */
	int64		granted;
	int64		denied;
	bool		denied_recently;	/* in this minute, since the last ratio
									 * adjustment */
	uint64		version;		/* bumped by every change, for persistence */
	RlDayUsage	usage;			/* the job type's part of the model's day */
	RlDayUsage	usage_ended;	/* the day before, until persisted */
} RlShare;

/*
 * What a job type's share of a model still admits, per dimension: room is
 * the share less the job type's usage; guaranteed counts the jobs it may
 * still start whatever its share (ratelimit.min_job_type_slots).  A
 * dimension the model does not limit has unlimited room (PG_INT64_MAX).
 */
typedef struct RlShareRoom
{
	int64		room[RL_NUM_DIMS];
	int64		guaranteed[RL_NUM_DIMS];
} RlShareRoom;

/* The ledger's shared state besides models and shares */
typedef struct RlLedger
{
	pg_atomic_uint64 ratio_version; /* bumped when ratios in force move */
	pg_atomic_uint32 marks_requested;	/* some model wants new marks now */
	pg_atomic_uint32 lease_save_epoch;	/* bumped before the worker copies the
										 * leases for saving */
} RlLedger;

extern RlLedger *pgrl_ledger;
extern RlModel *pgrl_models;

/*
 * Does this limit of the model refill continuously (a bucket limit)?  Only
 * configured rate limits of a bucket model do; concurrency and what is not
 * limited count as in a fixed model.
 */
static inline bool
pgrl_is_bucket(const RlModel *model, int dim)
{
	return model->window_type == RL_WINDOW_BUCKET && dim != RL_DIM_CONCURRENCY &&
		model->limit[dim] != RL_UNLIMITED;
}

/* For assertions: the model's lock is held (exclusively when asked) */
#define AssertModelLocked(model, mode) \
	Assert((mode) == LW_EXCLUSIVE ? \
		   LWLockHeldByMeInMode((LWLock *) &(model)->lock, LW_EXCLUSIVE) : \
		   LWLockHeldByMe((LWLock *) &(model)->lock))

/*
 * A share's usage is of its model's current day: every roll, creation and
 * restore of the share keeps it so
 */
#define AssertShareDay(share, model) \
	Assert((share)->usage.day_start == (model)->day_start)

/* ledger.c */
extern bool pgrl_note_capacity_freed(RlModel *model, RlNotifyReason reason, TimestampTz at);
extern void pgrl_roll_windows(RlModel *model, TimestampTz now);
extern void pgrl_refill_bucket(int64 *used, int64 *carry, int64 limit, RlDimension dim,
							   int64 elapsed_us);
extern int64 pgrl_bucket_used_at(int64 used, int64 limit, RlDimension dim, int64 carry,
								 TimestampTz refilled_at, TimestampTz now);

/* ledger_shares.c */
extern Size pgrl_shares_shmem_size(void);
extern void pgrl_shares_shmem_init(void);
extern RlShare *pgrl_share(int model_slot, int job_type_slot);
extern RlShare *pgrl_lease_share(const RlLease *lease);
extern RlShare *pgrl_request_share(int model_slot, const RlRequest *request);
extern void pgrl_share_room(const RlModel *model, const RlShare *share, RlShareRoom *room);
extern int	pgrl_share_blocking(const RlShareRoom *room, int64 tokens, int64 output,
								int32 requests);
extern void pgrl_share_grant(RlShare *share, const RlModel *model, int64 tokens,
							 int64 output, int32 requests);
extern void pgrl_roll_share_windows(RlModel *model, bool minute, TimestampTz new_day);
extern void pgrl_refill_shares(RlModel *model, int64 elapsed_us);
extern int64 pgrl_share_limit(const RlModel *model, const RlShare *share, RlDimension dim);
extern bool pgrl_note_share_release(RlModel *model);
extern void pgrl_claim_for_older_waiters(RlModel *model, int64 ticket, const RlRequest *request,
										 int64 *room, RlShareRoom *share_room);
extern void pgrl_shares_prepare(void);

/* ledger_provider.c */
extern int64 pgrl_absorb_overage(RlModel *model, int d, int64 delta);

/* ledger_marks.c */
extern void pgrl_reset_marks(RlModel *model);
extern int64 pgrl_mark_room(const RlModel *model, RlDimension dim);
extern bool pgrl_mark_covers_expiry(const RlModel *model, TimestampTz expires_at);
extern bool pgrl_mark_refused(RlModel *model, int64 tokens, int64 output, int32 requests,
							  TimestampTz expires_at);
extern bool pgrl_mark_note_usage(RlModel *model);
extern void pgrl_mark_note_lease(RlModel *model, TimestampTz expires_at);
extern void pgrl_mark_free_slot(RlModel *model, const RlLease *lease, TimestampTz now);
extern void pgrl_mark_release_held(RlModel *model, TimestampTz now);

/* What a refused acquire reports as retry_after when a mark never came */
#define RL_MARK_RETRY_US		USECS_PER_SEC

#endif							/* RL_LEDGER_INTERNAL_H */
