/* service.h - what a service (echo, chat) plugs into the server: a table of callbacks. */
#ifndef ECHOCHATD_SERVICE_H
#define ECHOCHATD_SERVICE_H

#include <stddef.h>

struct client;
struct config;
struct service_config;

enum service_id {
	SERVICE_ECHO,
	SERVICE_CHAT,
	SERVICE_COUNT
};

/*
 * Accept, close and graceful FIN live once, in client.c; a service only says what
 * happens to bytes. Callbacks that may be left NULL say so.
 */
struct service {
	const char *name;
	enum service_id id;
	/* Pending output above which the client is not read from (0: never pause), and
	 * the mark below which reading resumes. */
	size_t output_high_water;
	size_t output_low_water;
	/* SO_SNDBUF for its sockets (0: the kernel's autotuning), so that what a client
	 * that does not read can pin in kernel memory is bounded too. */
	int socket_sndbuf;
	/* Sent (best effort) to a connection refused for too many from its address. */
	const char *refusal_line;

	/* A client was accepted (may be NULL). */
	void (*on_connect)(struct client *c);
	/* Bytes were read: with on_data, they are handed over as they are (valid only during
	 * the call) and the input buffer stays unused; else they wait in the client's input
	 * buffer (client_input) and on_read is called. One of the two is set. */
	void (*on_data)(struct client *c, const unsigned char *data, size_t len);
	void (*on_read)(struct client *c);
	/* The peer sent FIN; everything it sent was given to on_read first. NULL: finish. */
	void (*on_eof)(struct client *c);
	/* The client is about to leave gracefully (c->reason says why): queue what is owed
	 * before the FIN (may be NULL). */
	void (*on_finish)(struct client *c);
	/* The client is going away: free the service's state (may be NULL). */
	void (*on_close)(struct client *c);
};

/* Return the settings of a service. */
const struct service_config *service_config_of(const struct config *cfg, enum service_id id);

extern const struct service echo_service;
extern const struct service chat_service;
extern const struct service *const services[SERVICE_COUNT];

#endif
