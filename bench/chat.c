/*
 * chat.c - echochat-bench chat mode: R receivers and S senders in room #bench.
 *
 * Client i (receivers 0..R-1, then the senders) sends "/nick bI" and
 * "/join #bench" and waits for its own "* bI has joined #bench". Once every
 * client is in, each sender writes M lines "BENCH bI SEQ SEND-TIME-NS". Each
 * receiver gets them as "<bI> BENCH bI SEQ TIME" and checks, per sender, that
 * every sequence number arrives once and in order; the delivery latency is
 * the receive time minus the send time in the line (one clock, one process).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bench.h"

#define LINE_CAP 1024
#define SENDER_TX (16 * 1024)
#define SETUP_TX 96
#define MAX_SENT_LINE 64 /* "BENCH b" + 6 digits + " " + 9 digits + " " + 20 digits + CR LF */

struct chat_conn {
	struct conn c;
	bool sender;
	bool joined;
	bool complete;          /* receiver: every line from every sender */
	bool overflow;          /* the current line passed LINE_CAP */
	bool server_stopping;   /* got "* server shutting down" */
	char nick[16];
	char joined_line[48];   /* "* bI has joined #bench" */
	char *tx;               /* setup, then (senders) lines */
	size_t tx_cap, tx_len, tx_off;
	long sent;              /* sender: lines formatted */
	uint64_t done_at;       /* sender: all lines written */
	long delivered;         /* receiver: distinct lines received */
	uint32_t *next;         /* receiver: per sender, the next sequence number expected */
	uint8_t *seen;          /* receiver: per sender, a bit per sequence number */
	size_t line_len;
	char line[LINE_CAP];
};

static struct chat_conn *ccs;
static int nclients;
static bool started;          /* the senders may send */
static bool stopping;         /* hanging up: nothing is an error any more */
static uint64_t t0;
static bool ever_connected;
static int joined_count;
static int complete_receivers;
static long total_delivered;
static long duplicates, reordered, mangled, unexpected;
static long sent_total;
static struct hist hist;

static void chat_close(struct chat_conn *cc, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void chat_close(struct chat_conn *cc, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (!stopping)
		error_at(cc->c.id, "%s %s: %s", cc->sender ? "sender" : "receiver", cc->nick, msg);
	net_close(&cc->c);
}

/* Lines a sender may have written by now. */
static long sender_allowed(uint64_t now)
{
	if (!started)
		return 0;
	if (opt.rate <= 0)
		return opt.messages;
	double n = 1 + opt.rate * (double)(now - t0) / 1e9;
	return n >= (double)opt.messages ? opt.messages : (long)n;
}

/* Write what is queued; senders refill with lines, stamped just before writing. */
static void pump(struct chat_conn *cc)
{
	if (cc->c.state != CONN_OPEN)
		return;
	for (;;) {
		if (cc->tx_off == cc->tx_len) {
			cc->tx_off = cc->tx_len = 0;
			if (cc->sender) {
				uint64_t now = now_ns();
				long allowed = sender_allowed(now);
				while (cc->sent < allowed && cc->tx_len + MAX_SENT_LINE <= cc->tx_cap) {
					cc->sent++;
					sent_total++;
					int w = snprintf(cc->tx + cc->tx_len, MAX_SENT_LINE,
							 "BENCH %s %ld %" PRIu64 "\r\n", cc->nick,
							 cc->sent, now);
					cc->tx_len += (size_t)w;
				}
				if (cc->tx_len == 0 && started && cc->sent == opt.messages &&
				    cc->done_at == 0)
					cc->done_at = now;
			}
			if (cc->tx_len == 0) {
				net_want_out(&cc->c, false);
				return;
			}
		}
		ssize_t w = net_send(&cc->c, cc->tx + cc->tx_off, cc->tx_len - cc->tx_off);
		if (w < 0) {
			int err = errno;
			chat_close(cc, "send: %s%s", strerror(err), connect_hint(err));
			return;
		}
		if (w == 0) {
			net_want_out(&cc->c, true);
			return;
		}
		cc->tx_off += (size_t)w;
	}
}

static void on_connected(struct conn *c)
{
	struct chat_conn *cc = (struct chat_conn *)c;

	ever_connected = true;
	cc->tx_len = (size_t)snprintf(cc->tx, cc->tx_cap, "/nick %s\r\n/join #bench\r\n", cc->nick);
	cc->tx_off = 0;
	pump(cc);
}

static void on_connect_failed(struct conn *c, int err)
{
	if (!ever_connected && err == ECONNREFUSED)
		fail_run("cannot connect to %s: %s%s", target_name, strerror(err), connect_hint(err));
	if (!stopping)
		error_at(c->id, "connect to %s: %s%s", target_name, strerror(err), connect_hint(err));
}

static bool parse_num(const char **p, const char *end, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;

	if (s == end || *s < '0' || *s > '9')
		return false;
	while (s < end && *s >= '0' && *s <= '9') {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s++ - '0');
	}
	*p = s;
	*out = v;
	return true;
}

