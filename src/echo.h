/* echo.h - the echo service (RFC 862). */
#ifndef ECHOCHATD_ECHO_H
#define ECHOCHATD_ECHO_H

#include "service.h"

/* Pending output above which an echo client is not read from, and where reading resumes. */
#define ECHO_HIGH_WATER ((size_t)256 * 1024)
#define ECHO_LOW_WATER ((size_t)64 * 1024)

#endif
