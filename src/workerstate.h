/*-------------------------------------------------------------------------
 *
 * workerstate.h
 *		What the launcher, the worker and the backends know of each other:
 *		who runs, the requests to leave the database, health counters.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_WORKERSTATE_H
#define RL_WORKERSTATE_H

#include "datatype/timestamp.h"
#include "storage/latch.h"

/* Longest error message kept for rl_worker, in bytes with the NUL */
#define RL_WORKER_ERROR_LEN		256

/* What the launcher is doing (the worker's own state is its pid) */
typedef enum RlLauncherPhase
{
	RL_LAUNCHER_IDLE,			/* not started, or deciding */
	RL_LAUNCHER_STARTING,		/* a worker is registered (running once its
								 * pid is set) */
	RL_LAUNCHER_WAITING_DATABASE,	/* ratelimit.database does not exist */
	RL_LAUNCHER_WAITING_CONNECTIONS,	/* it does not allow connections */
	RL_LAUNCHER_DETACHED,		/* a statement needs the database alone */
	RL_LAUNCHER_RESTARTING		/* backing off after a failure */
} RlLauncherPhase;

/* How the last worker left, as it said (or not) before exiting */
typedef enum RlWorkerExit
{
	RL_WORKER_EXIT_ERROR,		/* said nothing: an error, or never connected */
	RL_WORKER_EXIT_STOPPED,		/* SIGTERM: saved its state and stopped */
	RL_WORKER_EXIT_DETACHED		/* asked to leave: saved and left */
} RlWorkerExit;

/* May the launcher start a worker now? */
typedef enum RlStartVerdict
{
	RL_START_OK,
	RL_START_DETACHED,			/* no: a backend needs the database alone */
	RL_START_BUSY				/* no: an earlier launcher's worker is leaving */
} RlStartVerdict;

/* A copy of everything, for rl_worker */
typedef struct RlWorkerStatus
{
	int			launcher_pid;
	int			worker_pid;		/* connected worker, 0 when none */
	RlLauncherPhase phase;
	bool		detach_requested;
	TimestampTz stats_since;
	TimestampTz started_at;		/* of the connected worker */
	TimestampTz next_attempt_at;	/* while waiting or restarting */
	int64		restarts;
	int64		rounds;
	TimestampTz last_round_at;
	int64		persist_rounds;
	TimestampTz last_persist_at;
	int64		last_persist_us;
	int64		last_persist_rows;
	int64		rows_written;
	int64		notifications_sent;
	char		last_error[RL_WORKER_ERROR_LEN];
	TimestampTz last_error_at;
} RlWorkerStatus;

extern Size pgrl_worker_state_shmem_size(void);
extern void pgrl_worker_state_shmem_init(void);

/* the launcher */
extern uint32 pgrl_launcher_attach(Latch *latch);
extern void pgrl_launcher_detach(void);
extern void pgrl_launcher_set_phase(RlLauncherPhase phase, TimestampTz next_attempt_at);
extern RlStartVerdict pgrl_launcher_begin_start(void);
extern void pgrl_launcher_worker_started(bool restart);
extern RlWorkerExit pgrl_launcher_worker_stopped(TimestampTz *started_at);
extern bool pgrl_worker_connected(void);
extern void pgrl_wake_launcher(void);

/* the worker */
extern bool pgrl_worker_may_run(uint32 generation);
extern bool pgrl_worker_claim(uint32 generation);
extern void pgrl_worker_release(void);
extern void pgrl_worker_set_exit(uint32 generation, RlWorkerExit how);
extern void pgrl_worker_count_round(TimestampTz at, bool persisted, int64 persist_us,
									int64 rows, int notifications);

/* errors of the launcher and the worker (an emit_log_hook) */
extern void pgrl_worker_capture_errors(void);
extern void pgrl_worker_note_error(const char *message);

/* backends: a statement that needs the served database alone */
extern bool pgrl_request_detach(int timeout_ms);
extern void pgrl_release_detach(void);
extern bool pgrl_detach_held(void);

extern void pgrl_worker_status(RlWorkerStatus *status);

#endif							/* RL_WORKERSTATE_H */
