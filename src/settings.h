/*-------------------------------------------------------------------------
 *
 * settings.h
 *		The ratelimit.* settings, and where the extension may be used.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_SETTINGS_H
#define RL_SETTINGS_H

extern char *pgrl_database_name;
extern int	pgrl_max_models;
extern int	pgrl_max_job_types;
extern int	pgrl_max_leases;
extern int	pgrl_lease_ttl_s;
extern int	pgrl_max_lease_ttl_s;
extern int	pgrl_max_leases_per_role;
extern int	pgrl_persist_interval_ms;
extern int	pgrl_max_instances;
extern int	pgrl_max_instances_per_role;
extern int	pgrl_instance_timeout_s;
extern int	pgrl_ratio_interval_ms;
extern int	pgrl_min_job_type_slots;
extern int	pgrl_max_provider_pause_s;
extern bool pgrl_enable_test_clock;
extern bool pgrl_preloaded;

extern void pgrl_define_settings(void);
extern bool pgrl_in_served_database(void);
extern void pgrl_require_library_loaded(void);
extern void pgrl_require_library(void);
extern void pgrl_require_primary(const char *action);

#endif							/* RL_SETTINGS_H */
