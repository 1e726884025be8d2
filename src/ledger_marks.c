/*-------------------------------------------------------------------------
 *
 * ledger_marks.c
 *		High-water marks: what a model may have granted, made durable before
 *		it is granted, so that a crash or a failover fails closed.
 *
 * Counters live in shared memory and are saved every persist_interval, so
 * a crash forgets what was granted since the last save; restored as saved,
 * the rest of the window would admit those grants again.  PostgreSQL's
 * sequences meet the same problem by logging values ahead of use.  Here
 * each model has a mark per limit: a bound, saved in rl_mark with a
 * synchronous commit (so also on synchronous standbys), that its usage in
 * the current window (its leases in flight, for concurrency) may have
 * reached.  Admission never takes usage past the durable mark; a request
 * that fits the limits but not the mark waits for the worker to save a
 * higher one.  A restore, after a crash or on promotion, counts each window
 * as used up to its mark, so it never admits what may already have been
 * granted, and holds the concurrency slots of leases granted after the last
 * lease save until their latest possible expiry (the mark's horizon).
 *
 * The worker keeps each mark ahead of usage by a headroom: what the model
 * grants in two seconds at its recent rate, at most 1/16 of the limit (and
 * at least what refused requests asked for), and asks for the next mark
 * when half of it is used, so that busy models do not wait and a crash
 * costs at most that headroom of each window ("pessimism").  A quiet
 * model's marks come down to its usage, and a clean shutdown saves them
 * exact: a clean restart loses nothing and over-counts nothing.  Marks
 * for the next minute and day are saved ahead (the headroom), so a busy
 * model does not stall at a boundary.
 *
 * A bucket model's usage of a rate limit does not start over with a
 * window: it is what the bucket lacks, which refills.  Its marks bound that
 * usage whatever the window, as concurrency's bound what is in flight: a
 * restore counts the bucket as lacking its mark (no refill is credited for
 * the time before the restore, when grants up to the mark may have been
 * made), and as usage refills, room under the mark comes back without a
 * new one.
 *
 * Lowering a mark is safe because proposing is two-phase: the worker first
 * sets the proposed marks in shared memory, and from then on admission
 * keeps under both the saved and the proposed ones; after the commit, the
 * proposal becomes the saved marks.  Whichever of the two a crash finds in
 * the table, usage never passed it.
 *
 * The lease horizon bounds the expiry of every lease a restore could not
 * know: those granted since the last durable save of the leases.  Before
 * each save (of the leases acquired since the last one, which may take the
 * worker a few rounds, see persist.c) the worker bumps lease_save_epoch
 * under config_lock held exclusively, which every acquire holds shared
 * from its grant until its lease is in the table: a lease of an earlier
 * epoch is in the saved table once that save is done, and a later one
 * notes the epoch on its model (unsaved_epoch/_expiry, and the one before
 * in prior_epoch/_expiry: while a save is under way, both the epoch it
 * saves and the one it started may have leases missing from the table).  A
 * proposal covers those, the requests waiting for the horizon, and the
 * default ttl ahead, so a lease of a hundred years holds the horizon up
 * only until it is saved.  After a restore that was not clean a model
 * holds the slots of the leases it cannot know as a count (held, until
 * held_until, the restored horizon), and a restored lease that ends before
 * then keeps its slot: it may have ended before the crash, its slot taken
 * by one of those.
 *
 * Locking: a model's marks are protected by the model's lock, like its
 * counters.  marks_requested (an atomic flag) tells the worker some model
 * asked for new marks; lease_save_epoch is an atomic written only by the
 * worker, under config_lock held exclusively.  These are part of the
 * ledger (ledger.c): nothing outside it sees a mark but the worker's
 * saving and restoring, through ledger.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "utils/timestamp.h"

#include "catalog.h"
#include "ledger_internal.h"
#include "settings.h"
#include "wait.h"

/* A mark runs at most 1/16 of a limit ahead of usage ... */
#define RL_HEADROOM_DIVISOR		16

/* ... and otherwise covers this long at the model's recent rate */
#define RL_MARK_AHEAD_US		(2 * USECS_PER_SEC)

