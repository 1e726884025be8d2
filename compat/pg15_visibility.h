/*
 * pg15_visibility.h
 *		What PostgreSQL 16's headers do for a library built with
 *		-fvisibility=hidden, for PostgreSQL 15 and older.
 *
 * The Makefile forces this header ahead of every source file (-include) when
 * PGXS does not hide symbols itself, as it does from PostgreSQL 16 on.  It
 * makes PGDLLEXPORT mean visibility("default") (c.h leaves it empty unless
 * defined before), and then declares with it, as PostgreSQL 16's fmgr.h
 * does, the names PostgreSQL looks up in the library: _PG_init, and each
 * function of PG_FUNCTION_INFO_V1 (PostgreSQL 15 marks only its pg_finfo_
 * record).  Pg_magic_func is marked by fmgr.h already.
 */
#ifndef PG15_VISIBILITY_H
#define PG15_VISIBILITY_H

#define PGDLLEXPORT __attribute__((visibility("default")))

#include "postgres.h"
#include "fmgr.h"

extern PGDLLEXPORT void _PG_init(void);

#undef PG_FUNCTION_INFO_V1
#define PG_FUNCTION_INFO_V1(funcname) \
extern PGDLLEXPORT Datum funcname(PG_FUNCTION_ARGS); \
extern PGDLLEXPORT const Pg_finfo_record * CppConcat(pg_finfo_,funcname)(void); \
const Pg_finfo_record * \
CppConcat(pg_finfo_,funcname) (void) \
{ \
	static const Pg_finfo_record my_finfo = { 1 }; \
	return &my_finfo; \
} \
extern int no_such_variable

#endif							/* PG15_VISIBILITY_H */
