/* client.c - one connection's life: create, limits, timeouts, graceful FIN, close. */
#include "client.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "config.h"
#include "metrics.h"
#include "server.h"

static void client_on_readable(evutil_socket_t, short, void *);
static void client_on_peer_eof(struct client *c);
static void client_on_socket_error(struct client *c, int err);
static void client_on_write(struct bufferevent *, void *);
static void client_on_drain_write(struct bufferevent *, void *);
static void client_on_event(struct bufferevent *, short, void *);

/*
 * Every client reads into this one buffer: the loop is single-threaded and each read
 * is handed on (to the service, or into the client's input buffer) before the next.
 */
static unsigned char read_buffer[CLIENT_READ_CHUNK];

/* Return the words a log line uses for a close reason. */
const char *
client_reason_name(enum close_reason reason)
{
	switch (reason) {
	case CLOSE_PEER:
		return "peer closed";
	case CLOSE_IDLE:
		return "idle timeout";
	case CLOSE_SLOW_CONSUMER:
		return "slow consumer";
	case CLOSE_ERROR:
		return "error";
	case CLOSE_SHUTDOWN:
		return "shutdown";
	case CLOSE_SHUTDOWN_TIMEOUT:
		return "shutdown timeout";
	case CLOSE_QUIT:
		return "quit";
	}
	return "?";
}

/* Seconds elapsed since ts, on the monotonic clock. */
static double
seconds_since(const struct timespec *ts)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - ts->tv_sec) + (double)(now.tv_nsec - ts->tv_nsec) / 1e9;
}

/* Enable TCP keepalive probes: first after idle seconds, then every idle/3, three times. */
static void
client_set_keepalive(evutil_socket_t fd, unsigned idle)
{
	int on = idle > 0, interval = idle >= 3 ? (int)idle / 3 : 1, count = 3, seconds = (int)idle;

	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) == -1 || !on)
		return;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &seconds, sizeof(seconds));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

/*
 * A timeout every client shares, as a libevent common timeout: the bufferevent re-arms
 * its timeout on every read and write, and a common timeout re-arms by moving the event
 * to the tail of one list instead of sifting the min-heap (10 % of the instructions of
 * small-message echo went to that). libevent keeps up to 256 of them per base; past
 * that (many reloads with new values) the plain timeval still works.
 */
static const struct timeval *
client_common_timeout(struct client *c, unsigned seconds)
{
	static struct timeval plain;
	const struct timeval *common;

	plain.tv_sec = (time_t)seconds;
	plain.tv_usec = 0;
	common = event_base_init_common_timeout(c->server->base, &plain);
	return common != NULL ? common : &plain;
}

/* Watch for input (again), with the read timeout in force. */
static void
client_watch_input(struct client *c)
{
	if (event_add(c->read_event, c->has_read_timeout ? &c->read_timeout : NULL) == -1)
		log_warnx("%s: #%llu: cannot watch the socket", c->service->name,
		          (unsigned long long)c->id);
}

/*
 * The read side times out after seconds without input (0: never), the write side
 * after as long with output owed and none taken by the peer.
 */
static void
client_set_timeouts(struct client *c, unsigned seconds)
{
	const struct timeval *tv = seconds != 0 ? client_common_timeout(c, seconds) : NULL;

	c->has_read_timeout = tv != NULL;
	if (tv != NULL)
		c->read_timeout = *tv;
	if (c->bev != NULL)
		bufferevent_set_timeouts(c->bev, NULL, tv);
	if (event_pending(c->read_event, EV_READ, NULL))
		client_watch_input(c); /* re-added: the new timeout counts from now */
}

/* Close clients silent for this long (0: never); also clients that stop reading. */
void
client_apply_idle_timeout(struct client *c, unsigned seconds)
{
	client_set_timeouts(c, seconds);
}

/* Count bytes read from the client. */
static void
client_count_input(struct client *c, size_t n)
{
	c->bytes_in += n;
	metrics.service[c->service->id].bytes_received += n;
}

/* Count what leaves the output buffer: written to the socket. */
static void
client_count_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	const struct client *c = arg;

	metrics.service[c->service->id].bytes_sent += info->n_deleted;
}

