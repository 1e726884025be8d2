/*-------------------------------------------------------------------------
 *
 * notify.c
 *		NOTIFY rl_capacity: telling listening clients that capacity freed.
 *
 * Backends only mark a model (under its lock) when capacity frees on it
 * after it denied something: its window reset, a release or expiry, a
 * configuration change, or (a bucket model) its buckets refilled enough for
 * what was refused.  At most one notice per model is pending, and
 * release notices of one model are at least RL_NOTIFY_MIN_GAP_MS apart, so
 * a busy model makes at most a few notifications a second however often it
 * denies and releases.  The worker sends them from its own transaction in
 * ratelimit.database, so acquire and release never take NOTIFY's global
 * lock and a rolled back caller cannot lose one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "lib/stringinfo.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "instance.h"
#include "ledger.h"
#include "notify.h"
#include "settings.h"

#define RL_NOTIFY_CHANNEL	"rl_capacity"
#define RL_ALLOCATION_CHANNEL	"rl_allocation"

/* Shortest gap between two release or config notices of one model */
#define RL_NOTIFY_MIN_GAP_MS	50

/* Shortest gap before an rl_allocation notice for moved ratios alone */
#define RL_RATIO_NOTICE_GAP_MS	1000

static const char *const reason_names[] = {
	[RL_NOTIFY_NONE] = "none",
	[RL_NOTIFY_WINDOW_RESET] = "window_reset",
	[RL_NOTIFY_RELEASE] = "release",
	[RL_NOTIFY_CONFIG] = "config",
	[RL_NOTIFY_REFILL] = "refill",
	[RL_NOTIFY_COOLDOWN_END] = "cooldown_end",
};

/* The JSON payload: {"model": ..., "reason": ..., "at": ...} */
static char *
pgrl_notify_payload(const char *model, RlNotifyReason reason, TimestampTz at)
{
	StringInfoData payload;
	char		at_text[MAXDATELEN + 1];
	int			utc = 0;

	initStringInfo(&payload);
	appendStringInfoString(&payload, "{\"model\": ");
	escape_json(&payload, model);
	appendStringInfo(&payload, ", \"reason\": \"%s\", \"at\": \"%s\"}",
					 reason_names[reason],
					 JsonEncodeDateTime(at_text, TimestampTzGetDatum(at),
										TIMESTAMPTZOID, &utc));
	return payload.data;
}

/*
 * Roll every model's windows to now (the ledger does, pgrl_ledger_roll) and
 * queue the pending notifications in the current transaction; they go out
 * when it commits.  A model gets at most one release or config notice per
 * RL_NOTIFY_MIN_GAP_MS (a busy model that denies and releases all the time
 * would otherwise notify on every round); window resets go out at once.
 * Returns when a held-back notice is due (real time), or DT_NOEND, sets
 * *next_refill to when a bucket model will hold what it refused (limiter's
 * clock, DT_NOEND: none), and adds the notices queued to *queued.  Worker
 * only.
 */
TimestampTz
pgrl_roll_and_queue_notifications(TimestampTz now, TimestampTz *next_refill, int *queued)
{
	static TimestampTz *last_sent = NULL;	/* real time, per model slot */
	TimestampTz real_now = GetCurrentTimestamp();
	TimestampTz next_due = DT_NOEND;

	*next_refill = DT_NOEND;
	if (last_sent == NULL)
		last_sent = MemoryContextAllocZero(TopMemoryContext,
										   sizeof(TimestampTz) * pgrl_max_models);

	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		TimestampTz due = last_sent[slot] + RL_NOTIFY_MIN_GAP_MS * 1000;
		RlNotice	notice;

		pgrl_ledger_roll(slot, now, real_now < due, &notice);
		*next_refill = Min(*next_refill, notice.refill_at);
		if (notice.held)
			next_due = Min(next_due, due);	/* held back */
		if (notice.reason != RL_NOTIFY_NONE)
		{
			Async_Notify(RL_NOTIFY_CHANNEL, pgrl_notify_payload(notice.model, notice.reason,
																notice.at));
			last_sent[slot] = real_now;
			(*queued)++;
		}
	}
	return next_due;
}

/*
 * NOTIFY rl_allocation when what rl_allocation returns may have changed:
 * an instance joined or left (reason "instances"), the configuration
 * changed ("config": limits, job types) or ratios in force moved
 * ("ratios").  Payload {"instances": n, "reason": ..., "at": ...}.  Sent
 * only while some instance is registered or when the last one left.
 * Flexible ratios can move every 100 ms under load, so a notice for moved
 * ratios alone waits until RL_RATIO_NOTICE_GAP_MS after the last notice.
 * Returns when such a held-back notice is due (real time), or DT_NOEND,
 * and adds the notice queued to *queued.  Worker only.
 */
TimestampTz
pgrl_queue_allocation_notice(TimestampTz now, int *queued)
{
	static TimestampTz last_sent = 0;	/* real time */
	static bool initialized = false;
	static uint64 sent_membership = 0;
	static uint64 sent_config = 0;
	static uint64 sent_ratios = 0;
	uint64		membership = pgrl_instances_membership_version();
	uint64		config;
	uint64		ratios = pgrl_ledger_ratio_version();
	const char *reason = NULL;
	int			live;

	pgrl_config_lock(LW_SHARED);
	config = pgrl_config_generation();
	pgrl_config_unlock();

	if (!initialized)
	{
		/* a restarted worker: the clients heard about the state it finds */
		initialized = true;
		sent_membership = membership;
		sent_config = config;
		sent_ratios = ratios;
		return DT_NOEND;
	}
	if (membership != sent_membership)
		reason = "instances";
	else if (config != sent_config)
		reason = "config";
	else if (ratios != sent_ratios)
	{
		TimestampTz due = last_sent + RL_RATIO_NOTICE_GAP_MS * 1000;

		if (GetCurrentTimestamp() < due)
			return due;
		reason = "ratios";
	}
	if (reason == NULL)
		return DT_NOEND;

	live = pgrl_live_instances(now);
	if (live > 0 || membership != sent_membership)
	{
		StringInfoData payload;
		char		at_text[MAXDATELEN + 1];
		int			utc = 0;

		initStringInfo(&payload);
		appendStringInfo(&payload, "{\"instances\": %d, \"reason\": \"%s\", \"at\": \"%s\"}",
						 live, reason,
						 JsonEncodeDateTime(at_text, TimestampTzGetDatum(now),
											TIMESTAMPTZOID, &utc));
		Async_Notify(RL_ALLOCATION_CHANNEL, payload.data);
		last_sent = GetCurrentTimestamp();
		(*queued)++;
	}
	sent_membership = membership;
	sent_config = config;
	sent_ratios = ratios;
	return DT_NOEND;
}
