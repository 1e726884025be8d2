/*-------------------------------------------------------------------------
 *
 * clock.h
 *		The limiter's clock and the test clock's offset.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RL_CLOCK_H
#define RL_CLOCK_H

#include "datatype/timestamp.h"

extern Size pgrl_clock_shmem_size(void);
extern void pgrl_clock_shmem_init(void);
extern TimestampTz pgrl_now(void);
extern int64 pgrl_clock_offset(void);
extern void pgrl_clock_set_offset(int64 offset_us);
extern TimestampTz pgrl_window_start(TimestampTz t, int64 length_us);
extern TimestampTz pgrl_window_at(TimestampTz reached, TimestampTz t, int64 length_us);
extern int64 pgrl_interval_to_us(Interval *interval, const char *what);

#endif							/* RL_CLOCK_H */