/* Take an accepted socket into service; on failure the socket is closed. */
struct client *
client_create(struct server *s, const struct service *svc, evutil_socket_t fd,
              const struct sockaddr *sa, socklen_t salen)
{
	const struct service_config *sc = service_config_of(s->config, svc->id);
	struct client *c = calloc(1, sizeof(*c));
	int one = 1;

	if (c == NULL) {
		log_warn("%s: cannot take a client", svc->name);
		close(fd);
		return NULL;
	}
	c->server = s;
	c->service = svc;
	c->fd = fd;
	c->has_ip = addr_ip_from_sockaddr(sa, &c->ip);
	addr_format(sa, c->peer, sizeof(c->peer));
	clock_gettime(CLOCK_MONOTONIC, &c->started);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (svc->socket_sndbuf > 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &svc->socket_sndbuf,
		                 sizeof(svc->socket_sndbuf));
	client_set_keepalive(fd, s->config->tcp_keepalive);
	c->read_event = event_new(s->base, fd, EV_READ | EV_PERSIST, client_on_readable, c);
	if (c->read_event == NULL) {
		log_warnx("%s: %s: cannot create a read event", svc->name, c->peer);
		close(fd);
		free(c);
		return NULL;
	}
	client_set_timeouts(c, sc->idle_timeout);
	client_watch_input(c);
	server_client_added(s, c);
	log_info("%s: #%llu %s connected", svc->name, (unsigned long long)c->id, c->peer);
	if (svc->on_connect != NULL)
		svc->on_connect(c);
	return c;
}

