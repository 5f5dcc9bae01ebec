/* client.h - one connection's life: create, limits, timeouts, graceful FIN, close. */
#ifndef ECHOCHATD_CLIENT_H
#define ECHOCHATD_CLIENT_H

#include <event2/util.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

/* glibc's sys/queue.h lacks the BSD _SAFE variant: the element may be removed in the body. */
#ifndef TAILQ_FOREACH_SAFE
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)                                           \
	for ((var) = TAILQ_FIRST(head); (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1); \
	     (var) = (tvar))
#endif
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "addr.h"

struct bufferevent;
struct evbuffer;
struct event;
struct server;
struct service;

/* Why a client went away: one value per cause, for logs and (later) metrics. */
enum close_reason {
	CLOSE_PEER,          /* the peer closed */
	CLOSE_IDLE,          /* idle_timeout */
	CLOSE_SLOW_CONSUMER, /* too much output queued */
	CLOSE_ERROR,         /* a socket error, e.g. reset by peer */
	CLOSE_SHUTDOWN,      /* the server is shutting down */
	CLOSE_SHUTDOWN_TIMEOUT,
	CLOSE_QUIT, /* the client asked to leave */
};

enum client_flag {
	CLIENT_PEER_EOF = 1u << 0,   /* the peer sent FIN */
	CLIENT_FINISHING = 1u << 1,  /* flushing, then FIN, then waiting for the peer's EOF */
	CLIENT_FIN_SENT = 1u << 2,   /* shutdown(SHUT_WR) done */
	CLIENT_CLOSED = 1u << 3,     /* gone: only the deferred free is left */
};

/* Reasons reading may be paused; reading resumes when none is left. */
enum client_pause {
	PAUSE_BACKPRESSURE = 1u << 0,
	PAUSE_RATE = 1u << 1,
	PAUSE_CLUSTER = 1u << 2, /* chat: a nick claim is out; later lines wait for its answer */
};

struct client {
	TAILQ_ENTRY(client) entry;
	struct server *server;
	const struct service *service;
	struct bufferevent *bev; /* the output queue, made when first needed (or NULL) */
	struct evbuffer *input;  /* what an on_read service has not consumed (or NULL) */
	struct event *read_event; /* the input side: reads are ours (see client_on_readable) */
	struct timeval read_timeout; /* idle_timeout, or shutdown_timeout while finishing */
	bool has_read_timeout;
	evutil_socket_t fd;
	uint64_t id;
	unsigned flags;
	unsigned paused;
	char peer[64]; /* "192.0.2.1:5555" or "[2001:db8::1]:5555" */
	struct addr_ip ip;
	bool has_ip;
	struct timespec started;
	uint64_t bytes_in;
	uint64_t bytes_queued; /* everything handed to the output buffer */
	int socket_error; /* errno of a failed socket call */
	enum close_reason reason;
	char reason_detail[96];
	void *service_data;
};

struct client *client_create(struct server *server, const struct service *service,
                             evutil_socket_t fd, const struct sockaddr *sa, socklen_t salen);
struct evbuffer *client_input(struct client *c);
size_t client_output_length(const struct client *c);
void client_send_buffer(struct client *c, struct evbuffer *buf);
void client_send(struct client *c, const void *data, size_t len);
void client_send_reference(struct client *c, const void *data, size_t len,
                           void (*release)(const void *data, size_t len, void *arg), void *arg);
void client_pause_reading(struct client *c, unsigned why);
void client_resume_reading(struct client *c, unsigned why);
/* The most one read(2) asks for when the daemon reads past libevent's 4 KiB. */
#define CLIENT_READ_CHUNK ((size_t)64 * 1024)
size_t client_read_more(struct client *c, struct evbuffer *into, size_t limit);
size_t client_read_pending(struct client *c, struct evbuffer *into);
void client_finish(struct client *c, enum close_reason reason, const char *detail);
void client_close(struct client *c, enum close_reason reason, const char *detail);
void client_apply_idle_timeout(struct client *c, unsigned seconds);
const char *client_reason_name(enum close_reason reason);

#endif
