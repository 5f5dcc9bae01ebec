/*
 * echo.c - echochat-bench echo mode: C connections each keep D messages of S
 * bytes in flight. Each connection sends its own pseudo-random byte stream,
 * a function of (connection key, stream offset) that never repeats, and every
 * byte that comes back is compared with the byte sent at that offset: a lost,
 * duplicated, reordered, altered or foreign byte is an error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

struct echo_conn {
	struct conn c;
	uint64_t base, key;  /* select this connection's stream */
	uint64_t tx_goal;    /* stream bytes queued for sending */
	uint64_t tx_off;     /* stream bytes written */
	uint64_t rx_off;     /* stream bytes received and verified */
	uint64_t queued;     /* messages queued */
	uint64_t done;       /* messages completed */
	uint64_t *sent_at;   /* ring of `depth` queueing times, ns */
};

static struct echo_conn *ecs;
static bool running = true;  /* completed messages are replaced */
static bool measuring;       /* inside the measured window */
static bool ever_connected;
static struct hist hist;
static uint64_t win_msgs, win_bytes;

#define CHUNK ((size_t)64 * 1024)
static uint8_t txbuf[CHUNK];

/*
 * The payload stream. For a connection with base B and key K, stream byte o
 * is byte q mod 2^20 of a random table, q = B + o, XOR byte q mod 8 of a
 * mask that depends on K and on the lap q / 2^20. The mask is a bijection of
 * the lap, so every lap of the table is masked differently and the stream
 * never repeats; making and checking it is a masked copy or compare of
 * aligned words, about as fast as memcpy.
 */
#define TABLE_BITS 20
#define TABLE ((size_t)1 << TABLE_BITS)
static uint64_t table64[TABLE / 8];
#define TABLE_BYTE(i) (((const uint8_t *)table64)[i])

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t lap_mask(const struct echo_conn *e, uint64_t lap)
{
	return mix64(e->key ^ (lap * 0x9e3779b97f4a7c15ull));
}

/* Byte j of the mask applies to table bytes at index j mod 8. */
static uint8_t mask_byte(uint64_t mask, size_t idx)
{
	return (uint8_t)(mask >> (8 * (idx & 7)));
}

/* The mask as it applies to an aligned 8-byte word read from memory. */
static uint64_t word_mask(uint64_t mask)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return __builtin_bswap64(mask);
#else
	return mask;
#endif
}

static uint8_t stream_byte(const struct echo_conn *e, uint64_t off)
{
	uint64_t q = e->base + off;
	size_t idx = (size_t)(q & (TABLE - 1));
	return TABLE_BYTE(idx) ^ mask_byte(lap_mask(e, q >> TABLE_BITS), idx);
}

/* Bytes [off, off + n) of the stream of e. */
static void stream_fill(const struct echo_conn *e, uint64_t off, uint8_t *out, size_t n)
{
	while (n > 0) {
		uint64_t q = e->base + off;
		size_t idx = (size_t)(q & (TABLE - 1));
		size_t run = n < TABLE - idx ? n : TABLE - idx; /* up to the end of this lap */
		uint64_t mask = lap_mask(e, q >> TABLE_BITS), wm = word_mask(mask);
		size_t i = 0;
		for (; i < run && ((idx + i) & 7) != 0; i++)
			out[i] = TABLE_BYTE(idx + i) ^ mask_byte(mask, idx + i);
		for (; i + 8 <= run; i += 8) {
			uint64_t v = table64[(idx + i) / 8] ^ wm;
			memcpy(out + i, &v, 8);
		}
		for (; i < run; i++)
			out[i] = TABLE_BYTE(idx + i) ^ mask_byte(mask, idx + i);
		out += run;
		off += run;
		n -= run;
	}
}

/* How many of the n bytes in `in` equal the stream of e from offset off. */
static size_t stream_match(const struct echo_conn *e, uint64_t off, const uint8_t *in, size_t n)
{
	size_t matched = 0;

	while (matched < n) {
		uint64_t q = e->base + off + matched;
		size_t idx = (size_t)(q & (TABLE - 1));
		size_t run = n - matched < TABLE - idx ? n - matched : TABLE - idx;
		uint64_t mask = lap_mask(e, q >> TABLE_BITS), wm = word_mask(mask);
		const uint8_t *p = in + matched;
		size_t i = 0;
		for (; i < run && ((idx + i) & 7) != 0; i++)
			if (p[i] != (TABLE_BYTE(idx + i) ^ mask_byte(mask, idx + i)))
				return matched + i;
		for (; i + 8 <= run; i += 8) {
			uint64_t v;
			memcpy(&v, p + i, 8);
			if (v != (table64[(idx + i) / 8] ^ wm))
				break; /* the byte loop below finds which byte */
		}
		for (; i < run; i++)
			if (p[i] != (TABLE_BYTE(idx + i) ^ mask_byte(mask, idx + i)))
				return matched + i;
		matched += run;
	}
	return n;
}

