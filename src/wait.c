/*-------------------------------------------------------------------------
 *
 * wait.c
 *		Waiting for capacity inside the server: a shared-memory wait queue.
 *
 * A backend whose acquire must wait registers one RlWaiter record (indexed
 * by its backend id) naming the models it waits on, the size of its
 * request and a ticket from a global counter: tickets give arrival order.
 * It then sleeps on its own latch until the earliest window reset of the
 * limits that refused it, the end of its max_wait, or a wake-up.  Releases,
 * expiries, window resets (the worker), configuration changes and the test
 * clock set the latches of the waiters of the models concerned; no one
 * polls.
 *
 * Arrival order is kept by admission itself: when a model has waiters,
 * the ledger first sets aside the room that older waiters which fit now
 * will take (pgrl_older_claims lists them), so neither a newcomer nor a
 * younger waiter can take capacity ahead of an older waiter that fits.  An
 * older waiter that does not fit holds nothing back.
 *
 * This file also keeps who sleeps on what: the number of waiters of each
 * model and of each job type's share of it (atomics), and the background
 * worker's latch.  The modules below the worker report what it must look
 * at by waking it here (pgrl_wake_worker), and freed capacity by waking
 * the waiters of a model (pgrl_wake_waiters): the one way lower layers
 * reach higher ones (src/README.md).  The worker's wake-ups are counted as
 * well as set on its latch: its round may wait on that latch for something
 * else (a commit waiting for a synchronous standby resets it), and a
 * wake-up counted during the round starts the next one at once.
 *
 * Locking: none for the records.  Only its owner writes a record, and it
 * brackets every change with two increments of the record's changecount
 * (odd while it writes); readers copy the record and retry until they see
 * the same even count before and after (as pgstat does for backend status).
 * The one field others write is the wake-up count, an atomic: a waiter
 * reads it before each attempt and sleeps after a failed one only while it
 * is unchanged, so no wake-up between an attempt and the sleep is lost.
 * So waking, claiming, being granted and leaving never make backends queue
 * on a lock behind one another, which at a window reset, when every waiter
 * wakes at once, would serialize them all.  What orders a grant against
 * the claims of others is the model's lock: pgrl_older_claims and
 * pgrl_waiter_granted run under it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/s_lock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"

#include "limits.h"
#include "pg_ratelimit.h"
#include "settings.h"
#include "wait.h"

typedef struct RlWaiter
{
	pg_atomic_uint32 changecount;	/* odd while the owner changes the record */
	pg_atomic_uint32 wakeups;	/* bumped by everyone who wakes it (not
								 * covered by changecount) */
	bool		active;
	bool		claiming;		/* not yet granted: holds back younger ones */
	bool		awaiting_mark;	/* fits the limits, waits only for new
								 * high-water marks (ledger_marks.c) */
	int64		ticket;
	int			num_slots;
	int			slots[RL_MAX_WAIT_MODELS];
	int64		tokens;
	int64		output_tokens;
	int32		requests;
	int			job_type_slot;	/* -1 without a job type */
	pg_atomic_uint32 *memory_in_flight; /* its instance's jobs of the type,
										 * NULL when no memory cap applies */
	int64		memory_cap;
	Latch	   *latch;
} RlWaiter;

typedef struct RlWaitQueue
{
	Latch	   *worker_latch;	/* the background worker's, or NULL */
	pg_atomic_uint32 worker_wakeups;	/* bumped by everyone who wakes it */
	pg_atomic_uint64 next_ticket;
	pg_atomic_uint32 memory_waiters;	/* waiters held to a memory cap */
	pg_atomic_uint64 waiters_woken; /* wake-ups since start, for rl_worker */
	int			num_records;
	RlWaiter	records[FLEXIBLE_ARRAY_MEMBER];
} RlWaitQueue;

static RlWaitQueue *queue = NULL;
static pg_atomic_uint32 *model_waiters = NULL;	/* [model slot] */
static pg_atomic_uint32 *share_waiters = NULL;	/* [model slot * max_job_types
												 * + job type slot] */
static bool exit_callback_registered = false;

/* This backend's room for the claims of older waiters (pgrl_claim_buffer) */
static RlClaim *claim_buffer = NULL;

static Size
pgrl_queue_size(void)
{
	return add_size(offsetof(RlWaitQueue, records),
					mul_size(MaxBackends + 1, sizeof(RlWaiter)));
}

static Size
pgrl_counts_size(void)
{
	return mul_size(mul_size(pgrl_max_models, pgrl_max_job_types + 1),
					sizeof(pg_atomic_uint32));
}

Size
pgrl_waiters_shmem_size(void)
{
	return add_size(MAXALIGN(pgrl_queue_size()), MAXALIGN(pgrl_counts_size()));
}