/* Shortest time a rate is measured over (a burst of proposals) */
#define RL_MIN_ELAPSED_US		1000

/* The lease horizon runs this far past the longest lease ttl in use */
#define RL_HORIZON_SLACK_US		(60 * USECS_PER_SEC)

/* Forget every mark of a model: nothing can be granted until the worker saves some */
void
pgrl_reset_marks(RlModel *model)
{
	memset(&model->marks, 0, sizeof(model->marks));
}

/*
 * The bound a mark set puts on a dimension's usage in the given windows:
 * its mark in the windows it was saved for, its next mark in the windows
 * after, nothing (0) in any other.  Any window start is a window, 0
 * (2000-01-01) included.
 */
int64
pgrl_mark_bound(const RlMarkSet *set, RlDimension dim, TimestampTz minute_start,
				TimestampTz day_start)
{
	bool		daily = pgrl_dimension_is_daily(dim);
	TimestampTz window = daily ? day_start : minute_start;
	TimestampTz saved_window = daily ? set->day_start : set->minute_start;

	if (dim == RL_DIM_CONCURRENCY || set->bucket)
		return set->mark[dim];
	/* an empty set (all zero) bounds every window to 0 */
	if (window == saved_window)
		return set->mark[dim];
	if (window == pgrl_window_reset(saved_window, dim))
		return set->next[dim];
	return 0;
}

/* The bound in force: the saved marks, and the proposed ones while saving */
static int64
pgrl_mark_in_force(const RlModel *model, RlDimension dim)
{
	int64		bound = pgrl_mark_bound(&model->marks.saved, dim, model->minute_start,
										model->day_start);

	if (model->marks.proposing)
		bound = Min(bound, pgrl_mark_bound(&model->marks.proposed, dim, model->minute_start,
										   model->day_start));
	return bound;
}

/*
 * How much more of a limited dimension may be granted before a new mark is
 * needed.  Caller holds the model's lock and has rolled its windows.
 */
int64
pgrl_mark_room(const RlModel *model, RlDimension dim)
{
	int64		room;

	AssertModelLocked(model, LW_SHARED);
	room = pgrl_mark_in_force(model, dim) - model->used[dim];

	/* after a stop's exact marks, not even a refund makes room */
	return model->marks.closed ? Min(room, 0) : room;
}

/*
 * May a lease expiring then be granted?  Only matters with a concurrency
 * limit: a restore holds slots until the horizon.  Caller holds the lock.
 */
bool
pgrl_mark_covers_expiry(const RlModel *model, TimestampTz expires_at)
{
	AssertModelLocked(model, LW_SHARED);
	if (model->limit[RL_DIM_CONCURRENCY] == RL_UNLIMITED)
		return true;
	if (expires_at > model->marks.saved.horizon)
		return false;
	return !model->marks.proposing || expires_at <= model->marks.proposed.horizon;
}

/* Ask the worker for new marks; true when the request is new (wake it) */
static bool
pgrl_mark_request(RlModel *model)
{
	AssertModelLocked(model, LW_EXCLUSIVE);
	if (model->marks.requested)
		return false;
	model->marks.requested = true;
	pg_atomic_write_u32(&pgrl_ledger->marks_requested, 1);
	return true;
}

/*
 * A request fitted the limits but not the marks: remember what it needs,
 * so the next marks hold it.  Returns whether the worker needs waking.
 * Caller holds the model's lock.
 */
bool
pgrl_mark_refused(RlModel *model, int64 tokens, int64 output, int32 requests,
				  TimestampTz expires_at)
{
	RlMarks    *marks = &model->marks;

	AssertModelLocked(model, LW_EXCLUSIVE);
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		amount = pgrl_dimension_amount(d, tokens, output, requests);

		marks->demand[d] = pgrl_add_saturating(marks->demand[d], amount);
		marks->largest_demand[d] = Max(marks->largest_demand[d], amount);
	}
	marks->demand_expiry = Max(marks->demand_expiry, expires_at);
	return pgrl_mark_request(model);
}

/*
 * After a grant, or an overage charged by a release: when usage has eaten
 * half the headroom of a mark (or passed it), ask for the next one early,
 * so that busy models do not wait and an overage is soon covered.
 * Returns whether the worker needs waking.  Caller holds the model's lock.
 */
