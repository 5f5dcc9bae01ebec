/* echo.h - the echo service (RFC 862). */
#ifndef ECHOCHATD_ECHO_H
#define ECHOCHATD_ECHO_H

#include "service.h"

/* Pending output above which an echo client is not read from, and where reading resumes. */
#define ECHO_HIGH_WATER ((size_t)256 * 1024)
#define ECHO_LOW_WATER ((size_t)64 * 1024)
/* What libevent 2.1 reads at most per wake-up (EVBUFFER_MAX_READ). */
#define ECHO_LIBEVENT_READ ((size_t)4096)

#endif
