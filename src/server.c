/* server.c - the event base, listeners, accept, signals, reload and shutdown. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "chat.h"
#include "cluster.h"
#include "config.h"
#include "http.h"
#include "metrics.h"
#include "notify.h"

/* Descriptors kept free for listeners, the log, libevent's own and a spare. */
#define FD_RESERVE 32
/* How long a listener rests after accept() ran out of descriptors. */
#define ACCEPT_RETRY_MS 250

static const int handled_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};

/* Return the name of a signal we handle. */
static const char *
signal_name(int signo)
{
	switch (signo) {
	case SIGTERM:
		return "SIGTERM";
	case SIGINT:
		return "SIGINT";
	case SIGHUP:
		return "SIGHUP";
	case SIGUSR1:
		return "SIGUSR1";
	default:
		return "signal";
	}
}

/* Return the settings of a service. */
const struct service_config *
service_config_of(const struct config *cfg, enum service_id id)
{
	switch (id) {
	case SERVICE_CHAT:
		return &cfg->chat;
	case SERVICE_ECHO:
	case SERVICE_COUNT:
		break;
	}
	return &cfg->echo;
}

const struct service *const services[SERVICE_COUNT] = {
	[SERVICE_ECHO] = &echo_service,
	[SERVICE_CHAT] = &chat_service,
};