/* Create or attach to the wait queue; caller holds AddinShmemInitLock */
void
pgrl_waiters_shmem_init(void)
{
	bool		found;
	bool		found_counts;
	Size		num_counts = (Size) pgrl_max_models * (pgrl_max_job_types + 1);

	queue = ShmemInitStruct("pg_ratelimit wait queue", pgrl_queue_size(), &found);
	model_waiters = ShmemInitStruct("pg_ratelimit waiter counts", pgrl_counts_size(),
									&found_counts);
	share_waiters = model_waiters + pgrl_max_models;
	if (!found_counts)
		for (Size i = 0; i < num_counts; i++)
			pg_atomic_init_u32(&model_waiters[i], 0);
	if (!found)
	{
		queue->worker_latch = NULL;
		pg_atomic_init_u32(&queue->worker_wakeups, 0);
		pg_atomic_init_u64(&queue->next_ticket, 1);
		pg_atomic_init_u32(&queue->memory_waiters, 0);
		pg_atomic_init_u64(&queue->waiters_woken, 0);
		queue->num_records = MaxBackends + 1;
		memset(queue->records, 0, sizeof(RlWaiter) * queue->num_records);
		for (int i = 0; i < queue->num_records; i++)
		{
			pg_atomic_init_u32(&queue->records[i].changecount, 0);
			pg_atomic_init_u32(&queue->records[i].wakeups, 0);
		}
	}
}

/*
 * This backend's record, 1 to MaxBackends (0: none): its BackendId before
 * PostgreSQL 17, its 0-based ProcNumber plus one from 17 on
 */
#if PG_VERSION_NUM >= 170000
#define RL_MY_BACKEND	(MyProcNumber + 1)
#else
#define RL_MY_BACKEND	MyBackendId
#endif

static RlWaiter *
pgrl_my_record(void)
{
	Assert(RL_MY_BACKEND > 0 && RL_MY_BACKEND < queue->num_records);
	return &queue->records[RL_MY_BACKEND];
}

/*
 * The owner brackets each change of its record with these; the atomic
 * increments are full barriers, so a reader that sees the same even count
 * before and after its copy saw no change half done.
 */
static void
pgrl_begin_change(RlWaiter *me)
{
	pg_atomic_fetch_add_u32(&me->changecount, 1);
}

static void
pgrl_end_change(RlWaiter *me)
{
	pg_atomic_fetch_add_u32(&me->changecount, 1);
}

/* Copy a record consistently; returns whether it is an active waiter */
static bool
pgrl_read_waiter(RlWaiter *waiter, RlWaiter *copy)
{
	SpinDelayStatus delay;

	init_local_spin_delay(&delay);
	for (;;)
	{
		uint32		before = pg_atomic_read_u32(&waiter->changecount);

		if ((before & 1) == 0)
		{
			pg_read_barrier();
			memcpy(copy, waiter, sizeof(RlWaiter));
			pg_read_barrier();
			if (pg_atomic_read_u32(&waiter->changecount) == before)
				break;
		}
		/* its owner is changing it, a few instructions' work */
		perform_spin_delay(&delay);
	}
	finish_spin_delay(&delay);
	return copy->active;
}

/* Change the waiter count of each model (and job type share) by delta */
static void
pgrl_count_waiters(const int *slots, int num_slots, int job_type_slot, int delta)
{
	for (int i = 0; i < num_slots; i++)
	{
		pg_atomic_fetch_add_u32(&model_waiters[slots[i]], delta);
		if (job_type_slot >= 0)
			pg_atomic_fetch_add_u32(&share_waiters[(Size) slots[i] * pgrl_max_job_types +
												   job_type_slot], delta);
	}
}

static void
pgrl_waiter_exit(int code, Datum arg)
{
	pgrl_unregister_waiter();
}

/*
 * Join the queue of the given models (or move to new slots, keeping the
 * ticket).  A ticket of 0 takes a new one.  Returns the ticket.
 */
