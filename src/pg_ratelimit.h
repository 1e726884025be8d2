/*-------------------------------------------------------------------------
 *
 * pg_ratelimit.h
 *		Shared declarations of pg_ratelimit: the shared-memory layout, the
 *		settings and the entry points each source file offers the others.
 *
 * The shared state and its locking are described at the top of shmem.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_RATELIMIT_H
#define PG_RATELIMIT_H

#include "common/int.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/hsearch.h"
#include "utils/numeric.h"

/* Longest model, job type or instance name, in bytes, without the NUL */
#define RL_NAME_MAX_LEN			127

/* Lease table partitions, each with its own lock (a power of two) */
#define RL_LEASE_PARTITIONS		16

/* Room for a price or a running cost as a Numeric varlena */
#define RL_NUMERIC_BUF			64

/*
 * The five limits of a model.  The order is the order of "blocks longest":
 * when several limits refuse a request, the first in this order is reported
 * as limited_by, and capacity ties are resolved toward it.
 */
typedef enum RlDimension
{
	RL_DIM_RPD = 0,
	RL_DIM_TPD,
	RL_DIM_RPM,
	RL_DIM_TPM,
	RL_DIM_CONCURRENCY,
	RL_NUM_DIMS
} RlDimension;

/* limited_by of a request refused by its job type's share, not a limit */
#define RL_LIMITED_BY_JOB_TYPE	RL_NUM_DIMS

/* limited_by of a request refused by its instance's memory */
#define RL_LIMITED_BY_MEMORY	(RL_NUM_DIMS + 1)

/* Why capacity freed up, for the rl_capacity notification */
typedef enum RlNotifyReason
{
	RL_NOTIFY_NONE = 0,
	RL_NOTIFY_WINDOW_RESET,
	RL_NOTIFY_RELEASE,
	RL_NOTIFY_CONFIG
} RlNotifyReason;

/*
 * The window start of "no window yet".  No clock reaches it, unlike 0
 * (2000-01-01 00:00 UTC, a window like any other).
 */
#define RL_NO_WINDOW			DT_NOBEGIN

/* "Not limited" in a limit slot */
#define RL_UNLIMITED			(-1)

/* A Numeric kept inline in shared memory */
typedef union RlNumeric
{
	int32		align;			/* forces varlena alignment */
	char		data[RL_NUMERIC_BUF];
} RlNumeric;

/* Settled usage of one UTC day, for rl_usage */
typedef struct RlDayUsage
{
	TimestampTz day_start;		/* RL_NO_WINDOW when unused */
	int64		requests;		/* admitted */
	int64		input;			/* reported by releases */
	int64		output;
	int64		cached;
	int64		overage_events;
	int64		overage_tokens;
	RlNumeric	cost;			/* empty (size 0) means zero */
} RlDayUsage;

/*
 * A durable bound on a model's usage (mark.c): what the model may have
 * granted by now, saved before anything past it is granted.
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
} RlMarkSet;

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
	 * Leases granted in the last two lease_save_epochs the model granted in:
	 * while a save of the leases is under way, two epochs may be unsaved
	 */
	uint32		unsaved_epoch;	/* lease_save_epoch they were granted in */
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
	LWLock		lock;			/* protects every field below */
	bool		in_use;
	uint32		generation;		/* bumped whenever the slot is (re)assigned */
	char		name[RL_NAME_MAX_LEN + 1];

	int64		limit[RL_NUM_DIMS]; /* RL_UNLIMITED when not configured */
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

	/* Totals since the model was defined (or the server started) */
	int64		granted;
	int64		denied;
	int64		expired;
	int64		overage_events;
	int64		overage_tokens;

	pg_atomic_uint32 num_waiters;	/* backends waiting in rl_acquire; atomic,
									 * so joining and leaving the queue take no
									 * model lock */

	/* For NOTIFY rl_capacity, sent by the worker (notify.c) */
	bool		denied_in_minute;	/* a minute limit denied in this minute */
	bool		denied_in_day;	/* a day limit denied in this day */
	bool		denied_since_notify;	/* any denial since the last notice */
	RlNotifyReason notify_reason;	/* what to send, or RL_NOTIFY_NONE */
	TimestampTz notify_at;

	RlDayUsage	usage;			/* the current day window */
	RlDayUsage	usage_ended;	/* the day before, until persisted */
	uint64		version;		/* bumped by every change, for persistence */

	RlMarks		marks;			/* high-water marks (mark.c) */

	/* Flexible ratios: releases since the last adjustment (share.c) */
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
	int64		jobs_minute;	/* jobs admitted in the minute window */
	int64		jobs_day;		/* jobs admitted in the day window */
	int64		granted;
	int64		denied;
	bool		denied_recently;	/* in this minute, since the last ratio
									 * adjustment */
	uint64		version;		/* bumped by every change, for persistence */
	RlDayUsage	usage;			/* the job type's part of the model's day */
	RlDayUsage	usage_ended;	/* the day before, until persisted */
	pg_atomic_uint32 num_waiters;
} RlShare;