/* Make a socket listening on sa; returns the fd, or -1 with errno set. */
static evutil_socket_t
listen_socket(const struct sockaddr *sa, socklen_t salen, unsigned backlog)
{
	int one = 1, saved;
	evutil_socket_t fd;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	/* SO_REUSEADDR: a restart binds while old connections sit in TIME_WAIT. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
		goto fail;
	/* v6-only, so that 0.0.0.0 and :: can both be bound on one port. */
	if (sa->sa_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
		goto fail;
	if (bind(fd, sa, salen) == -1 || listen(fd, (int)backlog) == -1)
		goto fail;
	return fd;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

static void server_on_accept(struct evconnlistener *, evutil_socket_t, struct sockaddr *, int,
                             void *);
static void server_on_accept_error(struct evconnlistener *, void *);

/* Wrap a listening fd into a listener of svc; takes the fd even on failure. */
static struct listener *
listener_add(struct server *s, const struct service *svc, evutil_socket_t fd, const char *item,
             unsigned config_port, unsigned backlog, bool inherited)
{
	struct listener *l = calloc(1, sizeof(*l));
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);

	if (l == NULL || (l->bind_item = strdup(item)) == NULL) {
		log_warn("%s: listener", svc->name);
		free(l);
		close(fd);
		return NULL;
	}
	l->server = s;
	l->service = svc;
	l->fd = fd;
	l->config_port = config_port;
	l->backlog = backlog;
	l->keep = true;
	l->inherited = inherited;
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0)
		addr_format((struct sockaddr *)&ss, l->name, sizeof(l->name));
	/* backlog 0: the socket already listens. */
	l->evl = evconnlistener_new(s->base, server_on_accept, l,
	                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (l->evl == NULL) {
		log_warnx("%s: cannot watch %s", svc->name, l->name);
		close(fd);
		free(l->bind_item);
		free(l);
		return NULL;
	}
	evconnlistener_set_error_cb(l->evl, server_on_accept_error);
	if (s->accept_paused)
		evconnlistener_disable(l->evl);
	TAILQ_INSERT_TAIL(&s->listeners, l, entry);
	log_notice("%s: listening on %s%s", svc->name, l->name,
	           inherited ? " (socket from systemd)" : "");
	return l;
}

/* Close a listening socket. */
static void
listener_free(struct server *s, struct listener *l, bool say)
{
	TAILQ_REMOVE(&s->listeners, l, entry);
	if (say)
		log_notice("%s: stopped listening on %s", l->service->name, l->name);
	evconnlistener_free(l->evl);
	free(l->bind_item);
	free(l);
}

/*
 * Open the sockets of one bind item of a service. A missing address family (no IPv6)
 * or an address this host lacks is a warning; anything else is an error. Returns the
 * number of errors. With port 0 every address of a service shares the first one's port.
 */
static int
listener_open_item(struct server *s, const struct service *svc, const struct service_config *sc,
                   const char *item, unsigned *shared_port)
{
	struct addrinfo hints, *res, *ai;
	unsigned char probe[sizeof(struct in6_addr)];
	char portstr[8], name[ADDR_STRLEN];
	int rc, errors = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (inet_pton(AF_INET, item, probe) == 1 || inet_pton(AF_INET6, item, probe) == 1)
		hints.ai_flags |= AI_NUMERICHOST;
	snprintf(portstr, sizeof(portstr), "%u", sc->port != 0 ? sc->port : *shared_port);
	rc = getaddrinfo(item, portstr, &hints, &res);
	if (rc != 0) {
		log_error("%s: cannot resolve %s: %s", svc->name, item, gai_strerror(rc));
		return 1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		evutil_socket_t fd = listen_socket(ai->ai_addr, ai->ai_addrlen, sc->backlog);
		struct listener *l;

		if (fd == -1 && errno == EADDRINUSE && sc->port == 0 && *shared_port != 0) {
			/* The shared ephemeral port is taken on this address: any port will do. */
			if (ai->ai_family == AF_INET)
				((struct sockaddr_in *)(void *)ai->ai_addr)->sin_port = 0;
			else if (ai->ai_family == AF_INET6)
				((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_port = 0;
			fd = listen_socket(ai->ai_addr, ai->ai_addrlen, sc->backlog);
		}
		if (fd == -1) {
			addr_format(ai->ai_addr, name, sizeof(name));
			if (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL) {
				log_warn("%s: cannot listen on %s (skipped)", svc->name, name);
				continue;
			}
			log_error("%s: cannot listen on %s: %s", svc->name, name, strerror(errno));
			errors++;
			continue;
		}
		l = listener_add(s, svc, fd, item, sc->port, sc->backlog, false);
		if (l == NULL) {
			errors++;
			continue;
		}
		if (sc->port == 0 && *shared_port == 0) {
			struct sockaddr_storage ss;
			socklen_t sslen = sizeof(ss);
			if (getsockname(l->fd, (struct sockaddr *)&ss, &sslen) == 0)
				*shared_port = addr_port((struct sockaddr *)&ss);
		}
	}
	freeaddrinfo(res);
	return errors;
}

/* Tell whether systemd passed sockets for svc. */
static bool
server_has_inherited(const struct server *s, const struct service *svc)
{
	const struct listener *l;

	TAILQ_FOREACH(l, &s->listeners, entry)
		if (l->service == svc && l->inherited)
			return true;
	return false;
}

/*
 * Take the sockets systemd passed (socket activation), by FileDescriptorName= ("echo",
 * "chat"); a socket with another name or of another kind is closed with a warning.
 */
static void
server_adopt_inherited(struct server *s)
{
	char **names = NULL;
	int n = notify_listen_fds(&names);

	for (int i = 0; i < n; i++) {
		evutil_socket_t fd = NOTIFY_LISTEN_FDS_START + i;
		const struct service *svc = NULL;
		int type = 0, listening = 0;
		socklen_t len = sizeof(type);

		for (int id = 0; id < SERVICE_COUNT; id++)
			if (names != NULL && names[i] != NULL && strcmp(names[i], services[id]->name) == 0)
				svc = services[id];
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1 || type != SOCK_STREAM ||
		    (len = sizeof(listening),
		     getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == -1) ||
		    !listening)
			svc = NULL;
		if (svc == NULL) {
			log_warnx("socket %d from systemd (FileDescriptorName=%s) is not a listening "
			          "stream socket named echo or chat: closed",
			          fd, names != NULL && names[i] != NULL ? names[i] : "?");
			close(fd);
			continue;
		}
		evutil_make_socket_nonblocking(fd);
		evutil_make_socket_closeonexec(fd);
		listener_add(s, svc, fd, "(systemd)", 0, 0, true);
	}
	if (names != NULL) {
		for (int i = 0; i < n; i++)
			free(names[i]);
		free(names);
	}
}

/*
 * Make the listening sockets match the configuration: keep those still wanted (a
 * changed backlog is applied in place), open the new ones, close the rest. Returns
 * the number of errors; every enabled service must end with at least one socket.
 */
static int
server_apply_listeners(struct server *s)
{
	struct listener *l, *next;
	int errors = 0;

	TAILQ_FOREACH(l, &s->listeners, entry)
		l->keep = l->inherited;
	for (int id = 0; id < SERVICE_COUNT; id++) {
		const struct service *svc = services[id];
		const struct service_config *sc = service_config_of(s->config, svc->id);
		unsigned shared_port = 0, count = 0;
		int service_errors = 0;
		char **items;
		size_t nitems;

		/* A service systemd passed sockets for is served on those alone. */
		if (!sc->enabled || server_has_inherited(s, svc))
			continue;
		nitems = config_list_split(sc->bind, &items);
		for (size_t i = 0; i < nitems; i++) {
			bool found = false;
			TAILQ_FOREACH(l, &s->listeners, entry) {
				if (l->service != svc || l->config_port != sc->port ||
				    strcmp(l->bind_item, items[i]) != 0)
					continue;
				found = true;
				l->keep = true;
				if (l->backlog != sc->backlog && listen(l->fd, (int)sc->backlog) == 0)
					l->backlog = sc->backlog;
			}
			if (!found)
				service_errors += listener_open_item(s, svc, sc, items[i], &shared_port);
		}
		config_list_free(items, nitems);
		TAILQ_FOREACH(l, &s->listeners, entry)
			if (l->service == svc && l->keep)
				count++;
		/* Without sockets the service cannot run; say so unless an error already did. */
		if (count == 0 && service_errors == 0) {
			log_error("%s: no listening socket could be opened", svc->name);
			service_errors++;
		}
		errors += service_errors;
	}
	TAILQ_FOREACH_SAFE(l, &s->listeners, entry, next)
		if (!l->keep)
			listener_free(s, l, true);
	return errors;
}

/* Compile [server] allow and deny (validated when the configuration was read). */
static void
server_apply_acls(struct server *s)
{
	char why[256];

	addr_acl_free(&s->allow);
	addr_acl_free(&s->deny);
	if (addr_acl_parse(s->config->allow, &s->allow, why, sizeof(why)) == -1 ||
	    addr_acl_parse(s->config->deny, &s->deny, why, sizeof(why)) == -1)
		log_error("[server] allow/deny: %s", why);
}

/* Fit max_clients under RLIMIT_NOFILE, raising the soft limit to the hard one first. */
static void
server_apply_limits(struct server *s)
{
	rlim_t needed = (rlim_t)s->config->max_clients + FD_RESERVE;
	struct rlimit rl;

	s->max_clients = s->config->max_clients;
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
		log_warn("getrlimit(RLIMIT_NOFILE)");
		return;
	}
	if (rl.rlim_cur < needed && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			log_warn("setrlimit(RLIMIT_NOFILE, %llu)", (unsigned long long)rl.rlim_max);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < needed) {
		s->max_clients = rl.rlim_cur > (rlim_t)2 * FD_RESERVE ? (unsigned)(rl.rlim_cur - FD_RESERVE) : 1;
		log_warnx("max_clients = %u does not fit the limit of %llu open files: using %u",
		          s->config->max_clients, (unsigned long long)rl.rlim_cur, s->max_clients);
	}
}

/* " (N more since the last message)" after a rate-limited line, when some were held back. */
static const char *
suppressed_note(unsigned long suppressed, char *buf, size_t len)
{
	if (suppressed == 0)
		return "";
	snprintf(buf, len, " (%lu more since the last message)", suppressed);
	return buf;
}

/* Stop accepting on every listener for a while (descriptors ran out). */
static void
server_pause_accepting(struct server *s, int err)
{
	struct timeval tv = {0, (suseconds_t)ACCEPT_RETRY_MS * 1000};
	struct listener *l;

	if (!s->accept_paused)
		log_warnx("accept: %s: pausing listeners until descriptors are free",
		          strerror(err));
	s->accept_paused = true;
	TAILQ_FOREACH(l, &s->listeners, entry)
		evconnlistener_disable(l->evl);
	evtimer_add(s->accept_retry_timer, &tv);
}

/* Listen again after a pause; a failing accept() will pause again. */
static void
server_resume_accepting(struct server *s)
{
	struct listener *l;

	if (!s->accept_paused || s->shutting_down)
		return;
	TAILQ_FOREACH(l, &s->listeners, entry)
		evconnlistener_enable(l->evl);
}

static void
server_on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
	server_resume_accepting(arg);
}

