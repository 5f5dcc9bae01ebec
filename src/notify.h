/* notify.h - talking to systemd: readiness, reload, stop, status, watchdog, inherited sockets. */
#ifndef ECHOCHATD_NOTIFY_H
#define ECHOCHATD_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool notify_enabled(void);
int notify_watchdog_start(struct event_base *base);
void notify_watchdog_stop(void);
/* The first inherited descriptor (SD_LISTEN_FDS_START). */
#define NOTIFY_LISTEN_FDS_START 3
int notify_listen_fds(char ***names);

#endif
