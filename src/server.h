/* server.h - the event base, listeners, accept, signals, reload and shutdown. */
#ifndef ECHOCHATD_SERVER_H
#define ECHOCHATD_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "addr.h"
#include "client.h"
#include "log.h"
#include "service.h"

struct event;
struct event_base;
struct evconnlistener;
struct config;

/* One listening socket of one service. */
struct listener {
	TAILQ_ENTRY(listener) entry;
	struct server *server;
	const struct service *service;
	struct evconnlistener *evl;
	evutil_socket_t fd;
	char *bind_item;      /* the [service] bind item it came from */
	unsigned config_port; /* the port asked for (0: any) */
	unsigned backlog;
	char name[ADDR_STRLEN]; /* the address actually bound */
	bool keep;              /* still wanted by the configuration being applied */
	bool inherited;         /* passed by systemd: kept across reloads, never rebound */
};

TAILQ_HEAD(listener_list, listener);
TAILQ_HEAD(client_list, client);

struct server {
	struct event_base *base;
	struct config *config;
	const char *config_path; /* NULL: built-in defaults */
	char *const *overrides;
	size_t override_count;

	struct listener_list listeners;
	struct client_list clients;
	struct client_list closed; /* freed from reap_event, out of any callback */
	unsigned client_count;
	unsigned service_clients[SERVICE_COUNT];
	unsigned max_clients; /* max_clients as RLIMIT_NOFILE allows */
	uint64_t next_client_id;

	struct event *signal_events[4];
	struct event *reap_event;
	struct event *shutdown_timer;
	struct event *accept_retry_timer;
	struct event *status_timer;
	char status[128]; /* the last STATUS= sent to systemd */
	bool accept_paused;
	bool shutting_down;
	struct log_ratelimit full_log;
	struct log_ratelimit accept_log;
	struct log_ratelimit per_address_log;
	struct log_ratelimit acl_log;
	struct addr_acl allow; /* compiled from the configuration */
	struct addr_acl deny;
	struct addr_counter *per_address; /* open connections per peer address */
	int spare_fd; /* given up when descriptors run out, to accept-and-close */
};

struct server *server_create(struct config *cfg, const char *config_path, char *const *overrides,
                             size_t override_count);
int server_start(struct server *s);
int server_run(struct server *s);
void server_free(struct server *s);

void server_client_added(struct server *s, struct client *c);
void server_client_removed(struct server *s, struct client *c);

#endif
