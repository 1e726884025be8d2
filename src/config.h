/*-------------------------------------------------------------------------
 *
 * config.h
 *		Keeping shared memory equal to the committed configuration tables.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_CONFIG_H
#define RL_CONFIG_H

#include "fmgr.h"

extern void pgrl_config_load_if_needed(void);
extern void pgrl_request_config_resync(void);
extern void pgrl_resync_config(void);
extern void pgrl_config_relcache_callback(Datum arg, Oid relid);
extern void pgrl_check_config_triggers(void);
extern void pgrl_config_changed_in_xact(void);
extern void pgrl_config_reinstalled_in_xact(void);

#endif							/* RL_CONFIG_H */