/* A connection was accepted on a listener. */
static void
server_on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa, int salen,
                 void *arg)
{
	struct listener *l = arg;
	struct server *s = l->server;
	unsigned long suppressed;
	char peer[ADDR_STRLEN], note[64];
	struct addr_ip ip;
	bool has_ip = addr_ip_from_sockaddr(sa, &ip);

	if (s->accept_paused) {
		s->accept_paused = false;
		log_notice("accepting connections again");
	}
	if (has_ip && ((s->allow.count > 0 && !addr_acl_match(&s->allow, &ip)) ||
	               addr_acl_match(&s->deny, &ip))) {
		if (log_ratelimit_pass(&s->acl_log, time(NULL), &suppressed))
			log_info("%s: %s refused: address not allowed%s", l->service->name,
			         addr_format(sa, peer, sizeof(peer)),
			         suppressed_note(suppressed, note, sizeof(note)));
		metrics.service[l->service->id].refused[REFUSE_DENIED]++;
		close(fd);
		return;
	}
	if (has_ip && s->config->max_clients_per_address != 0 &&
	    addr_counter_get(s->per_address, &ip) >= s->config->max_clients_per_address) {
		const char *line = l->service->refusal_line;
		if (line != NULL && send(fd, line, strlen(line), MSG_DONTWAIT | MSG_NOSIGNAL) == -1) {
			/* best effort: the connection is refused either way */
		}
		if (log_ratelimit_pass(&s->per_address_log, time(NULL), &suppressed))
			log_warnx("%s: %s refused: max_clients_per_address (%u) reached%s",
			          l->service->name, addr_format(sa, peer, sizeof(peer)),
			          s->config->max_clients_per_address,
			          suppressed_note(suppressed, note, sizeof(note)));
		metrics.service[l->service->id].refused[REFUSE_PER_ADDRESS]++;
		close(fd);
		return;
	}
	if (s->client_count >= s->max_clients) {
		if (log_ratelimit_pass(&s->full_log, time(NULL), &suppressed))
			log_warnx("%s: %s refused: max_clients (%u) reached%s", l->service->name,
			          addr_format(sa, peer, sizeof(peer)), s->max_clients,
			          suppressed_note(suppressed, note, sizeof(note)));
		metrics.service[l->service->id].refused[REFUSE_MAX_CLIENTS]++;
		close(fd);
		return;
	}
	client_create(s, l->service, fd, sa, (socklen_t)salen);
}

