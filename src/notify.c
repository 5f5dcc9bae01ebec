/* notify.c - talking to systemd: readiness, reload, stop, status, watchdog, inherited sockets.
 * Without libsystemd (--without-systemd) every call is a no-op and no socket is inherited. */
#include "notify.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

static struct event *watchdog_timer;

/* Send one notification; systemd not listening is not an error. */
static void
notify_send(const char *state)
{
	int rc = sd_notify(0, state);

	if (rc < 0)
		log_debug("sd_notify(%s) failed: error %d", state, -rc);
}

bool
notify_enabled(void)
{
	return getenv("NOTIFY_SOCKET") != NULL;
}

void
notify_ready(void)
{
	notify_send("READY=1");
}

/* RELOADING=1 carries the monotonic time, as systemd's reload protocol asks. */
void
notify_reloading(void)
{
	struct timespec ts;
	char state[96];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu",
	         (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
	notify_send(state);
}

void
notify_stopping(void)
{
	notify_send("STOPPING=1");
}

void
notify_status(const char *fmt, ...)
{
	char state[256];
	va_list ap;
	int n;

	if (!notify_enabled())
		return;
	n = snprintf(state, sizeof(state), "STATUS=");
	va_start(ap, fmt);
	vsnprintf(state + n, sizeof(state) - (size_t)n, fmt, ap);
	va_end(ap);
	notify_send(state);
}

static void
notify_on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	notify_send("WATCHDOG=1");
}

/* With WATCHDOG_USEC set, ping from the event loop at half the interval: a stuck loop
 * stops pinging and systemd restarts the service. */
int
notify_watchdog_start(struct event_base *base)
{
	uint64_t usec = 0;
	struct timeval tv;

	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return 0;
	usec /= 2;
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	watchdog_timer = event_new(base, -1, EV_PERSIST, notify_on_watchdog, NULL);
	if (watchdog_timer == NULL || event_add(watchdog_timer, &tv) == -1) {
		log_warnx("cannot start the systemd watchdog timer");
		return -1;
	}
	notify_send("WATCHDOG=1");
	log_info("systemd watchdog: pinging every %llu ms", (unsigned long long)usec / 1000);
	return 0;
}

void
notify_watchdog_stop(void)
{
	if (watchdog_timer != NULL)
		event_free(watchdog_timer);
	watchdog_timer = NULL;
}

/* Sockets passed by systemd (socket activation), with their FileDescriptorName=. */
int
notify_listen_fds(char ***names)
{
	int n = sd_listen_fds_with_names(1, names);

	if (n < 0) {
		log_warnx("sd_listen_fds_with_names failed: error %d", -n);
		return 0;
	}
	return n;
}

#else /* !HAVE_SYSTEMD */

bool
notify_enabled(void)
{
	return false;
}

void
notify_ready(void)
{
}

void
notify_reloading(void)
{
}

void
notify_stopping(void)
{
}

void
notify_status(const char *fmt, ...)
{
	(void)fmt;
}

int
notify_watchdog_start(struct event_base *base)
{
	(void)base;
	return 0;
}

void
notify_watchdog_stop(void)
{
}

int
notify_listen_fds(char ***names)
{
	*names = NULL;
	return 0;
}

#endif
