/*-------------------------------------------------------------------------
 *
 * shmem.h
 *		Setting up pg_ratelimit's shared memory at server start.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_SHMEM_H
#define RL_SHMEM_H

extern void pgrl_install_shmem_hooks(void);

#endif							/* RL_SHMEM_H */