/* "<bI> BENCH bI SEQ TIME" on a receiver, after the start. */
static void bench_line(struct chat_conn *cc, const char *line, size_t len, uint64_t now)
{
	const char *end = line + len, *p;
	const char *gt = memchr(line, '>', len);
	uint64_t idx = 0, seq = 0, ts = 0;

	if (gt == NULL || gt + 2 > end || gt[1] != ' ')
		goto bad;
	const char *nick = line + 1;
	size_t nick_len = (size_t)(gt - nick);
	p = gt + 2;
	if ((size_t)(end - p) < 6 || memcmp(p, "BENCH ", 6) != 0) {
		unexpected++;
		error_at(cc->c.id, "receiver %s: unexpected message in #bench: %.*s", cc->nick,
			 (int)(len > 120 ? 120 : len), line);
		return;
	}
	p += 6;
	/* the sender's nick, as in the brackets */
	if ((size_t)(end - p) < nick_len + 1 || memcmp(p, nick, nick_len) != 0 || p[nick_len] != ' ')
		goto bad;
	const char *q = nick + 1;
	if (nick[0] != 'b' || !parse_num(&q, gt, &idx) || q != gt || idx < (uint64_t)opt.receivers ||
	    idx >= (uint64_t)nclients || strlen(ccs[idx].nick) != nick_len)
		goto bad; /* not one of our senders (b007 is not b7) */
	p += nick_len + 1;
	if (!parse_num(&p, end, &seq) || p == end || *p++ != ' ' || !parse_num(&p, end, &ts) ||
	    p != end || seq < 1 || seq > (uint64_t)opt.messages || ts > now)
		goto bad;

	size_t s = (size_t)(idx - (uint64_t)opt.receivers);
	size_t bit = s * (size_t)opt.messages + (size_t)(seq - 1);
	uint8_t mask = (uint8_t)(1u << (bit & 7));
	if (cc->seen[bit >> 3] & mask) {
		duplicates++;
		error_at(cc->c.id, "receiver %s: line %" PRIu64 " of b%" PRIu64 " arrived twice",
			 cc->nick, seq, idx);
		return;
	}
	cc->seen[bit >> 3] |= mask;
	if (seq < cc->next[s]) {
		reordered++;
		error_at(cc->c.id, "receiver %s: line %" PRIu64 " of b%" PRIu64
			 " arrived after line %" PRIu32 " (reordered)",
			 cc->nick, seq, idx, cc->next[s] - 1);
	} else {
		cc->next[s] = (uint32_t)seq + 1;
	}
	hist_add(&hist, now - ts);
	cc->delivered++;
	total_delivered++;
	if (cc->delivered == (long)opt.senders * opt.messages) {
		cc->complete = true;
		complete_receivers++;
	}
	return;
bad:
	mangled++;
	error_at(cc->c.id, "receiver %s: malformed benchmark line: %.*s", cc->nick,
		 (int)(len > 120 ? 120 : len), line);
}

