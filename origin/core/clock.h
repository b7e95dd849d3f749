/* clock: the one place the programs read the time. Wall-clock time for
 * what is stored or shown (dates, leases, ages), the monotonic clock for
 * durations (stage timings, timeouts), which never jumps with the wall
 * clock. Threading: any thread; no state. */
#ifndef SAYIN_CORE_CLOCK_H
#define SAYIN_CORE_CLOCK_H

#include <stdint.h>

/* Unix time in milliseconds (CLOCK_REALTIME). */
int64_t clock_now_ms(void);
/* Milliseconds on the monotonic clock, from an arbitrary start. */
int64_t clock_mono_ms(void);
/* The same with sub-millisecond precision, for stage timings. */
double clock_mono_ms_f(void);

#endif
