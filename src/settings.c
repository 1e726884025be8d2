/*-------------------------------------------------------------------------
 *
 * settings.c
 *		The ratelimit.* configuration settings.
 *
 * The sizes of shared memory (max_models, max_job_types, max_leases) and the
 * database the extension lives in can only be set at server start.  So can
 * enable_test_clock: the test clock moves every window of the server, which
 * must never happen on a server with real traffic by a mistaken call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "commands/dbcommands.h"
#include "access/xlog.h"
#include "miscadmin.h"

#include "settings.h"

#define RL_DATABASE_DEFAULT			"postgres"

#define RL_MAX_MODELS_DEFAULT		100
#define RL_MAX_MODELS_MIN			1
#define RL_MAX_MODELS_MAX			100000

#define RL_MAX_JOB_TYPES_DEFAULT	32
#define RL_MAX_JOB_TYPES_MIN		1
#define RL_MAX_JOB_TYPES_MAX		1000

#define RL_MAX_LEASES_DEFAULT		10000
#define RL_MAX_LEASES_MIN			16
#define RL_MAX_LEASES_MAX			10000000

#define RL_LEASE_TTL_DEFAULT		600
#define RL_LEASE_TTL_MIN			1
#define RL_LEASE_TTL_MAX			(7 * 24 * 3600)

#define RL_MAX_LEASE_TTL_DEFAULT	3600

#define RL_PERSIST_INTERVAL_DEFAULT	1000
#define RL_PERSIST_INTERVAL_MIN		10
#define RL_PERSIST_INTERVAL_MAX		(3600 * 1000)

#define RL_MAX_INSTANCES_DEFAULT	1000
#define RL_MAX_INSTANCES_MAX		100000

#define RL_MAX_INSTANCES_PER_ROLE_DEFAULT	100

#define RL_INSTANCE_TIMEOUT_DEFAULT	15
#define RL_INSTANCE_TIMEOUT_MAX		(24 * 3600)

#define RL_RATIO_INTERVAL_DEFAULT	5000
#define RL_RATIO_INTERVAL_MIN		100
#define RL_RATIO_INTERVAL_MAX		(3600 * 1000)

#define RL_MIN_JOB_TYPE_SLOTS_DEFAULT	1
#define RL_MIN_JOB_TYPE_SLOTS_MAX		1000000

#define RL_MAX_PROVIDER_PAUSE_DEFAULT	300
#define RL_MAX_PROVIDER_PAUSE_MAX		(2 * 24 * 3600)

char	   *pgrl_database_name = NULL;
int			pgrl_max_models = RL_MAX_MODELS_DEFAULT;
int			pgrl_max_job_types = RL_MAX_JOB_TYPES_DEFAULT;
int			pgrl_max_leases = RL_MAX_LEASES_DEFAULT;
int			pgrl_lease_ttl_s = RL_LEASE_TTL_DEFAULT;
int			pgrl_max_lease_ttl_s = RL_MAX_LEASE_TTL_DEFAULT;
int			pgrl_max_leases_per_role = 0;
int			pgrl_persist_interval_ms = RL_PERSIST_INTERVAL_DEFAULT;
int			pgrl_max_instances = RL_MAX_INSTANCES_DEFAULT;
int			pgrl_max_instances_per_role = RL_MAX_INSTANCES_PER_ROLE_DEFAULT;
int			pgrl_instance_timeout_s = RL_INSTANCE_TIMEOUT_DEFAULT;
int			pgrl_ratio_interval_ms = RL_RATIO_INTERVAL_DEFAULT;
int			pgrl_min_job_type_slots = RL_MIN_JOB_TYPE_SLOTS_DEFAULT;
int			pgrl_max_provider_pause_s = RL_MAX_PROVIDER_PAUSE_DEFAULT;
bool		pgrl_enable_test_clock = false;

/* Register every ratelimit.* setting and reserve the prefix */
void
pgrl_define_settings(void)
{
	DefineCustomStringVariable("ratelimit.database",
							   "Database in which pg_ratelimit is installed.",
							   "The limiter's functions work only in this database.",
							   &pgrl_database_name,
							   RL_DATABASE_DEFAULT,
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.max_models",
							"Maximum number of models the limiter can hold.",
							NULL,
							&pgrl_max_models,
							RL_MAX_MODELS_DEFAULT,
							RL_MAX_MODELS_MIN,
							RL_MAX_MODELS_MAX,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.max_job_types",
							"Maximum number of job types the limiter can hold.",
							NULL,
							&pgrl_max_job_types,
							RL_MAX_JOB_TYPES_DEFAULT,
							RL_MAX_JOB_TYPES_MIN,
							RL_MAX_JOB_TYPES_MAX,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.max_leases",
							"Maximum number of leases open at once.",
							NULL,
							&pgrl_max_leases,
							RL_MAX_LEASES_DEFAULT,
							RL_MAX_LEASES_MIN,
							RL_MAX_LEASES_MAX,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.lease_ttl",
							"Lifetime of a lease acquired without an explicit ttl.",
							"An expired lease frees its concurrency slot and keeps its window reservation.",
							&pgrl_lease_ttl_s,
							RL_LEASE_TTL_DEFAULT,
							RL_LEASE_TTL_MIN,
							RL_LEASE_TTL_MAX,
							PGC_USERSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.max_lease_ttl",
							"Longest lifetime a lease may be given.",
							"An acquire asking for a longer ttl is refused; a longer ratelimit.lease_ttl is cut to it.",
							&pgrl_max_lease_ttl_s,
							RL_MAX_LEASE_TTL_DEFAULT,
							RL_LEASE_TTL_MIN,
							RL_LEASE_TTL_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.max_leases_per_role",
							"Most leases one role may hold open at once (0: no cap).",
							"Set it for a role with ALTER ROLE ... SET; only superusers can change it.",
							&pgrl_max_leases_per_role,
							0,
							0,
							RL_MAX_LEASES_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.persist_interval",
							"How often the background worker saves changed counters, leases and usage.",
							"A crash loses at most this much; a clean shutdown loses nothing.",
							&pgrl_persist_interval_ms,
							RL_PERSIST_INTERVAL_DEFAULT,
							RL_PERSIST_INTERVAL_MIN,
							RL_PERSIST_INTERVAL_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.max_instances",
							"Maximum number of application instances registered at once.",
							"Sizes shared memory; can only be set at server start.",
							&pgrl_max_instances,
							RL_MAX_INSTANCES_DEFAULT,
							1,
							RL_MAX_INSTANCES_MAX,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.max_instances_per_role",
							"Maximum number of instances one role may register; 0 means no cap.",
							"An instance counts for the role that registered it (its first heartbeat).",
							&pgrl_max_instances_per_role,
							RL_MAX_INSTANCES_PER_ROLE_DEFAULT,
							0,
							RL_MAX_INSTANCES_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.instance_timeout",
							"How long after its last heartbeat an instance counts as gone.",
							"The background worker then drops it and expires its leases.",
							&pgrl_instance_timeout_s,
							RL_INSTANCE_TIMEOUT_DEFAULT,
							1,
							RL_INSTANCE_TIMEOUT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.ratio_interval",
							"How often the background worker moves flexible job type ratios with load.",
							"Ratios are also adjusted after every 10 releases on a model.",
							&pgrl_ratio_interval_ms,
							RL_RATIO_INTERVAL_DEFAULT,
							RL_RATIO_INTERVAL_MIN,
							RL_RATIO_INTERVAL_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.min_job_type_slots",
							"Jobs a job type may always start per window and have in flight, whatever its share.",
							"The model's own limits still apply.",
							&pgrl_min_job_type_slots,
							RL_MIN_JOB_TYPE_SLOTS_DEFAULT,
							0,
							RL_MIN_JOB_TYPE_SLOTS_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("ratelimit.max_provider_pause",
							"Longest pause of a model that a 429 or retry-after reported with rl_observe starts.",
							"A longer retry-after is cut to it; lowering it shortens pauses in progress; 0: never pause.",
							&pgrl_max_provider_pause_s,
							RL_MAX_PROVIDER_PAUSE_DEFAULT,
							0,
							RL_MAX_PROVIDER_PAUSE_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("ratelimit.enable_test_clock",
							 "Lets rl_debug_set_clock() move the limiter's clock (for tests only).",
							 "Off: the limiter follows real time, and a test clock saved by an earlier run is ignored.",
							 &pgrl_enable_test_clock,
							 false,
							 PGC_POSTMASTER,
							 0,
							 NULL, NULL, NULL);

}

/* Set by _PG_init while the library is preloaded (it has shared memory) */
bool		pgrl_preloaded = false;

/* The configured database's OID, looked up once per backend */
static Oid	pgrl_database_oid = InvalidOid;

/*
 * Is this backend connected to the database the limiter serves?  The
 * extension may be created in any database (a restored dump, a copy made
 * with CREATE DATABASE ... TEMPLATE); shared memory holds the state of
 * ratelimit.database's only.
 */
bool
pgrl_in_served_database(void)
{
	if (!OidIsValid(pgrl_database_oid))
		pgrl_database_oid = get_database_oid(pgrl_database_name, true);
	return OidIsValid(MyDatabaseId) && MyDatabaseId == pgrl_database_oid;
}

/* The library must have been preloaded: without it there is no shared memory */
void
pgrl_require_library_loaded(void)
{
	if (!pgrl_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ratelimit must be loaded via shared_preload_libraries"),
				 errhint("Add pg_ratelimit to shared_preload_libraries and restart the server.")));
}

/* The library must have been preloaded and we must be in its database */
void
pgrl_require_library(void)
{
	pgrl_require_library_loaded();
	if (!pgrl_in_served_database())
	{
		char	   *here = get_database_name(MyDatabaseId);

		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_ratelimit is configured for database \"%s\", not \"%s\"",
						pgrl_database_name, here ? here : "?"),
				 errdetail("The limiter keeps the state of one database in shared memory; its functions work only there."),
				 errhint("Use pg_ratelimit in database \"%s\", or set ratelimit.database = '%s' and restart the server to serve this one.",
						 pgrl_database_name, here ? here : "?")));
	}
}

/*
 * Refuse to change the limiter's state on a hot standby: the primary's
 * state is authoritative.  action says what was refused ("admit requests").
 */
void
pgrl_require_primary(const char *action)
{
	pgrl_require_library();
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("pg_ratelimit cannot %s on a standby", action),
				 errhint("Call it on the primary server.")));
}
