/* notify: tells the service manager (systemd, Type=notify or notify-reload)
 * how the process is doing: ready, reloading, stopping, and the watchdog's
 * keep-alive. The only includer of <systemd/sd-daemon.h>.
 *
 * Without $NOTIFY_SOCKET (not started by systemd) every call does nothing
 * and returns 0, so the programs run the same under a shell or cron.
 *
 * Threading: notify_ready, notify_reloading and notify_stopping may be
 * called from any thread; the watchdog timer runs on the loop it was
 * started on. */
#ifndef SAYIN_NOTIFY_H
#define SAYIN_NOTIFY_H

#include <stdint.h>
#include <uv.h>

/* "READY=1" and a STATUS= line (status may be NULL). Call once listening,
 * and again after a reload. Returns 0 or a negative errno (logged). */
int notify_ready(const char *status);
/* "RELOADING=1" with MONOTONIC_USEC, as systemd's Type=notify-reload wants;
 * follow with notify_ready when the reload is done (or refused). */
int notify_reloading(void);
/* "STOPPING=1": the process is finishing its work before it exits. */
int notify_stopping(void);

typedef struct notify_watchdog notify_watchdog;

/* The interval, in ms, at which the watchdog is pinged (half of
 * $WATCHDOG_USEC), or 0 when systemd asked for no watchdog for this
 * process. Programs with more loops than the one that pings use it to pace
 * their loops' heartbeats. */
uint64_t notify_watchdog_interval_ms(void);

/* When notify_watchdog_interval_ms() > 0, starts a timer on loop that
 * sends "WATCHDOG=1" at that interval; else *out is NULL and nothing runs.
 * Before each ping healthy(arg) is asked, when given: 0 skips the ping (so
 * systemd, seeing none for the whole WatchdogSec, restarts the service).
 * The timer is unref'd: it never keeps the loop alive. The pings come from
 * loop's thread, so a loop that hangs stops them too. Returns 0, or a
 * negative errno (nothing started). */
int notify_watchdog_start(uv_loop_t *loop, int (*healthy)(void *arg), void *arg,
                          notify_watchdog **out);
/* Stops and frees the timer (its memory goes in the close callback; the
 * loop must run once more). NULL is a no-op. */
void notify_watchdog_stop(notify_watchdog *wd);

#endif
