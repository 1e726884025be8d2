/*-------------------------------------------------------------------------
 *
 * utility.c
 *		Statements that need the served database without other sessions.
 *
 * DROP DATABASE, ALTER DATABASE ... RENAME, ALTER DATABASE ... SET
 * TABLESPACE and CREATE DATABASE ... TEMPLATE refuse to run while another
 * session is connected to the database concerned, and the worker always
 * is.  The library is preloaded, so every backend runs this ProcessUtility
 * hook: before such a statement on ratelimit.database it asks the worker to
 * leave (workerstate.c) and waits until the worker has saved its state, as
 * at a clean stop, and its process is gone: at most RL_DETACH_TIMEOUT_MS,
 * then the statement runs and fails as it would have.  The request is given
 * back when the transaction ends, not when the statement does: DROP
 * DATABASE commits after the hook returns, and a worker back earlier would
 * connect to a database being dropped.  The launcher then starts the worker
 * again if the database is (still) there.
 *
 * ALTER DATABASE ... ALLOW_CONNECTIONS false makes the worker leave too,
 * and the launcher waits until connections are allowed again: the way to
 * keep it off the database for as long as an operator needs.
 *
 * Only a role that may run the statement makes the worker leave: the
 * database's owner (or a superuser), with CREATEDB for a rename; for a
 * copy, a role that may create databases and copy this one.  Statements
 * that fail anyway (DROP DATABASE in a transaction block, or of the
 * database one is connected to) do not.  A subtransaction that rolls back
 * gives the request back; PREPARE TRANSACTION while holding one fails.
 *
 * A statement after which the database may be there or accept connections
 * (CREATE DATABASE or a rename to its name, ALTER DATABASE on it) wakes the
 * launcher at commit, so that it looks at once rather than after its
 * backoff.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/syscache.h"

#include "settings.h"
#include "utility.h"
#include "workerstate.h"

/* How long a statement waits for the worker to leave */
#define RL_DETACH_TIMEOUT_MS	10000

static ProcessUtility_hook_type prev_process_utility = NULL;

/* This transaction may have made the database appear: wake the launcher */
static bool wake_launcher_at_commit = false;
static bool callback_registered = false;

/*
 * The subtransaction whose statement made the worker leave: if it rolls
 * back (ROLLBACK TO SAVEPOINT, a failed statement in a PL/pgSQL block), the
 * statement is undone and the worker may come back at once.
 */
static SubTransactionId detach_subxact = InvalidSubTransactionId;

/* Release the request to leave and wake the launcher when the transaction ends */
static void
pgrl_utility_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:

			/*
			 * A prepared rename would keep the worker away until COMMIT
			 * PREPARED, from another session that cannot give the request
			 * back.
			 */
			if (pgrl_detach_held())
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that made the pg_ratelimit worker leave database \"%s\"",
								pgrl_database_name),
						 errhint("Run the statement outside a prepared transaction.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			pgrl_release_detach();
			detach_subxact = InvalidSubTransactionId;
			if (wake_launcher_at_commit && event == XACT_EVENT_COMMIT)
				pgrl_wake_launcher();
			wake_launcher_at_commit = false;
			break;
		default:
			break;
	}
}

static void
pgrl_utility_subxact_callback(SubXactEvent event, SubTransactionId subid,
							  SubTransactionId parent_subid, void *arg)
{
	if (!pgrl_detach_held() || subid != detach_subxact)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		pgrl_release_detach();
		detach_subxact = InvalidSubTransactionId;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		detach_subxact = parent_subid;
}

static void
pgrl_register_utility_callback(void)
{
	if (callback_registered)
		return;
	RegisterXactCallback(pgrl_utility_xact_callback, NULL);
	RegisterSubXactCallback(pgrl_utility_subxact_callback, NULL);
	callback_registered = true;
}

static bool
pgrl_is_served(const char *dbname)
{
	return dbname != NULL && strcmp(dbname, pgrl_database_name) == 0;
}

/* Does the current role own the database (or have its owner's rights)? */
static bool
pgrl_owns_database(Oid dboid)
{
#if PG_VERSION_NUM >= 160000
	return object_ownercheck(DatabaseRelationId, dboid, GetUserId());
#else
	return pg_database_ownercheck(dboid, GetUserId());
#endif
}

