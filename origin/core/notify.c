/* notify: sd_notify(3) messages to the service manager, and the watchdog. */
#include "core/notify.h"

#include "core/log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

struct notify_watchdog {
	uv_timer_t timer;
	int (*healthy)(void *arg);
	void *arg;
	int skipping; /* the last tick skipped its ping (logged once per episode) */
};

/* sd_notify returns > 0 when sent, 0 when there is no $NOTIFY_SOCKET. */
static int send_state(const char *state)
{
	int rc = sd_notify(0, state);

	if (rc < 0) {
		log_warn("notify: cannot tell the service manager '%.40s': %s", state, strerror(-rc));
		return rc;
	}
	return 0;
}

int notify_ready(const char *status)
{
	char msg[256];

	if (status == NULL)
		return send_state("READY=1");
	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status);
	return send_state(msg);
}

int notify_reloading(void)
{
	struct timespec ts;
	char msg[80];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
	         (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
	return send_state(msg);
}

int notify_stopping(void)
{
	return send_state("STOPPING=1");
}

static void on_watchdog(uv_timer_t *timer)
{
	notify_watchdog *wd = timer->data;

	if (wd->healthy != NULL && !wd->healthy(wd->arg)) {
		if (!wd->skipping)
			log_error("notify: not pinging the watchdog: an event loop stopped making "
			          "progress");
		wd->skipping = 1;
		return;
	}
	if (wd->skipping)
		log_info("notify: every event loop runs again; pinging the watchdog");
	wd->skipping = 0;
	send_state("WATCHDOG=1");
}

uint64_t notify_watchdog_interval_ms(void)
{
	uint64_t usec = 0;
	/* 0: no watchdog for this process; > 0: usec is its interval. */
	int rc = sd_watchdog_enabled(0, &usec);

	if (rc < 0) {
		log_warn("notify: bad $WATCHDOG_USEC: %s", strerror(-rc));
		return 0;
	}
	if (rc == 0 || usec == 0)
		return 0;
	return usec / 2000 > 0 ? usec / 2000 : 1;
}

int notify_watchdog_start(uv_loop_t *loop, int (*healthy)(void *arg), void *arg,
                          notify_watchdog **out)
{
	notify_watchdog *wd;
	uint64_t every_ms = notify_watchdog_interval_ms();
	int rc;

	*out = NULL;
	if (every_ms == 0)
		return 0;
	wd = calloc(1, sizeof(*wd));
	if (wd == NULL)
		return -ENOMEM;
	wd->healthy = healthy;
	wd->arg = arg;
	rc = uv_timer_init(loop, &wd->timer);
	if (rc != 0) {
		free(wd);
		return rc;
	}
	wd->timer.data = wd;
	uv_timer_start(&wd->timer, on_watchdog, 0, every_ms);
	uv_unref((uv_handle_t *)&wd->timer);
	log_info("notify: watchdog ping every %llu ms", (unsigned long long)every_ms);
	*out = wd;
	return 0;
}

static void on_watchdog_closed(uv_handle_t *handle)
{
	free(handle->data);
}

void notify_watchdog_stop(notify_watchdog *wd)
{
	if (wd == NULL)
		return;
	uv_timer_stop(&wd->timer);
	uv_close((uv_handle_t *)&wd->timer, on_watchdog_closed);
}
