/* metrics.c - the daemon's counters, and their Prometheus text exposition (0.0.4). */
#include "metrics.h"

#include <event2/buffer.h>

#include "chat.h"
#include "config.h"
#include "log.h"
#include "server.h"

struct metrics metrics;

static const char *const refuse_names[REFUSE_COUNT] = {
	[REFUSE_MAX_CLIENTS] = "max_clients",
	[REFUSE_PER_ADDRESS] = "per_address",
	[REFUSE_FD_EXHAUSTED] = "fd_exhausted",
	[REFUSE_DENIED] = "denied",
};

static const char *const closed_names[CLOSED_COUNT] = {
	[CLOSED_PEER] = "peer",
	[CLOSED_IDLE] = "idle",
	[CLOSED_SLOW_CONSUMER] = "slow_consumer",
	[CLOSED_ERROR] = "error",
	[CLOSED_SHUTDOWN] = "shutdown",
};

/* Map a close reason to its metrics label: a /quit is the peer's choice, a shutdown
 * that timed out is still the shutdown. */
enum closed_label
metrics_closed_label(enum close_reason reason)
{
	switch (reason) {
	case CLOSE_PEER:
	case CLOSE_QUIT:
		return CLOSED_PEER;
	case CLOSE_IDLE:
		return CLOSED_IDLE;
	case CLOSE_SLOW_CONSUMER:
		return CLOSED_SLOW_CONSUMER;
	case CLOSE_ERROR:
		return CLOSED_ERROR;
	case CLOSE_SHUTDOWN:
	case CLOSE_SHUTDOWN_TIMEOUT:
		return CLOSED_SHUTDOWN;
	}
	return CLOSED_ERROR;
}

