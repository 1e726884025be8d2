/*-------------------------------------------------------------------------
 *
 * notify.h
 *		NOTIFY rl_capacity.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_NOTIFY_H
#define RL_NOTIFY_H

#include "datatype/timestamp.h"

extern TimestampTz rl_queue_notifications(TimestampTz now);

#endif							/* RL_NOTIFY_H */