bool
pgrl_mark_note_usage(RlModel *model)
{
	AssertModelLocked(model, LW_EXCLUSIVE);
	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		if (model->limit[d] == RL_UNLIMITED)
			continue;
		if (pgrl_mark_room(model, d) < model->marks.headroom[d] / 2)
			return pgrl_mark_request(model);
	}
	return false;
}

/*
 * A lease was granted on the model: until the worker has saved the leases,
 * the lease horizon of the next marks must cover its expiry (a crash would
 * not know it).  Caller holds config_lock (shared, since before
 * the grant and until the lease is in the table) and the model's lock.
 */
void
pgrl_mark_note_lease(RlModel *model, TimestampTz expires_at)
{
	RlMarks    *marks = &model->marks;
	uint32		epoch = pg_atomic_read_u32(&pgrl_ledger->lease_save_epoch);

	AssertModelLocked(model, LW_EXCLUSIVE);
	Assert(pgrl_config_lock_held(LW_SHARED));

	if (marks->unsaved_epoch != epoch)
	{
		marks->prior_epoch = marks->unsaved_epoch;
		marks->prior_expiry = marks->unsaved_expiry;
		marks->unsaved_epoch = epoch;
		marks->unsaved_expiry = expires_at;
	}
	else
		marks->unsaved_expiry = Max(marks->unsaved_expiry, expires_at);
}

/*
 * A lease leaves: free its concurrency slot.  While slots are held after a
 * restore, a restored lease keeps its slot until then: it may have been
 * released before the crash, its slot taken by a lease the crash forgot.
 * Caller holds the model's lock.
 */
void
pgrl_mark_free_slot(RlModel *model, const RlLease *lease, TimestampTz now)
{
	AssertModelLocked(model, LW_EXCLUSIVE);
	if (lease->restored && now < model->marks.held_until)
		model->marks.held++;
	else if (model->used[RL_DIM_CONCURRENCY] > 0)
		model->used[RL_DIM_CONCURRENCY]--;
}

/*
 * The slots held after a restore are free once no lease the crash forgot
 * can still run.  Caller holds the model's lock; the worker wakes the
 * waiters (held_released).
 */
void
pgrl_mark_release_held(RlModel *model, TimestampTz now)
{
	RlMarks    *marks = &model->marks;

	AssertModelLocked(model, LW_EXCLUSIVE);
	if (marks->held == 0 || now < marks->held_until)
		return;
	model->used[RL_DIM_CONCURRENCY] = Max(0, model->used[RL_DIM_CONCURRENCY] - marks->held);
	marks->held = 0;
	marks->held_released = true;
	model->version++;
	(void) pgrl_note_capacity_freed(model, RL_NOTIFY_RELEASE, now);
}

/*
 * The worker is about to save the leases: start a new epoch.
 * Taking config_lock exclusively waits out every acquire in progress, so
 * a lease granted in an earlier epoch is in the table before the copy,
 * and one granted later notes the new epoch (pgrl_mark_note_lease).
 * Returns the new epoch: once the save that starts now is done and
 * durable, only leases of that epoch or later can be unknown to a restore.
 * Worker only.
 */
uint32
pgrl_ledger_start_lease_save(void)
{
	uint32		epoch;

	pgrl_config_lock(LW_EXCLUSIVE);
	epoch = pg_atomic_add_fetch_u32(&pgrl_ledger->lease_save_epoch, 1);
	pgrl_config_unlock();
	return epoch;
}

/*
 * When the earliest slots held after a restore come free (limiter's
 * clock), or DT_NOEND.  Unlocked peeks: the worker only sleeps on it.
 */
TimestampTz
pgrl_marks_next_release(void)
{
	TimestampTz next = DT_NOEND;

	for (int slot = 0; slot < pgrl_max_models; slot++)
	{
		RlModel    *model = &pgrl_models[slot];

		if (model->in_use && model->marks.held > 0)
			next = Min(next, model->marks.held_until);
	}
	return next;
}