/*
 * Out of descriptors: give up the spare one to accept the waiting connection and close
 * it at once, so its client learns now instead of hanging in the backlog; then take the
 * spare back (memcached's trick).
 */
static void
server_shed_one(struct server *s, struct listener *l)
{
	evutil_socket_t fd;

	if (s->spare_fd == -1)
		return;
	close(s->spare_fd);
	fd = accept(l->fd, NULL, NULL);
	if (fd != -1) {
		metrics.service[l->service->id].refused[REFUSE_FD_EXHAUSTED]++;
		close(fd);
	}
	s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* accept() failed with something libevent does not retry by itself. */
static void
server_on_accept_error(struct evconnlistener *evl, void *arg)
{
	struct listener *l = arg;
	struct server *s = l->server;
	int err = EVUTIL_SOCKET_ERROR();
	unsigned long suppressed;

	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		server_shed_one(s, l);
		server_pause_accepting(s, err);
		return;
	}
	if (log_ratelimit_pass(&s->accept_log, time(NULL), &suppressed))
		log_warnx("%s: accept on %s: %s", l->service->name, l->name, strerror(err));
}

void
server_client_added(struct server *s, struct client *c)
{
	c->id = ++s->next_client_id;
	metrics.service[c->service->id].accepted++;
	if (c->has_ip)
		addr_counter_add(s->per_address, &c->ip, 1);
	TAILQ_INSERT_TAIL(&s->clients, c, entry);
	s->client_count++;
	s->service_clients[c->service->id]++;
}

/* A client closed: keep it until the reaper runs, out of every callback. */
void
server_client_removed(struct server *s, struct client *c)
{
	TAILQ_REMOVE(&s->clients, c, entry);
	TAILQ_INSERT_TAIL(&s->closed, c, entry);
	metrics.service[c->service->id].closed[metrics_closed_label(c->reason)]++;
	if (c->has_ip)
		addr_counter_add(s->per_address, &c->ip, -1);
	s->client_count--;
	s->service_clients[c->service->id]--;
	event_active(s->reap_event, EV_TIMEOUT, 0);
	if (s->accept_paused)
		server_resume_accepting(s);
	if (s->shutting_down && s->client_count == 0)
		event_base_loopbreak(s->base);
}