static void chat_line(struct chat_conn *cc, const char *line, size_t len, uint64_t now)
{
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (cc->overflow) {
		cc->overflow = false;
		if (started && line[0] == '<' && !cc->sender) {
			mangled++;
			error_at(cc->c.id, "receiver %s: line longer than %d bytes", cc->nick, LINE_CAP);
		}
		return;
	}
	if (len == 0)
		return;
	if (len >= 2 && line[0] == '!' && line[1] == ' ') {
		if (!cc->joined) {
			bool taken = memmem(line, len, "is taken", 8) != NULL;
			fail_run("client %s: the server answered \"%.*s\" to /nick %s or /join #bench%s",
				 cc->nick, (int)(len > 200 ? 200 : len), line, cc->nick,
				 taken ? " (is another benchmark running against this daemon?)" : "");
		}
		error_at(cc->c.id, "%s: the server says: %.*s", cc->nick, (int)(len > 200 ? 200 : len),
			 line);
		return;
	}
	if (len == 22 && memcmp(line, "* server shutting down", 22) == 0)
		cc->server_stopping = true;
	if (!cc->joined) {
		if (len == strlen(cc->joined_line) && strncasecmp(line, cc->joined_line, len) == 0) {
			cc->joined = true;
			joined_count++;
			net_confirm(&cc->c);
		}
		return;
	}
	if (line[0] != '<' || cc->sender)
		return; /* notices; senders drop the other senders' lines */
	if (!started) {
		unexpected++;
		error_at(cc->c.id, "receiver %s: a message in #bench before the start (is someone "
			 "else in the room?): %.*s", cc->nick, (int)(len > 120 ? 120 : len), line);
		return;
	}
	bench_line(cc, line, len, now);
}

static void on_readable(struct conn *c)
{
	struct chat_conn *cc = (struct chat_conn *)c;
	ssize_t n = net_recv(c);

	if (n == -1)
		return;
	if (n == -2) {
		int err = errno;
		chat_close(cc, "receive: %s%s", strerror(err), connect_hint(err));
		return;
	}
	if (n == 0) {
		chat_close(cc, "the server closed the connection%s",
			   cc->server_stopping ? " (it is shutting down)"
			   : started	       ? " (dropped as a slow consumer? see [chat] max_output)"
				 : " (connection limit? see max_clients and max_clients_per_address)");
		return;
	}
	uint64_t now = now_ns();
	const char *p = (const char *)net_rxbuf, *end = p + n;
	while (p < end && cc->c.state == CONN_OPEN) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *stop = nl ? nl : end;
		if (cc->line_len == 0 && nl) {
			chat_line(cc, p, (size_t)(nl - p), now);
		} else {
			size_t take = (size_t)(stop - p);
			if (take > LINE_CAP - cc->line_len) {
				take = LINE_CAP - cc->line_len;
				cc->overflow = true;
			}
			memcpy(cc->line + cc->line_len, p, take);
			cc->line_len += take;
			if (nl) {
				chat_line(cc, cc->line, cc->line_len, now);
				cc->line_len = 0;
			}
		}
		p = nl ? nl + 1 : end;
	}
}

static void on_writable(struct conn *c)
{
	pump((struct chat_conn *)c);
}

static const struct conn_ops chat_ops = {
	.connected = on_connected,
	.connect_failed = on_connect_failed,
	.readable = on_readable,
	.writable = on_writable,
};

static int open_incomplete_receivers(void)
{
	int n = 0;
	for (int i = 0; i < opt.receivers; i++)
		if (ccs[i].c.state == CONN_OPEN && !ccs[i].complete)
			n++;
	return n;
}