/* One job type: estimates and waiting defaults */
typedef struct RlJobType
{
	bool		in_use;
	uint32		generation;
	char		name[RL_NAME_MAX_LEN + 1];
	int64		est_tokens;
	int32		est_requests;
	int64		est_memory_kb;
	double		ratio;			/* negative when not set */
	bool		flexible;
	int64		max_wait_us;	/* negative when not set */
	double		base_ratio;		/* ratio, or its part of what set ratios leave */
} RlJobType;

/* One open lease, keyed by lease_id in the partitioned lease table */
typedef struct RlLease
{
	int64		lease_id;		/* hash key: must be first */
	int			model_slot;
	uint32		model_generation;
	int			job_type_slot;	/* -1 when acquired without a job type */
	uint32		job_type_generation;
	int64		tokens;
	int32		requests;
	TimestampTz minute_start;	/* windows the reservation was made in */
	TimestampTz day_start;
	TimestampTz acquired_at;
	TimestampTz expires_at;
	int			pid;
	Oid			role;
	int			role_slot;		/* counted against its role (holders.c), or
								 * -1 */
	bool		session_bound;	/* released when backend pid exits */
	char		instance[RL_NAME_MAX_LEN + 1];	/* empty when none */
	int			instance_slot;	/* registered instance, or -1 */
	uint32		instance_generation;
	bool		memory_counted; /* counted against the instance's memory */
	bool		restored;		/* restored after a stop that was not clean:
								 * its slot stays held until the model's
								 * held_until (mark.c) */
} RlLease;

/* Name -> slot entry of the model and job type indexes */
typedef struct RlNameEntry
{
	char		name[RL_NAME_MAX_LEN + 1];	/* hash key: must be first */
	int			slot;
} RlNameEntry;

/* The fixed part of the shared state */
typedef struct RlSharedState
{
	int			tranche_id;
	LWLock		config_lock;	/* model/job type indexes, slot assignment,
								 * job types, waits, config_loaded */
	LWLock		sweep_lock;		/* one lease-expiry sweep at a time */
	LWLock		lease_locks[RL_LEASE_PARTITIONS];

	char		pad_locks[PG_CACHE_LINE_SIZE];	/* lock words change on every call */

	/* Read on every call, written rarely (under config_lock) */
	bool		config_loaded;	/* shared memory mirrors the config tables */
	uint64		config_generation;	/* bumped by every applied change */
	pg_atomic_uint64 resync_requested;	/* asked to read the tables again ... */
	uint64		resync_applied; /* ... and answered up to here */
	pg_atomic_uint64 clock_offset_us;	/* test clock: added to real time */
	pg_atomic_uint64 earliest_expiry;	/* encoded, see lease.c */

	Latch	   *worker_latch;	/* the background worker's, or NULL */
	char		pad_counters[PG_CACHE_LINE_SIZE];

	/* Written on every acquire and release */
	pg_atomic_uint64 next_lease_id;
	pg_atomic_uint32 open_leases;
	pg_atomic_uint64 lease_version; /* bumped by every lease change */
	pg_atomic_uint64 ratio_version; /* bumped when ratios in force move */
	pg_atomic_uint32 marks_requested;	/* some model wants new marks now */
	pg_atomic_uint32 lease_save_epoch;	/* bumped before the worker copies
										 * the leases for saving (mark.c) */
} RlSharedState;

/* settings.c */
extern char *pgrl_database_name;
extern int	pgrl_max_models;
extern int	pgrl_max_job_types;
extern int	pgrl_max_leases;
extern int	pgrl_lease_ttl_s;
extern int	pgrl_max_lease_ttl_s;
extern int	pgrl_max_leases_per_role;
extern int	pgrl_persist_interval_ms;
extern int	pgrl_max_instances;
extern int	pgrl_max_instances_per_role;
extern int	pgrl_instance_timeout_s;
extern int	pgrl_ratio_interval_ms;
extern int	pgrl_min_job_type_slots;
extern bool pgrl_enable_test_clock;
extern void pgrl_define_settings(void);