/* Free clients that closed. */
static void
server_reap(struct server *s)
{
	struct client *c;

	while ((c = TAILQ_FIRST(&s->closed)) != NULL) {
		TAILQ_REMOVE(&s->closed, c, entry);
		free(c);
	}
}

static void
server_on_reap(evutil_socket_t fd, short what, void *arg)
{
	server_reap(arg);
}

/* Close every client at once. */
static void
server_close_all(struct server *s, enum close_reason reason, const char *detail)
{
	struct client *c;

	while ((c = TAILQ_FIRST(&s->clients)) != NULL)
		client_close(c, reason, detail);
}

static void
server_on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;

	log_notice("shutdown_timeout: closing %u clients that did not close", s->client_count);
	server_close_all(s, CLOSE_SHUTDOWN_TIMEOUT, NULL);
	event_base_loopbreak(s->base);
}

/*
 * Graceful shutdown: no new connections; every client gets what it is owed, then FIN;
 * the loop ends when the last client has closed or after shutdown_timeout.
 */
static void
server_shutdown(struct server *s, int signo)
{
	struct timeval tv = {(time_t)s->config->shutdown_timeout, 0};
	struct listener *l, *lnext;
	struct client *c, *next;

	if (s->shutting_down) {
		log_notice("second %s: closing %u clients now", signal_name(signo), s->client_count);
		server_close_all(s, CLOSE_SHUTDOWN, "forced");
		event_base_loopbreak(s->base);
		return;
	}
	s->shutting_down = true;
	notify_stopping();
	cluster_stop(); /* the other nodes drop our users now, not after the drain */
	log_notice("shutting down on %s: %u clients to drain", signal_name(signo), s->client_count);
	TAILQ_FOREACH_SAFE(l, &s->listeners, entry, lnext)
		listener_free(s, l, false);
	evtimer_del(s->accept_retry_timer);
	TAILQ_FOREACH_SAFE(c, &s->clients, entry, next)
		client_finish(c, CLOSE_SHUTDOWN, NULL);
	if (s->client_count == 0)
		event_base_loopbreak(s->base);
	else
		evtimer_add(s->shutdown_timer, &tv);
}

/* Read the configuration again; on any error keep running on the old one. */
static void
server_reload(struct server *s)
{
	struct config_errors errors;
	struct log_settings ls;
	struct config *cfg, *old;
	char err[512];

	notify_reloading();
	log_notice("reloading configuration%s%s", s->config_path ? " from " : "",
	           s->config_path ? s->config_path : "");
	log_reopen();
	config_errors_init(&errors);
	cfg = config_read(s->config_path, s->overrides, s->override_count, &errors);
	if (cfg == NULL) {
		for (size_t i = 0; i < errors.count; i++)
			log_error("%s", errors.messages[i]);
		log_error("reload failed, keeping the old configuration (%zu error%s)", errors.count,
		          errors.count == 1 ? "" : "s");
		metrics.reloads_failed++;
		config_errors_clear(&errors);
		notify_ready();
		return;
	}
	ls.level = cfg->log_level;
	ls.target = cfg->log_target;
	if (log_open(&ls, err, sizeof(err)) == -1) {
		log_error("%s", err);
		log_error("reload failed, keeping the old configuration (1 error)");
		metrics.reloads_failed++;
		config_free(cfg);
		notify_ready();
		return;
	}
	config_restart_changes(s->config, cfg, &errors);
	for (size_t i = 0; i < errors.count; i++)
		log_warnx("%s", errors.messages[i]);
	config_errors_clear(&errors);
	old = s->config;
	s->config = cfg;
	config_free(old);
	server_apply_limits(s);
	server_apply_acls(s);
	cluster_reload(s);
	metrics.reloads_ok++;
	if (http_apply(s) == -1)
		log_error("metrics: the endpoint could not be opened");
	if (server_apply_listeners(s) > 0)
		log_error("configuration reloaded, but some listeners could not be opened");
	else
		log_notice("configuration reloaded");
	notify_ready();
}

static void
server_on_signal(evutil_socket_t signo, short what, void *arg)
{
	struct server *s = arg;

	switch (signo) {
	case SIGTERM:
	case SIGINT:
		server_shutdown(s, (int)signo);
		break;
	case SIGHUP:
		if (!s->shutting_down)
			server_reload(s);
		break;
	case SIGUSR1:
		metrics_log_summary(s);
		break;
	default:
		break;
	}
}