/* Write "# HELP" and "# TYPE" lines. */
static void
header(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample per service of a per-service value. */
static void
per_service(struct evbuffer *out, const char *name, const char *type, const char *help,
            uint64_t (*value)(const struct server *, int), const struct server *s)
{
	header(out, name, type, help);
	for (int id = 0; id < SERVICE_COUNT; id++)
		evbuffer_add_printf(out, "%s{service=\"%s\"} %llu\n", name, services[id]->name,
		                    (unsigned long long)value(s, id));
}

static uint64_t
current_connections(const struct server *s, int id)
{
	return s->service_clients[id];
}

static uint64_t
accepted(const struct server *s, int id)
{
	(void)s;
	return metrics.service[id].accepted;
}

static uint64_t
received(const struct server *s, int id)
{
	(void)s;
	return metrics.service[id].bytes_received;
}

static uint64_t
sent(const struct server *s, int id)
{
	(void)s;
	return metrics.service[id].bytes_sent;
}

/* The [cluster] metrics: one line each, only when the cluster is enabled. */
static void
cluster_metrics_format(struct evbuffer *out)
{
	static const struct {
		const char *name, *type, *help;
		const uint64_t *value;
	} rows[] = {
		{"echochatd_cluster_connected", "gauge",
		 "1 while both Redis connections are up, else 0.", &metrics.cluster_connected},
		{"echochatd_cluster_messages_published_total", "counter",
		 "Commands and publications sent to Redis.", &metrics.cluster_published},
		{"echochatd_cluster_messages_received_total", "counter",
		 "Messages received on the cluster channels.", &metrics.cluster_received},
		{"echochatd_cluster_messages_dropped_total", "counter",
		 "Malformed messages from Redis, dropped.", &metrics.cluster_dropped},
		{"echochatd_cluster_queue_dropped_total", "counter",
		 "Publications dropped because the outage queue was full.",
		 &metrics.cluster_queue_dropped},
		{"echochatd_cluster_queue_length", "gauge",
		 "Publications waiting for Redis to come back.", &metrics.cluster_queue_length},
		{"echochatd_cluster_nodes", "gauge", "Other live nodes of the cluster.",
		 &metrics.cluster_nodes},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		header(out, rows[i].name, rows[i].type, rows[i].help);
		evbuffer_add_printf(out, "%s %llu\n", rows[i].name, (unsigned long long)*rows[i].value);
	}
}

/* The whole exposition, in the Prometheus text format 0.0.4. */
void
metrics_format(struct evbuffer *out, const struct server *s)
{
	header(out, "echochatd_build_info", "gauge", "Build information; the value is always 1.");
	evbuffer_add_printf(out, "echochatd_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
	header(out, "echochatd_process_start_time_seconds", "gauge",
	       "Start time of the process since the Unix epoch, in seconds.");
	evbuffer_add_printf(out, "echochatd_process_start_time_seconds %lld\n",
	                    (long long)metrics.start_time);
	per_service(out, "echochatd_connections", "gauge", "Connections open now.",
	            current_connections, s);
	per_service(out, "echochatd_connections_accepted_total", "counter",
	            "Connections accepted and taken into service.", accepted, s);
	header(out, "echochatd_connections_refused_total", "counter",
	       "Connections refused at accept, by reason.");
	for (int id = 0; id < SERVICE_COUNT; id++)
		for (int r = 0; r < REFUSE_COUNT; r++)
			evbuffer_add_printf(out,
			                    "echochatd_connections_refused_total{service=\"%s\",reason=\"%s\"} %llu\n",
			                    services[id]->name, refuse_names[r],
			                    (unsigned long long)metrics.service[id].refused[r]);
	header(out, "echochatd_connections_closed_total", "counter",
	       "Connections closed, by reason.");
	for (int id = 0; id < SERVICE_COUNT; id++)
		for (int r = 0; r < CLOSED_COUNT; r++)
			evbuffer_add_printf(out,
			                    "echochatd_connections_closed_total{service=\"%s\",reason=\"%s\"} %llu\n",
			                    services[id]->name, closed_names[r],
			                    (unsigned long long)metrics.service[id].closed[r]);
	per_service(out, "echochatd_received_bytes_total", "counter",
	            "Bytes received from clients (for echo, these are its messages).", received, s);
	per_service(out, "echochatd_sent_bytes_total", "counter",
	            "Bytes written to clients' sockets.", sent, s);
	header(out, "echochatd_chat_lines_received_total", "counter",
	       "Complete input lines received from chat clients.");
	evbuffer_add_printf(out, "echochatd_chat_lines_received_total %llu\n",
	                    (unsigned long long)metrics.chat_lines_received);
	header(out, "echochatd_chat_lines_delivered_total", "counter",
	       "Lines queued to chat clients (a broadcast counts once per receiver).");
	evbuffer_add_printf(out, "echochatd_chat_lines_delivered_total %llu\n",
	                    (unsigned long long)metrics.chat_lines_delivered);
	header(out, "echochatd_chat_rooms", "gauge", "Chat rooms that exist now.");
	evbuffer_add_printf(out, "echochatd_chat_rooms %u\n", chat_room_count());
	header(out, "echochatd_chat_members", "gauge", "Chat users in a room now.");
	evbuffer_add_printf(out, "echochatd_chat_members %u\n", chat_member_count());
	header(out, "echochatd_chat_slow_consumers_total", "counter",
	       "Chat clients disconnected because their output queue passed max_output.");
	evbuffer_add_printf(out, "echochatd_chat_slow_consumers_total %llu\n",
	                    (unsigned long long)metrics.chat_slow_consumers);
	header(out, "echochatd_config_reloads_total", "counter",
	       "Configuration reloads (SIGHUP), by result.");
	evbuffer_add_printf(out, "echochatd_config_reloads_total{result=\"ok\"} %llu\n",
	                    (unsigned long long)metrics.reloads_ok);
	evbuffer_add_printf(out, "echochatd_config_reloads_total{result=\"failed\"} %llu\n",
	                    (unsigned long long)metrics.reloads_failed);
	if (s->config->cluster_enabled)
		cluster_metrics_format(out);
}

/* One log line with the main counters (SIGUSR1). */
void
metrics_log_summary(const struct server *s)
{
	const struct service_metrics *e = &metrics.service[SERVICE_ECHO];
	const struct service_metrics *c = &metrics.service[SERVICE_CHAT];

	log_notice("stats: %u clients (echo %u, chat %u), %u rooms; accepted echo %llu chat %llu; "
	           "bytes in/out echo %llu/%llu chat %llu/%llu; chat lines in %llu out %llu; "
	           "slow consumers %llu; reloads %llu ok %llu failed",
	           s->client_count, s->service_clients[SERVICE_ECHO],
	           s->service_clients[SERVICE_CHAT], chat_room_count(),
	           (unsigned long long)e->accepted, (unsigned long long)c->accepted,
	           (unsigned long long)e->bytes_received, (unsigned long long)e->bytes_sent,
	           (unsigned long long)c->bytes_received, (unsigned long long)c->bytes_sent,
	           (unsigned long long)metrics.chat_lines_received,
	           (unsigned long long)metrics.chat_lines_delivered,
	           (unsigned long long)metrics.chat_slow_consumers,
	           (unsigned long long)metrics.reloads_ok, (unsigned long long)metrics.reloads_failed);
}