/* An option of CREATE or ALTER DATABASE, or NULL */
static DefElem *
pgrl_option(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *option = lfirst_node(DefElem, lc);

		if (strcmp(option->defname, name) == 0)
			return option;
	}
	return NULL;
}

/* May the current role copy database dboid (CREATE DATABASE ... TEMPLATE)? */
static bool
pgrl_may_copy(Oid dboid)
{
	HeapTuple	tuple;
	bool		is_template;

	if (!have_createdb_privilege())
		return false;
	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (!HeapTupleIsValid(tuple))
		return false;
	is_template = ((Form_pg_database) GETSTRUCT(tuple))->datistemplate;
	ReleaseSysCache(tuple);
	return is_template || pgrl_owns_database(dboid);
}

static void
pgrl_wake_launcher_at_commit(void)
{
	pgrl_register_utility_callback();
	wake_launcher_at_commit = true;
}

/*
 * Before a statement runs: if it needs the served database alone, make the
 * worker leave (see the top of this file).
 */
static void
pgrl_before_utility(Node *parsetree, bool top_level)
{
	const char *target = NULL;
	bool		copy = false;
	bool		in_block = false;	/* may run in a transaction block */
	bool		own_database = false;	/* may run connected to the target */
	Oid			dboid;

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			target = ((DropdbStmt *) parsetree)->dbname;
			break;
		case T_RenameStmt:
			{
				RenameStmt *stmt = (RenameStmt *) parsetree;

				if (stmt->renameType != OBJECT_DATABASE)
					return;
				if (pgrl_is_served(stmt->newname))
					pgrl_wake_launcher_at_commit();
				target = stmt->subname;
				in_block = true;
				break;
			}
		case T_CreatedbStmt:
			{
				CreatedbStmt *stmt = (CreatedbStmt *) parsetree;
				DefElem    *template = pgrl_option(stmt->options, "template");

				if (pgrl_is_served(stmt->dbname))
					pgrl_wake_launcher_at_commit();
				if (template == NULL || template->arg == NULL)
					return;
				/* a copy to a name taken fails anyway */
				if (OidIsValid(get_database_oid(stmt->dbname, true)))
					return;
				target = defGetString(template);
				copy = true;
				own_database = true;
				break;
			}
		case T_AlterDatabaseStmt:
			{
				AlterDatabaseStmt *stmt = (AlterDatabaseStmt *) parsetree;
				DefElem    *allow = pgrl_option(stmt->options, "allow_connections");

				if (!pgrl_is_served(stmt->dbname))
					return;
				pgrl_wake_launcher_at_commit();
				if (pgrl_option(stmt->options, "tablespace") != NULL)
					target = stmt->dbname;
				else if (allow != NULL && allow->arg != NULL && !defGetBoolean(allow))
				{
					/*
					 * refused from a session connected to it: not
					 * own_database
					 */
					target = stmt->dbname;
					in_block = true;
				}
				break;
			}
		default:
			return;
	}

	if (!pgrl_is_served(target))
		return;
	if (!in_block && (!top_level || IsTransactionBlock()))
		return;
	dboid = get_database_oid(target, true);
	if (!OidIsValid(dboid) || (dboid == MyDatabaseId && !own_database))
		return;
	if (copy ? !pgrl_may_copy(dboid) : !pgrl_owns_database(dboid))
		return;
	/* a rename also needs CREATEDB */
	if (nodeTag(parsetree) == T_RenameStmt && !have_createdb_privilege())
		return;

	pgrl_register_utility_callback();
	if (!pgrl_detach_held())
		detach_subxact = GetCurrentSubTransactionId();
	if (!pgrl_request_detach(RL_DETACH_TIMEOUT_MS))
		ereport(WARNING,
				(errmsg("the pg_ratelimit worker did not leave database \"%s\" within %d s",
						target, RL_DETACH_TIMEOUT_MS / 1000)));
}

static void
pgrl_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	/* a standby has no worker, and refuses these statements */
	if (!RecoveryInProgress())
		pgrl_before_utility(pstmt->utilityStmt, context == PROCESS_UTILITY_TOPLEVEL);

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

/* Called from _PG_init while shared_preload_libraries is processed */
void
pgrl_install_utility_hook(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = pgrl_process_utility;
}