/* Refresh systemd's STATUS= line (at most once a second, and only when it changed). */
static void
server_on_status_timer(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	char status[sizeof(s->status)];

	snprintf(status, sizeof(status), "%u clients (echo %u, chat %u), %u rooms%s",
	         s->client_count, s->service_clients[SERVICE_ECHO],
	         s->service_clients[SERVICE_CHAT], chat_room_count(),
	         s->shutting_down ? ", shutting down" : "");
	if (strcmp(status, s->status) != 0) {
		memcpy(s->status, status, sizeof(status));
		notify_status("%s", status);
	}
}

/* Make a server for cfg (which it then owns); nothing is opened yet. */
struct server *
server_create(struct config *cfg, const char *config_path, char *const *overrides,
              size_t override_count)
{
	struct server *s = calloc(1, sizeof(*s));

	if (s == NULL)
		fatal("calloc");
	s->config = cfg;
	s->config_path = config_path;
	s->overrides = overrides;
	s->override_count = override_count;
	TAILQ_INIT(&s->listeners);
	TAILQ_INIT(&s->clients);
	TAILQ_INIT(&s->closed);
	s->full_log.interval = 10;
	s->accept_log.interval = 10;
	s->per_address_log.interval = 10;
	s->acl_log.interval = 10;
	s->per_address = addr_counter_new();
	metrics.start_time = time(NULL);
	s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (s->per_address == NULL || s->spare_fd == -1)
		fatal("cannot set up the server");
	s->base = event_base_new();
	if (s->base == NULL)
		fatalx("cannot create the event base");
	for (size_t i = 0; i < sizeof(handled_signals) / sizeof(handled_signals[0]); i++) {
		s->signal_events[i] = evsignal_new(s->base, handled_signals[i], server_on_signal, s);
		if (s->signal_events[i] == NULL || evsignal_add(s->signal_events[i], NULL) == -1)
			fatalx("cannot watch %s", signal_name(handled_signals[i]));
	}
	s->reap_event = event_new(s->base, -1, 0, server_on_reap, s);
	s->shutdown_timer = evtimer_new(s->base, server_on_shutdown_timeout, s);
	s->accept_retry_timer = evtimer_new(s->base, server_on_accept_retry, s);
	s->status_timer = event_new(s->base, -1, EV_PERSIST, server_on_status_timer, s);
	if (s->reap_event == NULL || s->shutdown_timer == NULL || s->accept_retry_timer == NULL ||
	    s->status_timer == NULL)
		fatalx("cannot create timers");
	return s;
}

/* Open every listener; returns 0, or -1 when the daemon cannot serve as configured. */
int
server_start(struct server *s)
{
	struct timeval second = {1, 0};

	server_apply_limits(s);
	server_adopt_inherited(s);
	server_apply_acls(s);
	if (server_apply_listeners(s) > 0 || http_apply(s) == -1 || cluster_start(s) == -1)
		return -1;
	if (notify_enabled()) {
		server_on_status_timer(-1, 0, s);
		event_add(s->status_timer, &second);
	}
	if (notify_watchdog_start(s->base) == -1)
		return -1;
	return 0;
}

/* Run the event loop until shutdown; returns the exit status. */
int
server_run(struct server *s)
{
	if (event_base_dispatch(s->base) == -1) {
		log_error("event loop failed");
		return 1;
	}
	return 0;
}

/* Close and free everything. */
void
server_free(struct server *s)
{
	struct listener *l, *lnext;

	if (s == NULL)
		return;
	cluster_stop();
	server_close_all(s, CLOSE_SHUTDOWN, NULL);
	server_reap(s);
	TAILQ_FOREACH_SAFE(l, &s->listeners, entry, lnext)
		listener_free(s, l, false);
	for (size_t i = 0; i < sizeof(s->signal_events) / sizeof(s->signal_events[0]); i++)
		if (s->signal_events[i] != NULL)
			event_free(s->signal_events[i]);
	event_free(s->reap_event);
	event_free(s->shutdown_timer);
	event_free(s->accept_retry_timer);
	event_free(s->status_timer);
	http_stop(s);
	notify_watchdog_stop();
	event_base_free(s->base);
	addr_acl_free(&s->allow);
	addr_acl_free(&s->deny);
	addr_counter_free(s->per_address);
	if (s->spare_fd != -1)
		close(s->spare_fd);
	config_free(s->config);
	free(s);
}
