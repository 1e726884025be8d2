/*-------------------------------------------------------------------------
 *
 * names.h
 *		Names of models, job types and instances: checking them, and the
 *		shared name -> slot indexes that find them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_NAMES_H
#define RL_NAMES_H

#include "fmgr.h"
#include "utils/hsearch.h"

#include "pg_ratelimit.h"

/* The key of a name in every name index: the name, zero-padded */
typedef struct RlNameKey
{
	char		name[RL_NAME_MAX_LEN + 1];
} RlNameKey;

/* Name -> slot entry of a shared name index */
typedef struct RlNameEntry
{
	RlNameKey	key;			/* hash key: must be first */
	int			slot;
} RlNameEntry;

extern void pgrl_name_key(RlNameKey *key, const char *name);
extern void pgrl_copy_name(char *dest, const char *src, const char *what);
extern void pgrl_copy_name_arg(FunctionCallInfo fcinfo, int argno, char *dest,
							   const char *what);
extern Size pgrl_name_index_size(int size);
extern HTAB *pgrl_name_index_init(const char *name, int size);
extern int	pgrl_name_index_find(HTAB *index, const char *name);
extern bool pgrl_name_index_insert(HTAB *index, const char *name, int slot);
extern void pgrl_name_index_remove(HTAB *index, const char *name);

#endif							/* RL_NAMES_H */
