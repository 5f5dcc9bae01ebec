/* http.c - the metrics endpoint: /metrics, /healthz, /clients over libevent's evhttp,
 * on the daemon's own event loop. No HTTP parsing of our own. */
#include "http.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <errno.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "server.h"

/* The endpoint as configured: kept across reloads that do not change it. */
struct http_endpoint {
	struct evhttp *http;
	char *bind;
	unsigned port;
	bool listening;
};

static struct http_endpoint endpoint;

/* Send a reply; HEAD gets the headers only. */
static void
http_reply(struct evhttp_request *req, int code, const char *reason, const char *type,
           struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD)
		evbuffer_drain(body, evbuffer_get_length(body));
	evhttp_send_reply(req, code, reason, body);
}

/* Write the connections as a JSON array. */
static void
http_clients_json(struct evbuffer *out, const struct server *s)
{
	const struct client *c;
	struct timespec now;
	bool first = true;

	clock_gettime(CLOCK_MONOTONIC, &now);
	evbuffer_add(out, "[", 1);
	TAILQ_FOREACH(c, &s->clients, entry) {
		const char *nick = NULL, *room = NULL;
		double age = (double)(now.tv_sec - c->started.tv_sec) +
		             (double)(now.tv_nsec - c->started.tv_nsec) / 1e9;
		uint64_t out_pending = client_output_length(c);

		evbuffer_add_printf(out,
		                    "%s\n{\"id\":%llu,\"service\":\"%s\",\"peer\":\"%s\",\"age_seconds\":%.3f,"
		                    "\"bytes_in\":%llu,\"bytes_out\":%llu",
		                    first ? "" : ",", (unsigned long long)c->id, c->service->name,
		                    c->peer, age, (unsigned long long)c->bytes_in,
		                    (unsigned long long)(c->bytes_queued - out_pending));
		/* nicks and room names are ASCII letters, digits, _ and -: nothing to escape */
		if (c->service->id == SERVICE_CHAT && chat_client_info(c, &nick, &room))
			evbuffer_add_printf(out, ",\"nick\":\"%s\",\"room\":\"%s\"", nick,
			                    room != NULL ? room : "");
		evbuffer_add(out, "}", 1);
		first = false;
	}
	evbuffer_add(out, "\n]\n", 3);
}

/* Every request: GET or HEAD of /metrics, /healthz or /clients. */
static void
http_on_request(struct evhttp_request *req, void *arg)
{
	struct server *s = arg;
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	struct evbuffer *body = evbuffer_new();

	if (body == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		evbuffer_add_printf(body, "method not allowed\n");
		http_reply(req, 405, "Method Not Allowed", "text/plain; charset=utf-8", body);
	} else if (path != NULL && strcmp(path, "/metrics") == 0) {
		metrics_format(body, s);
		http_reply(req, HTTP_OK, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
	} else if (path != NULL && strcmp(path, "/healthz") == 0) {
		if (s->shutting_down) {
			evbuffer_add_printf(body, "shutting down\n");
			http_reply(req, 503, "Service Unavailable", "text/plain; charset=utf-8", body);
		} else {
			evbuffer_add_printf(body, "ok\n");
			http_reply(req, HTTP_OK, "OK", "text/plain; charset=utf-8", body);
		}
	} else if (path != NULL && strcmp(path, "/clients") == 0) {
		http_clients_json(body, s);
		http_reply(req, HTTP_OK, "OK", "application/json", body);
	} else {
		evbuffer_add_printf(body, "not found\n");
		http_reply(req, HTTP_NOTFOUND, "Not Found", "text/plain; charset=utf-8", body);
	}
	evbuffer_free(body);
}

/* Close the endpoint. */
void
http_stop(struct server *s)
{
	(void)s;
	if (endpoint.http != NULL) {
		evhttp_free(endpoint.http);
		if (endpoint.listening)
			log_notice("metrics: stopped listening");
	}
	free(endpoint.bind);
	memset(&endpoint, 0, sizeof(endpoint));
}

/* Open, keep or close the endpoint as [metrics] says; returns -1 if it cannot listen. */
int
http_apply(struct server *s)
{
	const struct config *cfg = s->config;
	char **items;
	size_t n;
	int bound = 0;

	if (endpoint.http != NULL && cfg->metrics_enabled && endpoint.port == cfg->metrics_port &&
	    strcmp(endpoint.bind, cfg->metrics_bind) == 0)
		return 0; /* unchanged */
	http_stop(s);
	if (!cfg->metrics_enabled)
		return 0;
	endpoint.http = evhttp_new(s->base);
	endpoint.bind = strdup(cfg->metrics_bind);
	if (endpoint.http == NULL || endpoint.bind == NULL) {
		log_error("metrics: cannot create the HTTP server");
		http_stop(s);
		return -1;
	}
	endpoint.port = cfg->metrics_port;
	/* Every method reaches our callback, which answers 405 itself (with Allow:). */
	evhttp_set_allowed_methods(endpoint.http,
	                           EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                               EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
	                               EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(endpoint.http, http_on_request, s);
	evhttp_set_timeout(endpoint.http, 10);
	n = config_list_split(cfg->metrics_bind, &items);
	for (size_t i = 0; i < n; i++) {
		struct evhttp_bound_socket *sock =
			evhttp_bind_socket_with_handle(endpoint.http, items[i], (ev_uint16_t)cfg->metrics_port);
		if (sock == NULL) {
			log_error("metrics: cannot listen on %s port %u: %s", items[i], cfg->metrics_port,
			          strerror(errno));
			continue;
		}
		bound++;
		endpoint.listening = true;
		{
			struct sockaddr_storage ss;
			socklen_t len = sizeof(ss);
			char name[ADDR_STRLEN];
			if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &len) == 0)
				log_notice("metrics: listening on %s",
				           addr_format((struct sockaddr *)&ss, name, sizeof(name)));
		}
	}
	config_list_free(items, n);
	if (bound == 0) {
		http_stop(s);
		return -1;
	}
	return 0;
}