/* The input buffer of an on_read service, made on first use. */
struct evbuffer *
client_input(struct client *c)
{
	if (c->input == NULL && (c->input = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	return c->input;
}

size_t
client_output_length(const struct client *c)
{
	return c->bev != NULL ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
}

/*
 * The output queue, made when the kernel first refuses to take everything at once.
 * Until then a client has no bufferevent at all: an idle connection, or one whose
 * writes all went straight to the socket, costs a struct client and a read event
 * (about half a KiB) instead of a bufferevent with its two evbuffers and events.
 */
static struct evbuffer *
client_output(struct client *c)
{
	const struct timeval *tv = c->has_read_timeout ? &c->read_timeout : NULL;

	if (c->bev != NULL)
		return bufferevent_get_output(c->bev);
	c->bev = bufferevent_socket_new(c->server->base, c->fd, 0); /* the fd stays ours */
	if (c->bev == NULL)
		fatal("bufferevent_socket_new");
	bufferevent_setcb(c->bev, NULL,
	                  (c->flags & CLIENT_FINISHING) ? client_on_drain_write : client_on_write,
	                  client_on_event, c);
	evbuffer_add_cb(bufferevent_get_output(c->bev), client_count_output, c);
	bufferevent_set_timeouts(c->bev, NULL, tv);
	bufferevent_enable(c->bev, EV_WRITE);
	return bufferevent_get_output(c->bev);
}

/*
 * Whether bytes may go straight to the socket: only when nothing is queued before them
 * (order) and FIN is not sent. Writing at once saves arming and disarming the write
 * event (two epoll_ctl calls and a loop turn per message); what the kernel does not
 * take is queued as usual, and a socket error is left for the bufferevent to report.
 */
static bool
client_may_write_now(const struct client *c)
{
	return !(c->flags & CLIENT_FIN_SENT) && client_output_length(c) == 0;
}

/*
 * A direct write failed: keep the first real error (say ECONNRESET) for the close log,
 * since libevent's own later write only sees the EPIPE that follows it.
 */
static void
client_note_write_error(struct client *c)
{
	int err = errno;

	if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR && c->socket_error == 0)
		c->socket_error = err;
}

/* Queue the whole of buf for the client, moving its chains rather than copying bytes. */
void
client_send_buffer(struct client *c, struct evbuffer *buf)
{
	size_t len = evbuffer_get_length(buf);

	if (len == 0 || (c->flags & CLIENT_CLOSED))
		return;
	c->bytes_queued += len;
	if (client_may_write_now(c)) {
		int written = evbuffer_write(buf, c->fd);
		if (written > 0)
			metrics.service[c->service->id].bytes_sent += (uint64_t)written;
		else
			client_note_write_error(c);
	}
	if (evbuffer_get_length(buf) > 0)
		evbuffer_add_buffer(client_output(c), buf);
}

/* Queue bytes for the client. */
void
client_send(struct client *c, const void *data, size_t len)
{
	if (len == 0 || (c->flags & CLIENT_CLOSED))
		return;
	c->bytes_queued += len;
	if (client_may_write_now(c)) {
		ssize_t written = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (written > 0) {
			metrics.service[c->service->id].bytes_sent += (uint64_t)written;
			data = (const char *)data + written;
			len -= (size_t)written;
		} else
			client_note_write_error(c);
	}
	if (len > 0)
		evbuffer_add(client_output(c), data, len);
}

/* Queue bytes owned by someone else; release(data, len, arg) runs once they are sent. */
void
client_send_reference(struct client *c, const void *data, size_t len,
                      void (*release)(const void *data, size_t len, void *arg), void *arg)
{
	const char *rest = data;

	if (c->flags & CLIENT_CLOSED) {
		release(data, len, arg);
		return;
	}
	c->bytes_queued += len;
	if (client_may_write_now(c)) {
		ssize_t written = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (written > 0) {
			metrics.service[c->service->id].bytes_sent += (uint64_t)written;
			rest += written;
		} else
			client_note_write_error(c);
	}
	/* all sent, or the rest could not be queued: the reference is given back now */
	if (rest == (const char *)data + len ||
	    evbuffer_add_reference(client_output(c), rest, len - (size_t)(rest - (const char *)data),
	                           release, arg) == -1)
		release(data, len, arg);
}

/*
 * Stop reading from the client (the read high watermark of libevent 2.1 re-fires
 * endlessly, so reading is switched off by hand and switched on again from the
 * write callback once the output is down to the service's low mark).
 */
void
client_pause_reading(struct client *c, unsigned why)
{
	if (c->flags & CLIENT_CLOSED)
		return;
	if (c->paused == 0)
		event_del(c->read_event);
	c->paused |= why;
	if ((why & PAUSE_BACKPRESSURE) && c->bev != NULL)
		bufferevent_setwatermark(c->bev, EV_WRITE, c->service->output_low_water, 0);
}

/* Take back one reason to pause; read again once none is left. */
void
client_resume_reading(struct client *c, unsigned why)
{
	if (!(c->paused & why) || (c->flags & CLIENT_CLOSED))
		return;
	c->paused &= ~why;
	if ((why & PAUSE_BACKPRESSURE) && c->bev != NULL)
		bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	if (c->paused == 0 && !(c->flags & (CLIENT_FINISHING | CLIENT_PEER_EOF)))
		client_watch_input(c);
}

/*
 * Read what the socket holds straight into a buffer of the caller's, up to limit bytes,
 * in large reads. Stops at EAGAIN, EOF or an error, which the read event then sees by
 * itself on its next read. Returns the bytes read.
 */
size_t
client_read_more(struct client *c, struct evbuffer *into, size_t limit)
{
	size_t total = 0;

	if (c->flags & (CLIENT_PEER_EOF | CLIENT_CLOSED))
		return 0;
	while (total < limit) {
		struct evbuffer_iovec vec[2];
		size_t want = limit - total < CLIENT_READ_CHUNK ? limit - total : CLIENT_READ_CHUNK;
		int n = evbuffer_reserve_space(into, (ev_ssize_t)want, vec, 2);
		ssize_t got;

		if (n <= 0)
			break;
		if (vec[0].iov_len > want)
			vec[0].iov_len = want;
		if (n == 2 && vec[0].iov_len + vec[1].iov_len > want)
			vec[1].iov_len = want - vec[0].iov_len;
		got = readv(c->fd, (struct iovec *)vec, n);
		if (got <= 0) {
			evbuffer_commit_space(into, vec, 0);
			break;
		}
		if ((size_t)got <= vec[0].iov_len) {
			vec[0].iov_len = (size_t)got;
			n = 1;
		} else
			vec[1].iov_len = (size_t)got - vec[0].iov_len;
		evbuffer_commit_space(into, vec, n);
		total += (size_t)got;
		if ((size_t)got < want)
			break; /* the socket is empty for now */
	}
	c->bytes_in += total;
	metrics.service[c->service->id].bytes_received += total;
	return total;
}

/* Read at once whatever the kernel already holds for this client (before a shutdown),
 * into a buffer of the caller's. Returns the bytes read. */
size_t
client_read_pending(struct client *c, struct evbuffer *into)
{
	int avail = 0;

	if (ioctl(c->fd, FIONREAD, &avail) == -1 || avail <= 0)
		return 0;
	return client_read_more(c, into, (size_t)avail);
}

/* Bytes arrived: hand them to the service; apply back-pressure. */
static void
client_take_input(struct client *c, const unsigned char *data, size_t len)
{
	const struct service *svc = c->service;

	if (svc->on_data != NULL)
		svc->on_data(c, data, len);
	else {
		if (evbuffer_add(client_input(c), data, len) == -1) {
			client_close(c, CLOSE_ERROR, "out of memory");
			return;
		}
		svc->on_read(c);
	}
	if (c->flags & (CLIENT_CLOSED | CLIENT_FINISHING))
		return;
	if (svc->output_high_water != 0 && client_output_length(c) >= svc->output_high_water)
		client_pause_reading(c, PAUSE_BACKPRESSURE);
}

/*
 * The socket is readable (or the read timeout passed). The daemon reads for itself
 * rather than through the bufferevent: libevent 2.1 asks the kernel how much is
 * readable (ioctl FIONREAD) before every read and reads at most 4 KiB, one syscall
 * in three and a loop turn per 4 KiB of small-message echo. One read(2) of up to
 * 64 KiB into a shared buffer, handed on at once, is what the fastest servers do.
 */
static void
client_on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	ssize_t n;

	if (what & EV_TIMEOUT) {
		if (c->flags & CLIENT_FINISHING)
			client_close(c, c->reason == CLOSE_SHUTDOWN ? CLOSE_SHUTDOWN_TIMEOUT : c->reason,
			             "peer did not close in time");
		else
			client_finish(c, CLOSE_IDLE, NULL);
		return;
	}
	n = read(fd, read_buffer, sizeof(read_buffer));
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			client_on_socket_error(c, errno);
		return;
	}
	if (n == 0) {
		event_del(c->read_event);
		client_on_peer_eof(c);
		return;
	}
	client_count_input(c, (size_t)n);
	if (c->flags & CLIENT_FINISHING)
		return; /* read and dropped, so that close() does not send RST */
	client_take_input(c, read_buffer, (size_t)n);
}

