/* daemon.h - classic daemon mode, the pidfile, and dropping root privileges. */
#ifndef ECHOCHATD_DAEMON_H
#define ECHOCHATD_DAEMON_H

#include <stdbool.h>
#include <stddef.h>

int daemon_detach(void);
void daemon_report(int status);
int pidfile_check(const char *path, char *err, size_t errlen);
int pidfile_write(const char *path, char *err, size_t errlen);
void pidfile_remove(const char *path);
int privileges_drop(const char *user, const char *group, char *err, size_t errlen);

#endif
