/*-------------------------------------------------------------------------
 *
 * extsql.c
 *		Running the extension's own SQL safely.
 *
 * Loading the configuration and the saved state, and saving state, read
 * and write the extension's tables through SPI.  That SQL runs in whatever
 * backend needs it: the worker, the commit of any configuration change, the
 * first caller after a start.  Whatever that backend's role and search_path
 * are, the SQL must mean what we wrote, or a role that can create objects
 * in a schema on the path (an operator "*(numeric, integer)" in public, a
 * look-alike rl_model table) could run code with another role's rights or
 * feed the limiter its own limits.
 *
 * So every such session (pgrl_extsql_begin .. pgrl_extsql_end):
 * - finds the extension, its schema and its owner from the catalogs, not
 *   through SQL, and names every table with that schema;
 * - runs as the extension's owner in a security-restricted operation, as
 *   PostgreSQL runs index expressions and materialized views, so the
 *   caller's rights never matter and the caller needs no privilege on the
 *   internal tables;
 * - pins search_path to "pg_catalog, pg_temp" for its duration: operators,
 *   functions and types resolve in pg_catalog only (pg_temp is never
 *   searched for those).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "extsql.h"

#define RL_EXTENSION_NAME	"pg_ratelimit"

/*
 * Find the installed extension: its OID, schema, owner and (when version
 * is not NULL) its version, palloc'd.  False when it is not installed (as
 * seen by the catalog snapshot).
 */
static bool
pgrl_extension_find(Oid *extension_oid, Oid *schema, Oid *owner, char **version)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	bool		found = false;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum(RL_EXTENSION_NAME));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		Form_pg_extension form = (Form_pg_extension) GETSTRUCT(tuple);

		*extension_oid = form->oid;
		*schema = form->extnamespace;
		*owner = form->extowner;
		if (version != NULL)
		{
			bool		isnull;
			Datum		value = heap_getattr(tuple, Anum_pg_extension_extversion,
											 RelationGetDescr(rel), &isnull);

			*version = isnull ? pstrdup("") : TextDatumGetCString(value);
		}
		found = true;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/* The installed extension's OID, schema and owner; false when it is not */
bool
pgrl_extension_lookup(Oid *extension_oid, Oid *schema, Oid *owner)
{
	return pgrl_extension_find(extension_oid, schema, owner, NULL);
}

/*
 * Open an SPI session on the extension's tables, as its owner and with the
 * pinned search_path.  With latest_snapshot, reads see everything committed
 * so far (and this transaction's own changes) whatever the isolation level;
 * otherwise the active snapshot, or the transaction's.  False, with nothing
 * opened, when the extension is not installed.
 */
bool
pgrl_extsql_begin(RlExtSql *session, bool latest_snapshot)
{
	Oid			schema;
	char	   *schema_name;

	memset(session, 0, sizeof(*session));
	if (!pgrl_extension_find(&session->extension_oid, &schema, &session->owner,
							 &session->version))
		return false;
	schema_name = get_namespace_name(schema);
	if (schema_name == NULL)
		return false;
	session->qschema = quote_identifier(schema_name);

	GetUserIdAndSecContext(&session->save_userid, &session->save_sec_context);
	SetUserIdAndSecContext(session->owner,
						   session->save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	session->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", RL_PINNED_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

	if (latest_snapshot || !ActiveSnapshotSet())
	{
		PushActiveSnapshot(latest_snapshot ? GetLatestSnapshot() : GetTransactionSnapshot());
		session->pushed_snapshot = true;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	return true;
}

/*
 * Close a session opened by pgrl_extsql_begin().  An error in between needs
 * no call: aborting the (sub)transaction restores the role, the setting and
 * the snapshot.
 */
void
pgrl_extsql_end(RlExtSql *session)
{
	SPI_finish();
	if (session->pushed_snapshot)
		PopActiveSnapshot();
	AtEOXact_GUC(false, session->save_nestlevel);
	SetUserIdAndSecContext(session->save_userid, session->save_sec_context);
}

/* Run a read-only query with the session's snapshot; purpose names it in errors */
void
pgrl_extsql_query(const char *sql, const char *purpose)
{
	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_ratelimit could not %s: %s", purpose, sql);
}

/*
 * The number of a result column of the last query by name, for
 * SPI_getbinval: reading by name keeps working whatever the order of the
 * SELECT list.  Errors when the result has no such column.
 */
int
pgrl_spi_column(TupleDesc desc, const char *name)
{
	int			column = SPI_fnumber(desc, name);

	if (column <= 0)
		elog(ERROR, "pg_ratelimit query result has no column \"%s\"", name);
	return column;
}

/* A bigint (or timestamptz) column by number, or if_null when NULL */
int64
pgrl_spi_int64(HeapTuple tuple, TupleDesc desc, int column, int64 if_null)
{
	bool		isnull;
	Datum		value = SPI_getbinval(tuple, desc, column, &isnull);

	return isnull ? if_null : DatumGetInt64(value);
}

/*
 * Is an installed version (extversion, "major.minor") at least this one?
 * The tables are those of its scripts: columns added later are not there.
 */
bool
pgrl_version_at_least(const char *version, int major, int minor)
{
	int			have_major = 0;
	int			have_minor = 0;

	if (sscanf(version, "%d.%d", &have_major, &have_minor) < 1)
		return false;
	return have_major > major || (have_major == major && have_minor >= minor);
}