static void echo_fail(struct echo_conn *e, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void echo_fail(struct echo_conn *e, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (running)
		error_at(e->c.id, "%s", msg);
	net_close(&e->c);
}

static void queue_message(struct echo_conn *e, uint64_t now)
{
	e->sent_at[e->queued % (uint64_t)opt.depth] = now;
	e->queued++;
	e->tx_goal += opt.size;
}

static void echo_flush(struct echo_conn *e)
{
	while (e->tx_off < e->tx_goal) {
		uint64_t pending = e->tx_goal - e->tx_off;
		size_t n = pending < CHUNK ? (size_t)pending : CHUNK;
		stream_fill(e, e->tx_off, txbuf, n);
		ssize_t w = net_send(&e->c, txbuf, n);
		if (w < 0) {
			int err = errno;
			echo_fail(e, "send: %s%s", strerror(err), connect_hint(err));
			return;
		}
		if (w == 0) {
			net_want_out(&e->c, true);
			return;
		}
		e->tx_off += (uint64_t)w;
	}
	net_want_out(&e->c, false);
}

static void on_connected(struct conn *c)
{
	struct echo_conn *e = (struct echo_conn *)c;
	uint64_t now = now_ns();

	ever_connected = true;
	for (int i = 0; i < opt.depth; i++)
		queue_message(e, now);
	echo_flush(e);
}

static void on_connect_failed(struct conn *c, int err)
{
	if (!ever_connected && err == ECONNREFUSED)
		fail_run("cannot connect to %s: %s%s", target_name, strerror(err), connect_hint(err));
	if (running)
		error_at(c->id, "connect to %s: %s%s", target_name, strerror(err), connect_hint(err));
}

/* Compare received bytes with the stream; false (and the connection closed) on a difference. */
static bool verify(struct echo_conn *e, const uint8_t *buf, size_t n)
{
	size_t i = stream_match(e, e->rx_off, buf, n);
	if (i == n)
		return true;

	char got[128];
	describe_bytes(got, sizeof got, buf + i, n - i);
	bool greeting = e->rx_off == 0 && n >= 9 && memcmp(buf, "* welcome", 9) == 0;
	echo_fail(e,
		  "echoed data differs at stream offset %" PRIu64
		  ": sent 0x%02x, got 0x%02x; from there on got %s%s",
		  e->rx_off + i, stream_byte(e, e->rx_off + i), buf[i], got,
		  greeting ? " (the chat service's greeting: this is the chat port, use the echo port)"
			   : "");
	return false;
}

static void on_readable(struct conn *c)
{
	struct echo_conn *e = (struct echo_conn *)c;
	ssize_t n = net_recv(c);

	if (n == -1)
		return;
	if (n == -2) {
		int err = errno;
		echo_fail(e, "receive: %s%s", strerror(err), connect_hint(err));
		return;
	}
	if (n == 0) {
		echo_fail(e,
			  "the server closed the connection after echoing %" PRIu64 " of %" PRIu64
			  " bytes%s",
			  e->rx_off, e->tx_off,
			  e->rx_off == 0 ? " (connection limit? see max_clients and "
					   "max_clients_per_address)"
					 : "");
		return;
	}
	uint64_t owed = e->tx_off - e->rx_off;
	size_t check = (uint64_t)n < owed ? (size_t)n : (size_t)owed;
	if (!verify(e, net_rxbuf, check))
		return;
	if ((uint64_t)n > owed) {
		char got[128];
		describe_bytes(got, sizeof got, net_rxbuf + check, (size_t)n - check);
		echo_fail(e, "received %zu bytes more than were sent (at stream offset %" PRIu64 "): %s",
			  (size_t)n - check, e->rx_off + check, got);
		return;
	}
	e->rx_off += (uint64_t)n;
	net_confirm(c);
	uint64_t now = now_ns();
	if (measuring)
		win_bytes += (uint64_t)n;
	while (e->done < e->queued && (e->done + 1) * opt.size <= e->rx_off) {
		if (measuring) {
			hist_add(&hist, now - e->sent_at[e->done % (uint64_t)opt.depth]);
			win_msgs++;
		}
		e->done++;
		if (running)
			queue_message(e, now);
	}
	echo_flush(e);
}

static void on_writable(struct conn *c)
{
	echo_flush((struct echo_conn *)c);
}

static const struct conn_ops echo_ops = {
	.connected = on_connected,
	.connect_failed = on_connect_failed,
	.readable = on_readable,
	.writable = on_writable,
};

static uint64_t last_msgs, last_bytes, last_t;

static void show_progress(const char *phase, uint64_t now, uint64_t since, double total)
{
	if (!progress_due(now))
		return;
	double dt = (double)(now - last_t) / 1e9;
	if (measuring)
		progress_show("echo %s %.0f/%.0f s  %.0f msg/s  %.2f MB/s  p99 %.1f us  conns %d  "
			      "errors %ld",
			      phase, (double)(now - since) / 1e9, total,
			      dt > 0 ? (double)(win_msgs - last_msgs) / dt : 0,
			      dt > 0 ? (double)(win_bytes - last_bytes) / dt / 1e6 : 0,
			      hist_percentile_us(&hist, 0.99), net_open, error_count);
	else
		progress_show("echo %s %.0f/%.0f s  conns %d  errors %ld", phase,
			      (double)(now - since) / 1e9, total, net_open, error_count);
	last_msgs = win_msgs;
	last_bytes = win_bytes;
	last_t = now;
}

static void run_phase(const char *phase, double secs)
{
	uint64_t start = now_ns(), end = start + secs_to_ns(secs);
	last_t = start;
	last_msgs = win_msgs;
	last_bytes = win_bytes;
	progress_restart(start);
	for (;;) {
		uint64_t now = now_ns();
		if (now >= end || net_open == 0)
			break;
		show_progress(phase, now, start, secs);
		net_poll(ms_until(end, 100));
	}
}

int run_echo(void)
{
	uint64_t seed = mix64(now_ns() ^ ((uint64_t)getpid() << 32));

	for (size_t i = 0; i < TABLE / 8; i++)
		table64[i] = mix64(seed + i * 0x9e3779b97f4a7c15ull);

	ecs = xcalloc((size_t)opt.conns, sizeof *ecs);
	for (int i = 0; i < opt.conns; i++) {
		struct echo_conn *e = &ecs[i];
		e->c.fd = -1;
		e->c.id = i;
		e->c.ops = &echo_ops;
		e->base = mix64(seed ^ (2 * (uint64_t)i + 1));
		e->key = mix64(e->base + seed);
		e->sent_at = xcalloc((size_t)opt.depth, sizeof *e->sent_at);
	}
	hist_reset(&hist);
	net_connect_all(ecs, sizeof *ecs, opt.conns, now_ns() + secs_to_ns(opt.connect_timeout),
			true, NULL);
	if (net_open > 0 && opt.warmup > 0)
		run_phase("warm-up", opt.warmup);

	hist_reset(&hist);
	win_msgs = win_bytes = 0;
	measuring = true;
	uint64_t t0 = now_ns();
	if (net_open > 0)
		run_phase("run", opt.seconds);
	measuring = false;
	double secs = (double)(now_ns() - t0) / 1e9;
	int live = net_open;
	running = false; /* from here on nothing is an error: we are hanging up */
	for (int i = 0; i < opt.conns; i++)
		net_close(&ecs[i].c);

	if (error_count == 0 && win_msgs == 0)
		error_at(-1, "no message came back in %.2f s", secs);
	bool ok = error_count == 0;
	char title[200];
	snprintf(title, sizeof title,
		 "echochat-bench echo: %d connections x %zu-byte messages, depth %d, "
		 "%.2f s after %.2f s warm-up",
		 opt.conns, opt.size, opt.depth, secs, opt.warmup);
	report_begin(title);
	report_int("conns", "connections", opt.conns, NULL);
	report_int("size", "message size", (long long)opt.size, "bytes");
	report_int("depth", "depth", opt.depth, NULL);
	report_num("seconds", "measured", secs, 2, "s");
	report_num("warmup", "warm-up", opt.warmup, 2, "s");
	report_int("messages", "messages", (long long)win_msgs, NULL);
	if (ok) {
		report_num("msgs_per_s", "messages/s", (double)win_msgs / secs, 0, NULL);
		report_num("mb_per_s", "MB/s (10^6 B echoed)", (double)win_bytes / secs / 1e6, 2, NULL);
	} else {
		report_null("msgs_per_s", "messages/s");
		report_null("mb_per_s", "MB/s (10^6 B echoed)");
	}
	report_latency(&hist, ok);
	report_int("live", "connections open at end", live, NULL);
	report_int("errors", "errors", error_count, NULL);
	report_result(ok);
	report_end();
	return ok ? 0 : 1;
}
