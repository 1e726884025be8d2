/*-------------------------------------------------------------------------
 *
 * notify.h
 *		NOTIFY rl_capacity and rl_allocation.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_NOTIFY_H
#define RL_NOTIFY_H

#include "datatype/timestamp.h"

extern TimestampTz pgrl_roll_and_queue_notifications(TimestampTz now, TimestampTz *next_refill,
													 int *queued);
extern TimestampTz pgrl_queue_allocation_notice(TimestampTz now, int *queued);

#endif							/* RL_NOTIFY_H */
