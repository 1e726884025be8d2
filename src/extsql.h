/*-------------------------------------------------------------------------
 *
 * extsql.h
 *		Running the extension's own SQL safely: as the extension's owner,
 *		with search_path pinned to pg_catalog.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_EXTSQL_H
#define RL_EXTSQL_H

#include "access/htup.h"
#include "access/tupdesc.h"

/* The only search_path the extension's own SQL ever runs with */
#define RL_PINNED_SEARCH_PATH	"pg_catalog, pg_temp"

/* An open SPI session on the extension's tables; see extsql.c */
typedef struct RlExtSql
{
	Oid			extension_oid;
	Oid			owner;
	const char *qschema;		/* the extension's schema, quoted */
	char	   *version;		/* the installed version (extversion): the
								 * tables are of its script */

	/* what pgrl_extsql_end() restores */
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	bool		pushed_snapshot;
} RlExtSql;

extern bool pgrl_extension_lookup(Oid *extension_oid, Oid *schema, Oid *owner);
extern bool pgrl_extsql_begin(RlExtSql *session, bool latest_snapshot);
extern void pgrl_extsql_end(RlExtSql *session);
extern void pgrl_extsql_query(const char *sql, const char *purpose);
extern int	pgrl_spi_column(TupleDesc desc, const char *name);
extern int64 pgrl_spi_int64(HeapTuple tuple, TupleDesc desc, int column, int64 if_null);
extern bool pgrl_version_at_least(const char *version, int major, int minor);

#endif							/* RL_EXTSQL_H */