/* Output went down to the write low mark. */
static void
client_on_write(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;

	if ((c->paused & PAUSE_BACKPRESSURE) &&
	    client_output_length(c) <= c->service->output_low_water)
		client_resume_reading(c, PAUSE_BACKPRESSURE);
}

/* Record why the client goes away (services read it in on_finish and on_close). */
static void
client_set_reason(struct client *c, enum close_reason reason, const char *detail)
{
	c->reason = reason;
	if (detail != c->reason_detail)
		snprintf(c->reason_detail, sizeof(c->reason_detail), "%s", detail ? detail : "");
}

/* Send FIN once; close when the peer has closed too (or nobody waits for it). */
static void
client_send_fin(struct client *c)
{
	if (!(c->flags & CLIENT_FIN_SENT)) {
		c->flags |= CLIENT_FIN_SENT;
		if (shutdown(c->fd, SHUT_WR) == -1 && errno != ENOTCONN) {
			c->socket_error = errno;
			client_close(c, CLOSE_ERROR, strerror(errno));
			return;
		}
	}
	if ((c->flags & CLIENT_PEER_EOF) || c->server->config->shutdown_timeout == 0)
		client_close(c, c->reason, c->reason_detail[0] ? c->reason_detail : NULL);
}

/* While finishing: the output is flushed; FIN follows. */
static void
client_on_drain_write(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;

	if (client_output_length(c) == 0)
		client_send_fin(c);
}

/*
 * Leave gracefully: flush what is owed, send FIN, then read and discard until the
 * peer's EOF or shutdown_timeout, and only then close (closing with unread input
 * sends RST, which can destroy data the peer has not read yet).
 */
void
client_finish(struct client *c, enum close_reason reason, const char *detail)
{
	if (c->flags & (CLIENT_FINISHING | CLIENT_CLOSED))
		return;
	c->flags |= CLIENT_FINISHING;
	client_set_reason(c, reason, detail);
	if (c->service->on_finish != NULL)
		c->service->on_finish(c);
	if (c->flags & CLIENT_CLOSED)
		return;
	c->paused = 0;
	if (c->input != NULL)
		evbuffer_drain(c->input, evbuffer_get_length(c->input));
	if (c->bev != NULL) {
		bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
		bufferevent_setcb(c->bev, NULL, client_on_drain_write, client_on_event, c);
		bufferevent_enable(c->bev, EV_WRITE);
	}
	/* from now on both sides time out after shutdown_timeout (with 0, FIN closes at once
	 * and a flush that does not progress still ends at idle_timeout); input is dropped */
	event_del(c->read_event);
	client_set_timeouts(c, c->server->config->shutdown_timeout != 0
	                           ? c->server->config->shutdown_timeout
	                           : service_config_of(c->server->config, c->service->id)->idle_timeout);
	if (!(c->flags & CLIENT_PEER_EOF))
		client_watch_input(c);
	if (client_output_length(c) == 0)
		client_send_fin(c);
}