/* shmem.c */
extern RlSharedState *pgrl_state;
extern RlModel *pgrl_models;
extern RlJobType *pgrl_job_types;
extern int64 *pgrl_waits;			/* [job type slot * max_models + model slot] */
extern RlShare *pgrl_shares;		/* [model slot * max_job_types + job type slot] */
extern HTAB *pgrl_model_index;
extern HTAB *pgrl_job_type_index;
extern HTAB *pgrl_lease_table;
extern void pgrl_install_shmem_hooks(void);
extern void pgrl_require_library(void);
extern void pgrl_require_ready(void);
extern int	pgrl_lookup_slot(HTAB *index, const char *name);
extern void pgrl_copy_name(char *dest, const char *src, const char *what);
extern void pgrl_copy_name_arg(FunctionCallInfo fcinfo, int argno, char *dest, const char *what);
extern void pgrl_require_primary(const char *action);

/* clock.c */
extern TimestampTz pgrl_now(void);
extern TimestampTz pgrl_window_start(TimestampTz t, int64 length_us);
extern TimestampTz pgrl_window_at(TimestampTz reached, TimestampTz t, int64 length_us);
extern int64 pgrl_interval_to_us(Interval *interval, const char *what);

/* config.c */
extern void pgrl_ensure_config_loaded(void);
extern void pgrl_request_config_resync(void);
extern void pgrl_resync_config(void);
extern void pgrl_config_relcache_callback(Datum arg, Oid relid);
extern void pgrl_check_config_triggers(void);
extern void pgrl_install_config_callbacks(void);

/* admission.c */
extern const char *const pgrl_dimension_names[RL_NUM_DIMS + 2];
extern bool pgrl_dimension_is_daily(RlDimension dim);
extern int64 pgrl_dimension_amount(RlDimension dim, int64 tokens, int32 requests);
extern void pgrl_roll_windows(RlModel *model, TimestampTz now);
extern bool pgrl_note_capacity_freed(RlModel *model, RlNotifyReason reason, TimestampTz at);
extern TimestampTz pgrl_dimension_resets_at(const RlModel *model, RlDimension dim);

/* share.c */
extern RlShare *pgrl_share(int model_slot, int job_type_slot);
extern RlShare *pgrl_lease_share(const RlLease *lease);
extern void pgrl_roll_share_windows(int model_slot, bool minute, TimestampTz new_day);
extern void pgrl_apply_share_config(void);
extern bool pgrl_adjust_ratios(int model_slot, TimestampTz now);
extern bool pgrl_note_share_release(RlModel *model);
extern TimestampTz pgrl_ratio_adjust_allowed_at(const RlModel *model);

/* lease.c */
extern TimestampTz pgrl_earliest_expiry(void);
extern void pgrl_expire_due_leases(TimestampTz now);
extern void pgrl_note_lease_expiry(TimestampTz expires_at);
extern void pgrl_remove_model_leases(const bool *dropped);
extern int	pgrl_expire_instance_leases(const char *instance);

/* Keep a Numeric inline; false when it has too many digits to fit */
static inline bool
pgrl_numeric_store(RlNumeric *dest, Numeric value)
{
	if (VARSIZE(value) > RL_NUMERIC_BUF)
		return false;
	memcpy(dest->data, value, VARSIZE(value));
	return true;
}

/* A palloc'd copy of an inline Numeric; an empty buffer is zero */
static inline Numeric
pgrl_numeric_load(const RlNumeric *src)
{
	if (VARSIZE_ANY(src->data) == 0)
		return int64_to_numeric(0);
	return DatumGetNumericCopy(NumericGetDatum((Numeric) src->data));
}

/* Did anything happen on this day? */
static inline bool
pgrl_day_used(const RlDayUsage *day)
{
	return day->day_start != RL_NO_WINDOW &&
		(day->requests > 0 || day->input > 0 || day->output > 0 || day->cached > 0 ||
		 day->overage_events > 0);
}

/* Convenience: an int64 counter that saturates instead of wrapping */
static inline int64
pgrl_add_saturating(int64 a, int64 b)
{
	int64		result;

	if (pg_add_s64_overflow(a, b, &result))
		return b > 0 ? PG_INT64_MAX : PG_INT64_MIN;
	return result;
}

#endif							/* PG_RATELIMIT_H */
