/*-------------------------------------------------------------------------
 *
 * names.c
 *		Names of models, job types and instances: checking them, and the
 *		shared name -> slot indexes that find them.
 *
 * A name index is a fully preallocated shared hash; its owner's lock
 * protects it (the functions here take none).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/shmem.h"
#include "utils/builtins.h"

#include "names.h"

/* The key of a name: zero-padded, so that equal names hash alike */
void
pgrl_name_key(RlNameKey *key, const char *name)
{
	memset(key, 0, sizeof(*key));
	strlcpy(key->name, name, sizeof(key->name));
}

/* Copy a user-supplied name into a fixed buffer, refusing bad names */
void
pgrl_copy_name(char *dest, const char *src, const char *what)
{
	size_t		len = strlen(src);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s name must not be empty", what)));
	if (len > RL_NAME_MAX_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("%s name is too long", what),
				 errdetail("The longest allowed name has %d bytes.", RL_NAME_MAX_LEN)));
	memset(dest, 0, RL_NAME_MAX_LEN + 1);
	memcpy(dest, src, len);
}

/* Copy a name argument into a fixed buffer, refusing NULL and bad names */
void
pgrl_copy_name_arg(FunctionCallInfo fcinfo, int argno, char *dest, const char *what)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	pgrl_copy_name(dest, text_to_cstring(PG_GETARG_TEXT_PP(argno)), what);
}

/* Shared memory of a name index for size names */
Size
pgrl_name_index_size(int size)
{
	return hash_estimate_size(size, sizeof(RlNameEntry));
}

/* Create or attach to a fully preallocated shared name index */
HTAB *
pgrl_name_index_init(const char *name, int size)
{
	HASHCTL		info;

	info.keysize = sizeof(RlNameKey);
	info.entrysize = sizeof(RlNameEntry);
	return ShmemInitHash(name, size, size, &info, HASH_ELEM | HASH_BLOBS);
}

/* The slot of a name, or -1 */
int
pgrl_name_index_find(HTAB *index, const char *name)
{
	RlNameKey	key;
	RlNameEntry *entry;

	pgrl_name_key(&key, name);
	entry = hash_search(index, &key, HASH_FIND, NULL);
	return entry ? entry->slot : -1;
}

/* Add a name -> slot entry; false when the index is full */
bool
pgrl_name_index_insert(HTAB *index, const char *name, int slot)
{
	RlNameKey	key;
	RlNameEntry *entry;

	pgrl_name_key(&key, name);
	entry = hash_search(index, &key, HASH_ENTER_NULL, NULL);
	if (entry == NULL)
		return false;
	entry->slot = slot;
	return true;
}

void
pgrl_name_index_remove(HTAB *index, const char *name)
{
	RlNameKey	key;

	pgrl_name_key(&key, name);
	hash_search(index, &key, HASH_REMOVE, NULL);
}