/* Tell whether a socket error is an ordinary way for a peer to vanish. */
static bool
client_error_is_routine(int err)
{
	return err == ECONNRESET || err == EPIPE || err == ETIMEDOUT || err == ECONNABORTED ||
	       err == EHOSTUNREACH || err == ENETUNREACH;
}

/* The peer sent FIN (read returned 0). */
static void
client_on_peer_eof(struct client *c)
{
	c->flags |= CLIENT_PEER_EOF;
	if (c->flags & CLIENT_FINISHING) {
		/* Still flushing: the write callback sends FIN and closes. */
		if (c->flags & CLIENT_FIN_SENT)
			client_close(c, c->reason, c->reason_detail[0] ? c->reason_detail : NULL);
		return;
	}
	if (c->service->on_eof != NULL)
		c->service->on_eof(c);
	else
		client_finish(c, CLOSE_PEER, NULL);
}

/* A read or write failed for good (reset by peer, ...). */
static void
client_on_socket_error(struct client *c, int err)
{
	if (c->socket_error == 0)
		c->socket_error = err;
	client_close(c, CLOSE_ERROR,
	             c->socket_error ? evutil_socket_error_to_string(c->socket_error) : NULL);
}

/* The bufferevent's side of the socket, writing: an error or a timeout. */
static void
client_on_event(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;

	if (what & BEV_EVENT_EOF) {
		client_on_peer_eof(c);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		client_on_socket_error(c, EVUTIL_SOCKET_ERROR());
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (c->flags & CLIENT_FINISHING)
			client_close(c, c->reason == CLOSE_SHUTDOWN ? CLOSE_SHUTDOWN_TIMEOUT : c->reason,
			             "peer did not close in time");
		else
			client_close(c, CLOSE_IDLE, "peer does not read");
	}
}

/* Close at once, dropping what is unsent; the one door out for every client. */
void
client_close(struct client *c, enum close_reason reason, const char *detail)
{
	int level = LOG_LEVEL_INFO;
	uint64_t bytes_out;
	char why[512];

	if (c->flags & CLIENT_CLOSED)
		return;
	c->flags |= CLIENT_CLOSED;
	client_set_reason(c, reason, detail);
	bytes_out = c->bytes_queued - client_output_length(c);
	if (reason == CLOSE_ERROR) {
		snprintf(why, sizeof(why), "%s", detail != NULL ? detail : "socket error");
		why[0] = (char)tolower((unsigned char)why[0]);
		if (!client_error_is_routine(c->socket_error))
			level = LOG_LEVEL_WARNING;
	} else if (detail != NULL && detail[0] != '\0') {
		/* a detail may come from the peer (a /quit reason): escape it for the log */
		char escaped[sizeof(c->reason_detail) * 4];
		log_escape(escaped, sizeof(escaped), detail, strlen(detail));
		snprintf(why, sizeof(why), "%s: %s", client_reason_name(reason), escaped);
	}
	else
		snprintf(why, sizeof(why), "%s", client_reason_name(reason));
	if (reason == CLOSE_SLOW_CONSUMER)
		level = LOG_LEVEL_WARNING;
	if (log_enabled(level))
		log_write(level, false, "%s: #%llu %s closed (%s): %llu bytes in, %llu bytes out, %.2f s",
		          c->service->name, (unsigned long long)c->id, c->peer, why,
		          (unsigned long long)c->bytes_in, (unsigned long long)bytes_out,
		          seconds_since(&c->started));
	if (c->service->on_close != NULL)
		c->service->on_close(c);
	event_free(c->read_event);
	c->read_event = NULL;
	if (c->bev != NULL) {
		/* what is dropped unsent must not count as sent */
		evbuffer_remove_cb(bufferevent_get_output(c->bev), client_count_output, c);
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	if (c->input != NULL)
		evbuffer_free(c->input);
	c->input = NULL;
	close(c->fd);
	server_client_removed(c->server, c);
}
