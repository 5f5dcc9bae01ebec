/* addr.h - socket addresses as people read them. */
#ifndef ECHOCHATD_ADDR_H
#define ECHOCHATD_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Longest "[v6-address%scope]:port" plus NUL. */
#define ADDR_STRLEN 80

const char *addr_format(const struct sockaddr *sa, char *buf, size_t len);
unsigned addr_port(const struct sockaddr *sa);

#endif