int64
pgrl_register_waiter(const int *slots, int num_slots, int64 tokens, int64 output_tokens,
					 int32 requests,
					 int job_type_slot, const RlMemoryCap *memory, int64 ticket)
{
	RlWaiter   *me = pgrl_my_record();

	Assert(num_slots <= RL_MAX_WAIT_MODELS);
	if (!exit_callback_registered)
	{
		/* a backend that exits while waiting leaves the queue */
		before_shmem_exit(pgrl_waiter_exit, (Datum) 0);
		exit_callback_registered = true;
	}
	pgrl_unregister_waiter();
	if (ticket == 0)
		ticket = (int64) pg_atomic_fetch_add_u64(&queue->next_ticket, 1);

	pgrl_count_waiters(slots, num_slots, job_type_slot, 1);
	pgrl_begin_change(me);
	me->ticket = ticket;
	me->num_slots = num_slots;
	memcpy(me->slots, slots, sizeof(int) * num_slots);
	me->tokens = tokens;
	me->output_tokens = output_tokens;
	me->requests = requests;
	me->job_type_slot = job_type_slot;
	me->memory_in_flight = memory->in_flight;
	me->memory_cap = memory->cap;
	me->latch = MyLatch;
	me->claiming = true;
	me->awaiting_mark = false;
	me->active = true;
	pgrl_end_change(me);
	if (memory->in_flight)
		pg_atomic_fetch_add_u32(&queue->memory_waiters, 1);
	return ticket;
}

static void pgrl_wake(int slot);
static bool pgrl_waits_on(const RlWaiter *waiter, int slot);

/*
 * Our request was granted: its room is now taken for real, so stop setting
 * it aside for us.  Caller holds the model's lock (the grant and the end of
 * the claim are one step for the others).
 */
void
pgrl_waiter_granted(void)
{
	RlWaiter   *me = pgrl_my_record();

	pgrl_begin_change(me);
	me->claiming = false;
	pgrl_end_change(me);
}

/*
 * After each attempt: whether we wait only for new high-water marks (then
 * we are not load on our job type's share: see pgrl_share_has_waiters).
 */
void
pgrl_waiter_awaiting_mark(bool awaiting)
{
	RlWaiter   *me = pgrl_my_record();

	if (!me->active || me->awaiting_mark == awaiting)
		return;
	pgrl_begin_change(me);
	me->awaiting_mark = awaiting;
	pgrl_end_change(me);
}

/*
 * Is anyone waiting for capacity on a job type's share of a model?  A
 * waiter that fits the limits and only waits for new marks does not count.
 */
bool
pgrl_share_has_waiters(int model_slot, int job_type_slot)
{
	if (pgrl_share_waiters(model_slot, job_type_slot) == 0)
		return false;
	for (int i = 0; i < queue->num_records; i++)
	{
		RlWaiter	waiter;

		if (pgrl_read_waiter(&queue->records[i], &waiter) && waiter.claiming &&
			!waiter.awaiting_mark && waiter.job_type_slot == job_type_slot &&
			pgrl_waits_on(&waiter, model_slot))
			return true;
	}
	return false;
}

/*
 * Leave the queue, if in it.  Leaving without a grant (max_wait over,
 * cancel, error) gives up a claim that may have held younger waiters back:
 * they look again.
 */
void
pgrl_unregister_waiter(void)
{
	RlWaiter   *me;
	int			slots[RL_MAX_WAIT_MODELS];
	int			num_slots;
	int			job_type_slot;
	bool		memory_capped;
	bool		was_claiming;

	if (queue == NULL || RL_MY_BACKEND <= 0)
		return;
	me = pgrl_my_record();
	if (!me->active)
		return;
	was_claiming = me->claiming;
	job_type_slot = me->job_type_slot;
	memory_capped = me->memory_in_flight != NULL;
	num_slots = me->num_slots;
	memcpy(slots, me->slots, sizeof(int) * num_slots);
	pgrl_begin_change(me);
	me->active = false;
	pgrl_end_change(me);
	pgrl_count_waiters(slots, num_slots, job_type_slot, -1);
	if (memory_capped)
		pg_atomic_fetch_sub_u32(&queue->memory_waiters, 1);
	if (was_claiming)
		for (int i = 0; i < num_slots; i++)
			pgrl_wake(slots[i]);
}

static bool
pgrl_waits_on(const RlWaiter *waiter, int slot)
{
	for (int i = 0; i < waiter->num_slots; i++)
		if (waiter->slots[i] == slot)
			return true;
	return false;
}

/* A waiter whose instance has its memory cap's worth of jobs in flight */
static bool
pgrl_memory_full(const RlWaiter *waiter)
{
	return waiter->memory_in_flight != NULL &&
		(int64) pg_atomic_read_u32(waiter->memory_in_flight) >= waiter->memory_cap;
}

/*
 * Room for the claims of every possible waiter, allocated once per backend:
 * call it before taking the model lock pgrl_older_claims runs under (no
 * allocation under an LWLock).
 */
RlClaim *
pgrl_claim_buffer(void)
{
	if (claim_buffer == NULL)
		claim_buffer = MemoryContextAlloc(TopMemoryContext,
										  sizeof(RlClaim) * queue->num_records);
	return claim_buffer;
}

/*
 * The claims of the waiters on a model (slot) older than ticket that still
 * claim room and whose instance's memory does not hold them back, into
 * claims (from pgrl_claim_buffer), in no particular order.  Returns how
 * many.  Caller holds the model's lock (see the top of this file).
 */
