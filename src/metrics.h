/* metrics.h - the daemon's counters, and their Prometheus text exposition. */
#ifndef ECHOCHATD_METRICS_H
#define ECHOCHATD_METRICS_H

#include <stdint.h>
#include <time.h>

#include "client.h"
#include "service.h"

struct evbuffer;
struct server;

/* Why a connection was refused at accept. */
enum refuse_reason {
	REFUSE_MAX_CLIENTS,
	REFUSE_PER_ADDRESS,
	REFUSE_FD_EXHAUSTED,
	REFUSE_DENIED,
	REFUSE_COUNT
};

/* The closed-connection reasons as metrics name them (fewer than enum close_reason). */
enum closed_label {
	CLOSED_PEER,
	CLOSED_IDLE,
	CLOSED_SLOW_CONSUMER,
	CLOSED_ERROR,
	CLOSED_SHUTDOWN,
	CLOSED_COUNT
};

struct service_metrics {
	uint64_t accepted;
	uint64_t refused[REFUSE_COUNT];
	uint64_t closed[CLOSED_COUNT];
	uint64_t bytes_received;
	uint64_t bytes_sent;
};

/* One process, one event loop: plain counters, no atomics. */
struct metrics {
	struct service_metrics service[SERVICE_COUNT];
	uint64_t chat_lines_received;
	uint64_t chat_lines_delivered;
	uint64_t chat_slow_consumers;
	uint64_t reloads_ok;
	uint64_t reloads_failed;
	/* [cluster] */
	uint64_t cluster_connected; /* gauge: 1 while both Redis connections are up */
	uint64_t cluster_published;
	uint64_t cluster_received;
	uint64_t cluster_dropped; /* malformed messages from Redis */
	uint64_t cluster_queue_dropped;
	uint64_t cluster_queue_length; /* gauge */
	uint64_t cluster_nodes;        /* gauge: other live nodes */
	time_t start_time;
};

extern struct metrics metrics;

enum closed_label metrics_closed_label(enum close_reason reason);
void metrics_format(struct evbuffer *out, const struct server *s);
void metrics_log_summary(const struct server *s);

#endif
