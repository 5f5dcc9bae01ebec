/*
 * connect.c - echochat-bench connect mode: CONCURRENCY clients each, over and
 * over, connect to the echo service, send one byte, read it back, close their
 * sending side and wait for the server's end of file, then close. One such
 * cycle is a connection the server accepted, served and closed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>

#include "bench.h"

enum phase { PH_IDLE, PH_CONNECTING, PH_ECHO, PH_EOF };

struct slot {
	struct conn c;
	enum phase phase;
	uint8_t byte;
};

static struct slot *slots;
static bool running = true; /* errors count, cycles are restarted */
static bool measuring;
static bool ever_connected;
static unsigned connects_started;
static uint64_t win_cycles;
static uint64_t all_cycles; /* warm-up included */
static struct hist hist;

#define MAX_ERRORS 1000

static void slot_fail(struct slot *s, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void slot_fail(struct slot *s, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (running)
		error_at(s->c.id, "%s", msg);
	net_close(&s->c);
	s->phase = PH_IDLE;
}

static void start(struct slot *s)
{
	s->phase = PH_CONNECTING;
	s->byte = (uint8_t)(connects_started * 131u + 7u);
	net_connect(&s->c, connects_started++);
}

static void on_connected(struct conn *c)
{
	struct slot *s = (struct slot *)c;

	ever_connected = true;
	s->phase = PH_ECHO;
	ssize_t w = net_send(c, &s->byte, 1);
	if (w < 0) {
		int err = errno;
		slot_fail(s, "send: %s%s", strerror(err), connect_hint(err));
	} else if (w == 0) {
		slot_fail(s, "send: the socket is full before the first byte");
	} else {
		net_want_out(c, false);
	}
}

static void on_connect_failed(struct conn *c, int err)
{
	struct slot *s = (struct slot *)c;

	if (!ever_connected && err == ECONNREFUSED)
		fail_run("cannot connect to %s: %s%s", target_name, strerror(err), connect_hint(err));
	if (running)
		error_at(c->id, "connect to %s: %s%s", target_name, strerror(err), connect_hint(err));
	s->phase = PH_IDLE; /* restarted from the main loop, not from here */
}

static void on_readable(struct conn *c)
{
	struct slot *s = (struct slot *)c;
	ssize_t n = net_recv(c);

	if (n == -1)
		return;
	if (n == -2) {
		int err = errno;
		slot_fail(s, "receive: %s%s", strerror(err), connect_hint(err));
		return;
	}
	if (s->phase == PH_ECHO) {
		if (n == 0) {
			slot_fail(s, "the server closed the connection without echoing "
				     "(connection limit? see max_clients and max_clients_per_address)");
			return;
		}
		if (n != 1 || net_rxbuf[0] != s->byte) {
			char got[128];
			describe_bytes(got, sizeof got, net_rxbuf, (size_t)n);
			slot_fail(s, "sent the byte 0x%02x, got back %s: not an echo service%s", s->byte,
				  got, net_rxbuf[0] == '*' ? " (the chat port?)" : "");
			return;
		}
		if (shutdown(c->fd, SHUT_WR) < 0) {
			int err = errno;
			slot_fail(s, "shutdown: %s", strerror(err));
			return;
		}
		s->phase = PH_EOF;
		return;
	}
	if (n > 0) {
		char got[128];
		describe_bytes(got, sizeof got, net_rxbuf, (size_t)n);
		slot_fail(s, "unexpected bytes after the echo: %s", got);
		return;
	}
	/* The server closed its side after ours: one complete cycle. */
	all_cycles++;
	if (measuring) {
		hist_add(&hist, now_ns() - c->started);
		win_cycles++;
	}
	net_close(c);
	s->phase = PH_IDLE;
}

static const struct conn_ops connect_ops = {
	.connected = on_connected,
	.connect_failed = on_connect_failed,
	.readable = on_readable,
	.writable = NULL,
};

static uint64_t last_cycles, last_t;

static void run_phase(const char *phase, double secs)
{
	uint64_t begin = now_ns(), end = begin + secs_to_ns(secs);
	uint64_t timeout = secs_to_ns(opt.connect_timeout);
	uint64_t next_scan = begin;

	last_t = begin;
	last_cycles = win_cycles;
	progress_restart(begin);
	for (;;) {
		uint64_t now = now_ns();
		if (now >= end || error_count >= MAX_ERRORS)
			break;
		if (all_cycles == 0 && error_count >= opt.conns)
			break; /* every client failed and none ever succeeded */
		for (int i = 0; i < opt.conns; i++)
			if (slots[i].phase == PH_IDLE)
				start(&slots[i]);
		now = now_ns();
		if (now >= next_scan) {
			for (int i = 0; i < opt.conns; i++) {
				struct slot *s = &slots[i];
				if (s->phase != PH_IDLE && now > s->c.started + timeout)
					slot_fail(s, "no answer within %.1f s (%s)", opt.connect_timeout,
						  s->phase == PH_CONNECTING ? "connecting"
						  : s->phase == PH_ECHO     ? "waiting for the echo"
									    : "waiting for the server to close");
			}
			next_scan = now + 100000000u;
		}
		if (progress_due(now)) {
			double dt = (double)(now - last_t) / 1e9;
			progress_show("connect %s %.0f/%.0f s  %.0f conn/s  p99 %.1f us  errors %ld", phase,
				      (double)(now - begin) / 1e9, secs,
				      dt > 0 ? (double)(win_cycles - last_cycles) / dt : 0,
				      hist_percentile_us(&hist, 0.99), error_count);
			last_t = now;
			last_cycles = win_cycles;
		}
		net_poll(ms_until(end, 100));
	}
}

int run_connect(void)
{
	slots = xcalloc((size_t)opt.conns, sizeof *slots);
	for (int i = 0; i < opt.conns; i++) {
		slots[i].c.fd = -1;
		slots[i].c.id = i;
		slots[i].c.ops = &connect_ops;
		slots[i].phase = PH_IDLE;
	}
	hist_reset(&hist);
	if (opt.warmup > 0)
		run_phase("warm-up", opt.warmup);
	hist_reset(&hist);
	win_cycles = 0;
	measuring = true;
	uint64_t t0 = now_ns();
	run_phase("run", opt.seconds);
	measuring = false;
	double secs = (double)(now_ns() - t0) / 1e9;
	running = false;
	for (int i = 0; i < opt.conns; i++)
		net_close(&slots[i].c);

	if (error_count >= MAX_ERRORS || (all_cycles == 0 && error_count >= opt.conns))
		warnx("stopped early: %ld errors", error_count);
	if (error_count == 0 && win_cycles == 0)
		error_at(-1, "no connection completed in %.2f s", secs);
	bool ok = error_count == 0;
	char title[200];
	snprintf(title, sizeof title,
		 "echochat-bench connect: %d at a time, connect + 1-byte echo + close, "
		 "%.2f s after %.2f s warm-up",
		 opt.conns, secs, opt.warmup);
	report_begin(title);
	report_int("concurrency", "concurrency", opt.conns, NULL);
	report_num("seconds", "measured", secs, 2, "s");
	report_num("warmup", "warm-up", opt.warmup, 2, "s");
	report_int("connections", "connections completed", (long long)win_cycles, NULL);
	if (ok)
		report_num("conns_per_s", "connections/s", (double)win_cycles / secs, 0, NULL);
	else
		report_null("conns_per_s", "connections/s");
	report_latency(&hist, ok);
	report_int("errors", "errors", error_count, NULL);
	report_result(ok);
	report_end();
	return ok ? 0 : 1;
}