int
pgrl_older_claims(int slot, int64 ticket, RlClaim *claims)
{
	int			num_claims = 0;

	for (int i = 0; i < queue->num_records; i++)
	{
		RlWaiter	waiter;

		if (!pgrl_read_waiter(&queue->records[i], &waiter) || !waiter.claiming ||
			waiter.ticket >= ticket || !pgrl_waits_on(&waiter, slot) ||
			pgrl_memory_full(&waiter))
			continue;
		claims[num_claims].ticket = waiter.ticket;
		claims[num_claims].tokens = waiter.tokens;
		claims[num_claims].output_tokens = waiter.output_tokens;
		claims[num_claims].requests = waiter.requests;
		claims[num_claims].job_type_slot = waiter.job_type_slot;
		num_claims++;
	}
	return num_claims;
}

/* Waiters of a model, and of a job type's share of it */
uint32
pgrl_model_waiters(int model_slot)
{
	return pg_atomic_read_u32(&model_waiters[model_slot]);
}

uint32
pgrl_share_waiters(int model_slot, int job_type_slot)
{
	return pg_atomic_read_u32(&share_waiters[(Size) model_slot * pgrl_max_job_types +
											 job_type_slot]);
}

/* The worker's latch, set by the worker while it runs (NULL when it exits) */
void
pgrl_set_worker_latch(Latch *latch)
{
	queue->worker_latch = latch;
}

/* Wake the worker: something it must look at changed */
void
pgrl_wake_worker(void)
{
	Latch	   *latch = queue->worker_latch;

	pg_atomic_fetch_add_u32(&queue->worker_wakeups, 1);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * The worker's wake-up count: the worker reads it before a round, and
 * sleeps after the round only while it is unchanged.  A wake-up during the
 * round may have found its latch reset by a wait of the round's own (a
 * commit waiting for a synchronous standby, a lock): a request for new
 * marks would then wait for the next timed round.
 */
uint32
pgrl_worker_wakeups(void)
{
	return pg_atomic_read_u32(&queue->worker_wakeups);
}

/*
 * Wake a waiter: count the wake-up, then set its latch.  The count lets a
 * waiter see a wake-up that came while it was busy with an attempt, even
 * when something else reset its latch meanwhile (a lock wait does).
 */
static void
pgrl_wake_one(RlWaiter *record, Latch *latch)
{
	pg_atomic_fetch_add_u32(&record->wakeups, 1);
	pg_atomic_fetch_add_u64(&queue->waiters_woken, 1);
	SetLatch(latch);
}

/* How many wake-ups waiters were sent since shared memory was set up */
uint64
pgrl_waiters_woken(void)
{
	return pg_atomic_read_u64(&queue->waiters_woken);
}

/*
 * This backend's wake-up count: read it before an attempt, and sleep after
 * a failed one only while it is unchanged (pgrl_waiter_woken_since).
 */
uint32
pgrl_waiter_wakeups(void)
{
	return pg_atomic_read_u32(&pgrl_my_record()->wakeups);
}

bool
pgrl_waiter_woken_since(uint32 wakeups)
{
	/* a full barrier: the count is read after whatever ran before */
	return pg_atomic_fetch_add_u32(&pgrl_my_record()->wakeups, 0) != wakeups;
}

/* Wake the waiters of one model (slot), or of all models (slot < 0) */
static void
pgrl_wake(int slot)
{
	if (queue == NULL)
		return;
	for (int i = 0; i < queue->num_records; i++)
	{
		RlWaiter	waiter;

		/* a latch whose owner has since moved on just wakes it for nothing */
		if (pgrl_read_waiter(&queue->records[i], &waiter) &&
			(slot < 0 || pgrl_waits_on(&waiter, slot)))
			pgrl_wake_one(&queue->records[i], waiter.latch);
	}
}

void
pgrl_wake_waiters(int slot)
{
	pgrl_wake(slot);
}

void
pgrl_wake_all_waiters(void)
{
	pgrl_wake(-1);
}

/*
 * An instance's memory slot freed: wake the waiters held to a memory cap,
 * whatever model they wait on (the cap spans models).  Cheap when there
 * are none.
 */
void
pgrl_wake_memory_waiters(void)
{
	if (queue == NULL || pg_atomic_read_u32(&queue->memory_waiters) == 0)
		return;
	for (int i = 0; i < queue->num_records; i++)
	{
		RlWaiter	waiter;

		if (pgrl_read_waiter(&queue->records[i], &waiter) && waiter.memory_in_flight)
			pgrl_wake_one(&queue->records[i], waiter.latch);
	}
}
