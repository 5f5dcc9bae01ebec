/* net.c - echochat-bench: the epoll loop and non-blocking client sockets. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bench.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

int net_connecting;
int net_open;
int net_unconfirmed;
uint8_t net_rxbuf[256 * 1024];

static int epfd = -1;

void net_init(void)
{
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1: %s", strerror(errno));
}

const char *connect_hint(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return " (nothing listens there: is echochatd running, and is this the right port?)";
	case ECONNRESET:
	case EPIPE:
		return " (the server reset the connection)";
	case EADDRNOTAVAIL:
		return " (out of local ports: use --src-addrs K to spread the clients over "
		       "127.0.0.2 .. 127.0.0.(K+1))";
	case EMFILE:
	case ENFILE:
		return " (out of file descriptors: raise ulimit -n)";
	case ETIMEDOUT:
		return " (the server's listen queue is full, or it does not accept)";
	default:
		return "";
	}
}

void describe_bytes(char *out, size_t outlen, const uint8_t *p, size_t n)
{
	size_t printable = 0, shown = n < 24 ? n : 24;
	size_t o = 0;

	for (size_t i = 0; i < shown; i++)
		if ((p[i] >= 0x20 && p[i] < 0x7f) || p[i] == '\r' || p[i] == '\n' || p[i] == '\t')
			printable++;
	if (outlen < 8)
		return;
	if (printable == shown && shown > 0) {
		out[o++] = '"';
		for (size_t i = 0; i < shown && o + 6 < outlen; i++) {
			if (p[i] == '\r' || p[i] == '\n') {
				out[o++] = '\\';
				out[o++] = p[i] == '\r' ? 'r' : 'n';
			} else if (p[i] == '\t') {
				out[o++] = '\\';
				out[o++] = 't';
			} else {
				out[o++] = (char)p[i];
			}
		}
		out[o++] = '"';
	} else {
		for (size_t i = 0; i < shown && o + 4 < outlen; i++)
			o += (size_t)snprintf(out + o, outlen - o, "%s%02x", i ? " " : "", p[i]);
	}
	if (shown < n && o + 4 < outlen) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

bool net_connect(struct conn *c, unsigned slot)
{
	int one = 1;

	c->state = CONN_CONNECTING;
	c->want_out = true;
	c->started = now_ns();
	net_connecting++;
	c->fd = socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		int err = errno;
		net_close(c);
		c->ops->connect_failed(c, err);
		return false;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (opt.src_addrs > 0) {
		/* Each source address has its own ephemeral port range. */
		struct sockaddr_in src = { .sin_family = AF_INET };
		src.sin_addr.s_addr = htonl(0x7f000002u + slot % (unsigned)opt.src_addrs);
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) {
			int err = errno;
			net_close(c);
			c->ops->connect_failed(c, err);
			return false;
		}
	}
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
	if (connect(c->fd, (const struct sockaddr *)(c->to_sender_target ? &sender_target : &target),
		    target_len) < 0 &&
	    errno != EINPROGRESS) {
		int err = errno;
		net_close(c);
		c->ops->connect_failed(c, err);
		return false;
	}
	/* Even when connect() completed at once, EPOLLOUT reports it. */
	return true;
}

void net_want_out(struct conn *c, bool want)
{
	if (c->want_out == want || c->state != CONN_OPEN)
		return;
	struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c };
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
	c->want_out = want;
}

void net_close(struct conn *c)
{
	if (c->state == CONN_CONNECTING)
		net_connecting--;
	else if (c->state == CONN_OPEN) {
		net_open--;
		if (!c->confirmed)
			net_unconfirmed--;
	}
	if (c->fd >= 0)
		close(c->fd); /* also leaves the epoll set */
	c->fd = -1;
	c->state = CONN_CLOSED;
}

ssize_t net_recv(struct conn *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, net_rxbuf, sizeof net_rxbuf, 0);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -1;
		return -2;
	}
}

ssize_t net_send(struct conn *c, const void *p, size_t n)
{
	for (;;) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w >= 0)
			return w;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return -1;
	}
}

static void handle(struct conn *c, uint32_t events)
{
	if (c->state == CONN_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof err;
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err == 0 && !(events & (EPOLLOUT | EPOLLIN)))
			err = ECONNRESET;
		if (err) {
			net_close(c);
			c->ops->connect_failed(c, err);
			return;
		}
		net_connecting--;
		net_open++;
		net_unconfirmed++;
		c->confirmed = false;
		c->state = CONN_OPEN;
		c->ops->connected(c);
		return;
	}
	if (c->state != CONN_OPEN)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		c->ops->readable(c);
	if (c->state == CONN_OPEN && (events & EPOLLOUT) && c->ops->writable)
		c->ops->writable(c);
}

void net_poll(int timeout_ms)
{
	struct epoll_event ev[512];
	int n = epoll_wait(epfd, ev, 512, timeout_ms);

	if (n < 0) {
		if (errno == EINTR)
			return;
		die("epoll_wait: %s", strerror(errno));
	}
	for (int i = 0; i < n; i++)
		handle(ev[i].data.ptr, ev[i].events);
}

int ms_until(uint64_t deadline, int cap_ms)
{
	uint64_t now = now_ns();
	if (now >= deadline)
		return 0;
	uint64_t ms = (deadline - now + 999999) / 1000000;
	return ms > (uint64_t)cap_ms ? cap_ms : (int)ms;
}

void net_confirm(struct conn *c)
{
	if (c->state == CONN_OPEN && !c->confirmed) {
		c->confirmed = true;
		net_unconfirmed--;
	}
}

void net_connect_all(void *base, size_t stride, int n, uint64_t deadline, bool wait_confirm,
		     void (*tick)(void))
{
	int next = 0;

	for (;;) {
		while (next < n && net_connecting + (wait_confirm ? net_unconfirmed : 0) < MAX_PENDING) {
			struct conn *c = (struct conn *)((char *)base + (size_t)next * stride);
			net_connect(c, (unsigned)next);
			next++;
		}
		if (next >= n && net_connecting + (wait_confirm ? net_unconfirmed : 0) == 0)
			break;
		if (now_ns() >= deadline) {
			for (int i = 0; i < n; i++) {
				struct conn *c = (struct conn *)((char *)base + (size_t)i * stride);
				if (c->state == CONN_CONNECTING || c->state == CONN_NEW) {
					net_close(c);
					c->ops->connect_failed(c, ETIMEDOUT);
				}
			}
			break;
		}
		net_poll(ms_until(deadline, 100));
		if (tick)
			tick();
	}
}
