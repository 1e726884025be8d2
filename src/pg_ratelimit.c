/*-------------------------------------------------------------------------
 *
 * pg_ratelimit.c
 *		Module entry point: settings and shared memory are set up when the
 *		library is preloaded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "debug.h"
#include "launcher.h"
#include "pg_ratelimit.h"
#include "settings.h"
#include "shmem.h"
#include "utility.h"

/* From PostgreSQL 18 on, pg_get_loaded_modules() shows the name and version */
#if PG_VERSION_NUM >= 180000
PG_MODULE_MAGIC_EXT(.name = "pg_ratelimit",.version = PGRL_LIBRARY_VERSION);
#else
PG_MODULE_MAGIC;
#endif

void		_PG_init(void);

void
_PG_init(void)
{
	/* Without preloading there is no shared memory: functions say so */
	if (!process_shared_preload_libraries_in_progress)
		return;

	pgrl_preloaded = true;
	pgrl_define_settings();
	pgrl_debug_define_settings();
	MarkGUCPrefixReserved("ratelimit");
	pgrl_install_shmem_hooks();
	pgrl_install_utility_hook();
	pgrl_register_launcher();
}