int run_chat(void)
{
	nclients = opt.receivers + opt.senders;
	ccs = xcalloc((size_t)nclients, sizeof *ccs);
	size_t seen_bytes = ((size_t)opt.senders * (size_t)opt.messages + 7) / 8;
	for (int i = 0; i < nclients; i++) {
		struct chat_conn *cc = &ccs[i];
		cc->c.fd = -1;
		cc->c.id = i;
		cc->c.ops = &chat_ops;
		cc->sender = i >= opt.receivers;
		cc->c.to_sender_target = cc->sender;
		snprintf(cc->nick, sizeof cc->nick, "b%d", i);
		snprintf(cc->joined_line, sizeof cc->joined_line, "* %s has joined #bench", cc->nick);
		cc->tx_cap = cc->sender ? SENDER_TX : SETUP_TX;
		cc->tx = xmalloc(cc->tx_cap);
		if (!cc->sender) {
			cc->next = xcalloc((size_t)opt.senders, sizeof *cc->next);
			for (int s = 0; s < opt.senders; s++)
				cc->next[s] = 1;
			cc->seen = xcalloc(seen_bytes, 1);
		}
	}
	hist_reset(&hist);

	/* Everyone connects and joins; the senders start once all are in the room. */
	uint64_t deadline = now_ns() + secs_to_ns(opt.connect_timeout);
	net_connect_all(ccs, sizeof *ccs, nclients, deadline, true, NULL);
	while (joined_count < net_open && now_ns() < deadline) {
		net_poll(ms_until(deadline, 100));
		uint64_t now = now_ns();
		if (progress_due(now))
			progress_show("chat: %d of %d clients in #bench", joined_count, nclients);
	}
	if (joined_count < nclients) {
		stopping = true;
		errors_flush_note();
		fail_run("only %d of %d clients joined #bench within %.0f s (connected: %d)",
			 joined_count, nclients, opt.connect_timeout, net_open);
	}

	started = true;
	t0 = now_ns();
	progress_restart(t0);
	for (int i = opt.receivers; i < nclients; i++)
		pump(&ccs[i]);

	uint64_t deadline_all = t0 + secs_to_ns(opt.seconds), complete_at = 0;
	uint64_t last_progress_t = t0, last_change = t0;
	long last_progress_n = 0, last_seen_total = 0;
	uint64_t check_t = t0 + secs_to_ns(3), check_prev_t = t0;
	long check_prev_n = 0;
	bool slow = false;
	double slow_rate = 0;
	for (;;) {
		uint64_t now = now_ns();
		if (complete_receivers == opt.receivers) {
			complete_at = now;
			break;
		}
		if (now >= deadline_all || open_incomplete_receivers() == 0)
			break;
		if (total_delivered != last_seen_total) {
			last_seen_total = total_delivered;
			last_change = now;
		} else if (error_count > 0 && now - last_change > secs_to_ns(2)) {
			break; /* something broke and nothing moves any more */
		}
		if (now >= check_t) {
			/* Lines per second from each sender, as the receivers see them,
			 * since the last check; hopeless when at that pace the rest would
			 * take more than twice the time left. */
			double dt = (double)(now - check_prev_t) / 1e9;
			double per_sender = (double)(total_delivered - check_prev_n) /
					    ((double)opt.receivers * opt.senders) / dt;
			double left = (double)opt.messages -
				      (double)total_delivered / ((double)opt.receivers * opt.senders);
			double remaining = (double)(deadline_all - now) / 1e9;
			if (per_sender < 1000 && left > per_sender * 2 * remaining) {
				slow = true;
				slow_rate = per_sender;
				break;
			}
			check_prev_t = now;
			check_prev_n = total_delivered;
			check_t = now + secs_to_ns(1);
		}
		if (progress_due(now)) {
			double dt = (double)(now - last_progress_t) / 1e9;
			progress_show("chat %.0f s  delivered %ld/%ld  %.0f/s  sent %ld/%ld  errors %ld",
				      (double)(now - t0) / 1e9, total_delivered,
				      (long)opt.receivers * opt.senders * opt.messages,
				      dt > 0 ? (double)(total_delivered - last_progress_n) / dt : 0,
				      sent_total, (long)opt.senders * opt.messages, error_count);
			last_progress_t = now;
			last_progress_n = total_delivered;
		}
		for (int i = opt.receivers; opt.rate > 0 && i < nclients; i++)
			if (ccs[i].tx_off == ccs[i].tx_len)
				pump(&ccs[i]);
		net_poll(opt.rate > 0 ? 1 : ms_until(deadline_all, 100));
	}
	uint64_t t_end = complete_at ? complete_at : now_ns();
	double secs = (double)(t_end - t0) / 1e9;
	uint64_t senders_done = 0;
	bool all_sent = true;
	for (int i = opt.receivers; i < nclients; i++) {
		if (ccs[i].done_at == 0)
			all_sent = false;
		else if (ccs[i].done_at > senders_done)
			senders_done = ccs[i].done_at;
	}
	stopping = true;
	for (int i = 0; i < nclients; i++)
		net_close(&ccs[i].c);

	long expected = (long)opt.receivers * opt.senders * opt.messages;
	long missing = expected - total_delivered;
	bool complete = complete_at != 0;
	if (slow)
		warnx("lines arrive slowly: about %.0f lines/s from each sender, so %ld lines would "
		      "take far longer than the -t %.0f s timeout; stopped after %.1f s. Is the "
		      "daemon's flood control on? For a benchmark run it with chat.rate = 0 "
		      "(-o chat.rate=0, or [chat] rate = 0).",
		      slow_rate, opt.messages, opt.seconds, secs);
	else if (complete && opt.rate <= 0 && secs > 2 && (double)opt.messages / secs < 200)
		warnx("lines arrived slowly: about %.0f lines/s from each sender. Is the daemon's "
		      "flood control on? For a benchmark run it with chat.rate = 0.",
		      (double)opt.messages / secs);
	if (!complete)
		error_at(-1, "%ld of %ld deliveries missing after %.1f s%s", missing, expected, secs,
			 slow ? " (slow delivery, see above)" : "");
	bool ok = error_count == 0 && complete;

	char title[200];
	snprintf(title, sizeof title,
		 "echochat-bench chat: %d receivers, %d sender%s x %ld lines in #bench",
		 opt.receivers, opt.senders, opt.senders == 1 ? "" : "s", opt.messages);
	report_begin(title);
	report_int("receivers", "receivers", opt.receivers, NULL);
	report_int("senders", "senders", opt.senders, NULL);
	report_int("messages", "lines per sender", opt.messages, NULL);
	if (opt.rate > 0)
		report_num("rate", "send rate per sender", opt.rate, 0, "lines/s");
	else
		report_str("rate", "send rate per sender", "unlimited");
	report_int("expected", "deliveries expected", expected, NULL);
	report_int("delivered", "deliveries", total_delivered, NULL);
	report_int("missing", "missing", missing, NULL);
	report_int("duplicates", "duplicates", duplicates, NULL);
	report_int("reordered", "reordered", reordered, NULL);
	report_int("mangled", "malformed", mangled, NULL);
	report_int("unexpected", "unexpected lines", unexpected, NULL);
	report_bool("complete", "complete", complete);
	report_num("seconds", complete ? "time to deliver all" : "time (incomplete)", secs, 3, "s");
	if (ok) {
		report_num("deliveries_per_s", "deliveries/s", (double)total_delivered / secs, 0, NULL);
		if (all_sent && senders_done > t0)
			report_num("sent_per_s", "lines sent/s (all senders)",
				   (double)opt.senders * (double)opt.messages /
					   ((double)(senders_done - t0) / 1e9),
				   0, NULL);
		else
			report_null("sent_per_s", "lines sent/s (all senders)");
	} else {
		report_null("deliveries_per_s", "deliveries/s");
		report_null("sent_per_s", "lines sent/s (all senders)");
	}
	report_latency(&hist, ok);
	report_int("errors", "errors", error_count, NULL);
	report_result(ok);
	report_end();
	return ok ? 0 : 1;
}