/* Did some model ask for new marks since the worker last looked?  Clears it. */
bool
pgrl_marks_requested(void)
{
	return pg_atomic_exchange_u32(&pgrl_ledger->marks_requested, 0) != 0;
}

/*
 * How far a mark runs ahead of usage: what the model grants in
 * RL_MARK_AHEAD_US at the rate since the last proposal (grown in
 * elapsed_us), at most 1/16 of the limit; never less than refused requests
 * asked for altogether (within that cap), nor than the largest of them.
 */
static int64
pgrl_headroom(int64 limit, int64 grown, int64 elapsed_us, int64 demand, int64 largest_demand)
{
	int64		cap = limit / RL_HEADROOM_DIVISOR + (limit % RL_HEADROOM_DIVISOR != 0);
	double		ahead = (double) grown * RL_MARK_AHEAD_US / Max(elapsed_us, RL_MIN_ELAPSED_US);
	int64		headroom = ahead >= (double) cap ? cap : (int64) ceil(ahead);

	headroom = Max(headroom, Min(cap, demand));
	return Max(headroom, largest_demand);
}

/*
 * Work out a model's next marks (exact ones, with no headroom, when the
 * worker is about to stop).  When they need saving (asked for, a new
 * window, a higher bound, or, with lower, a bound with more slack than
 * its headroom) they take effect as proposed marks at once and are
 * returned in proposal.  Caller holds the model's lock exclusively and has
 * checked it is in use.
 */
static bool
pgrl_mark_propose(RlModel *model, TimestampTz now, bool exact, bool lower,
				  uint32 saved_epoch, RlMarkSet *proposal)
{
	RlMarks    *marks = &model->marks;
	bool		changed;
	bool		same_minute;
	bool		same_day;
	int64		granted_since;
	TimestampTz real_now = GetCurrentTimestamp();
	int64		elapsed_us;

	AssertModelLocked(model, LW_EXCLUSIVE);
	pgrl_roll_windows(model, now);

	memset(proposal, 0, sizeof(*proposal));
	proposal->minute_start = model->minute_start;
	proposal->day_start = model->day_start;
	proposal->bucket = model->window_type == RL_WINDOW_BUCKET;
	proposal->horizon = marks->saved.horizon;
	/* exact, and no slots held for a crash's unknown leases */
	proposal->clean = exact && now >= marks->held_until;
	changed = marks->requested || proposal->clean != marks->saved.clean;
	same_minute = marks->proposed_minute_start == model->minute_start;
	same_day = marks->proposed_day_start == model->day_start;
	granted_since = model->granted - marks->granted_at_proposal;
	elapsed_us = real_now - marks->proposed_at;

	for (int d = 0; d < RL_NUM_DIMS; d++)
	{
		int64		limit = model->limit[d];
		int64		used = model->used[d];
		int64		grown;
		int64		headroom;
		int64		in_force;

		if (limit == RL_UNLIMITED)
			continue;
		if (d == RL_DIM_CONCURRENCY)
			grown = granted_since;
		else if (proposal->bucket || (pgrl_dimension_is_daily(d) ? same_day : same_minute))
			grown = used - marks->used_at_proposal[d];
		else
			grown = used;
		headroom = exact ? 0 : pgrl_headroom(limit, Max(grown, 0), elapsed_us, marks->demand[d],
											 marks->largest_demand[d]);
		proposal->mark[d] = Max(used, Min(limit, pgrl_add_saturating(used, headroom)));
		in_force = pgrl_mark_in_force(model, d);
		if (proposal->mark[d] > in_force ||
			(lower && in_force - proposal->mark[d] > headroom))
			changed = true;
		if (proposal->bucket)
			proposal->next[d] = proposal->mark[d];	/* unused: no windows */
		else if (d != RL_DIM_CONCURRENCY)
		{
			int64		next_saved = pgrl_mark_bound(&marks->saved, d,
													 pgrl_window_reset(model->minute_start, RL_DIM_RPM),
													 pgrl_window_reset(model->day_start, RL_DIM_RPD));

			proposal->next[d] = Min(limit, headroom);
			if (proposal->next[d] > next_saved || (lower && proposal->next[d] < next_saved))
				changed = true;
		}
	}

	/*
	 * The lease horizon: no lease granted under the marks may expire later,
	 * so that a restore knows how long to hold the slots of leases it never
	 * heard of.  It must cover the leases granted since the last durable copy
	 * of the leases (saved_epoch), the requests waiting for it, and leases of
	 * the default ttl for a while; it may come down once the long-lived ones
	 * are saved.
	 */
	if (exact || model->limit[RL_DIM_CONCURRENCY] == RL_UNLIMITED)
	{
		/* no lower than the slots held after a restore still need */
		proposal->horizon = Max(proposal->horizon, marks->held_until);
		if (proposal->horizon != marks->saved.horizon)
			changed = true;
	}
	else
	{
		TimestampTz needed = Max(pgrl_add_saturating(now, (int64) pgrl_lease_ttl_s * USECS_PER_SEC),
								 marks->demand_expiry);

		if (marks->unsaved_epoch >= saved_epoch)
			needed = Max(needed, marks->unsaved_expiry);
		if (marks->prior_epoch >= saved_epoch)
			needed = Max(needed, marks->prior_expiry);
		/* leases a restore could not know may still run until then */
		needed = Max(needed, marks->held_until);
		if ((granted_since > 0 || marks->demand_expiry > 0) &&
			proposal->horizon < pgrl_add_saturating(needed, RL_HORIZON_SLACK_US / 2))
		{
			proposal->horizon = pgrl_add_saturating(needed, RL_HORIZON_SLACK_US);
			changed = true;
		}
		else if (lower && proposal->horizon > pgrl_add_saturating(needed, 2 * RL_HORIZON_SLACK_US))
		{
			proposal->horizon = pgrl_add_saturating(needed, RL_HORIZON_SLACK_US);
			changed = true;
		}
	}

	if (exact)
		marks->closed = true;
	if (changed)
	{
		marks->closed = exact;
		marks->proposed = *proposal;
		marks->proposing = true;
		marks->requested = false;
		memset(marks->demand, 0, sizeof(marks->demand));
		memset(marks->largest_demand, 0, sizeof(marks->largest_demand));
		marks->demand_expiry = 0;
		for (int d = 0; d < RL_NUM_DIMS; d++)
		{
			marks->headroom[d] = proposal->mark[d] - model->used[d];
			marks->used_at_proposal[d] = model->used[d];
		}
		marks->granted_at_proposal = model->granted;
		marks->proposed_at = real_now;
		marks->proposed_minute_start = model->minute_start;
		marks->proposed_day_start = model->day_start;
	}
	return changed;
}

/*
 * Propose new marks for a model when it needs them (see pgrl_mark_propose):
 * they take effect at once, and are returned in proposal, with the model's
 * generation and name, for the caller to save, commit, and publish with
 * pgrl_ledger_publish_marks.  Worker only.
 */
bool
pgrl_ledger_propose_marks(int slot, TimestampTz now, bool exact, bool lower,
						  uint32 saved_epoch, RlMarkSet *proposal, uint32 *generation,
						  char *name)
{
	RlModel    *model = &pgrl_models[slot];
	bool		proposed = false;

	/* an unlocked peek: most slots of a large max_models are free */
	if (!model->in_use)
		return false;
	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	if (model->in_use &&
		pgrl_mark_propose(model, now, exact, lower, saved_epoch, proposal))
	{
		proposed = true;
		*generation = model->generation;
		strlcpy(name, model->name, RL_NAME_MAX_LEN + 1);
	}
	LWLockRelease(&model->lock);
	return proposed;
}

/*
 * Marks proposed for a model are durable now: they become its saved marks,
 * and the waiters they let in look again.  Worker only.
 */
void
pgrl_ledger_publish_marks(int slot, uint32 generation, const RlMarkSet *saved)
{
	RlModel    *model = &pgrl_models[slot];

	LWLockAcquire(&model->lock, LW_EXCLUSIVE);
	if (model->in_use && model->generation == generation)
	{
		model->marks.saved = *saved;
		model->marks.proposing = false;
	}
	LWLockRelease(&model->lock);
	if (pgrl_model_waiters(slot) > 0)
		pgrl_wake_waiters(slot);
}
