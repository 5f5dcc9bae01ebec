/*
 * idle.c - echochat-bench idle mode: open N connections, make sure the server
 * serves each one (send an empty line: the echo service sends it back, the
 * chat service ignores it but has sent its greeting), hold them, and read the
 * server's resident memory (VmRSS) and open descriptors before and after.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "bench.h"

struct idle_conn {
	struct conn c;
	bool served;
};

static struct idle_conn *ics;
static bool holding; /* closes from here on are reported as such */
static bool stopping;
static bool ever_connected;
static long served;

static void on_connected(struct conn *c)
{
	ever_connected = true;
	ssize_t w = net_send(c, "\n", 1);
	if (w <= 0) {
		int err = w < 0 ? errno : EAGAIN;
		error_at(c->id, "send: %s", strerror(err));
		net_close(c);
		return;
	}
	net_want_out(c, false);
}

static void on_connect_failed(struct conn *c, int err)
{
	if (!ever_connected && err == ECONNREFUSED)
		fail_run("cannot connect to %s: %s%s", target_name, strerror(err), connect_hint(err));
	if (!stopping)
		error_at(c->id, "connect to %s: %s%s", target_name, strerror(err), connect_hint(err));
}

static void on_readable(struct conn *c)
{
	struct idle_conn *ic = (struct idle_conn *)c;
	ssize_t n = net_recv(c);

	if (n == -1)
		return;
	if (n <= 0) {
		int err = errno;
		if (!stopping) {
			if (n == -2)
				error_at(c->id, "receive: %s%s", strerror(err), connect_hint(err));
			else if (!ic->served)
				error_at(c->id, "the server closed the connection at once (connection "
						"limit? see max_clients and max_clients_per_address)");
			else
				error_at(c->id, "the server closed the connection %s(idle_timeout?)",
					 holding ? "during the hold " : "");
		}
		net_close(c);
		return;
	}
	if (!ic->served) {
		ic->served = true;
		served++;
		net_confirm(c);
	}
}

static const struct conn_ops idle_ops = {
	.connected = on_connected,
	.connect_failed = on_connect_failed,
	.readable = on_readable,
	.writable = NULL,
};

static void connect_tick(void)
{
	uint64_t now = now_ns();
	if (progress_due(now))
		progress_show("idle: %ld of %ld connections served, %d connecting", served,
			      opt.idle_conns, net_connecting);
}

int run_idle(void)
{
	int n = (int)opt.idle_conns;
	pid_t pid = opt.pid;
	const char *pid_source = "--pid";

	if (pid == 0) {
		pid = find_listener_pid(&target);
		pid_source = "the listening socket";
		if (pid == 0)
			warnx("no process found listening on %s: give --pid PID to measure its memory",
			      target_name);
	}
	/* Let the server finish closing earlier connections: wait (3 s at most)
	 * until its descriptor count holds still. */
	long fds_before = proc_fd_count(pid);
	for (int i = 0; i < 30 && fds_before >= 0; i++) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = 100000000 };
		nanosleep(&ts, NULL);
		long fds = proc_fd_count(pid);
		if (fds == fds_before)
			break;
		fds_before = fds;
	}
	long rss_before = proc_rss_kib(pid);
	if (pid > 0 && rss_before < 0)
		warnx("cannot read /proc/%d/status: memory is not measured", (int)pid);

	ics = xcalloc((size_t)n, sizeof *ics);
	for (int i = 0; i < n; i++) {
		ics[i].c.fd = -1;
		ics[i].c.id = i;
		ics[i].c.ops = &idle_ops;
	}
	uint64_t t_start = now_ns();
	uint64_t deadline = t_start + secs_to_ns(opt.connect_timeout + (double)n / 1000.0);
	net_connect_all(ics, sizeof *ics, n, deadline, true, connect_tick);
	while (served < net_open && now_ns() < deadline) {
		net_poll(ms_until(deadline, 100));
		connect_tick();
	}
	double connect_secs = (double)(now_ns() - t_start) / 1e9;
	long established = served;
	if (served < n)
		error_at(-1, "only %ld of %d connections were served within %.1f s", served, n,
			 connect_secs);

	/* Hold: the server has accepted and served every connection; now idle. */
	holding = true;
	uint64_t t_hold = now_ns(), end = t_hold + secs_to_ns(opt.seconds);
	progress_restart(t_hold);
	while (now_ns() < end) {
		net_poll(ms_until(end, 100));
		uint64_t now = now_ns();
		if (progress_due(now))
			progress_show("idle: holding %d connections, %.0f/%.0f s, RSS %ld KiB", net_open,
				      (double)(now - t_hold) / 1e9, opt.seconds, proc_rss_kib(pid));
	}
	long rss_after = proc_rss_kib(pid), fds_after = proc_fd_count(pid);
	int live = net_open;
	stopping = true;
	for (int i = 0; i < n; i++)
		net_close(&ics[i].c);

	bool ok = error_count == 0;
	bool measured = rss_before >= 0 && rss_after >= 0 && established > 0;
	char title[200];
	snprintf(title, sizeof title, "echochat-bench idle: %d connections held %.1f s", n,
		 opt.seconds);
	report_begin(title);
	report_int("connections", "connections", n, NULL);
	report_int("served", "served", established, NULL);
	report_int("live", "open at the end", live, NULL);
	report_num("connect_seconds", "time to connect all", connect_secs, 2, "s");
	report_num("hold_seconds", "held", opt.seconds, 1, "s");
	report_int("src_addrs", "source addresses (--src-addrs)", opt.src_addrs, NULL);
	if (pid > 0) {
		report_int("pid", "server pid", pid, NULL);
		report_str("pid_from", "server pid found from", pid_source);
	} else {
		report_null("pid", "server pid");
	}
	if (measured) {
		report_int("rss_before_kib", "server RSS before", rss_before, "KiB");
		report_int("rss_after_kib", "server RSS after", rss_after, "KiB");
		report_int("fds_before", "server fds before", fds_before, NULL);
		report_int("fds_after", "server fds after", fds_after, NULL);
	} else {
		report_null("rss_before_kib", "server RSS before");
		report_null("rss_after_kib", "server RSS after");
		report_null("fds_before", "server fds before");
		report_null("fds_after", "server fds after");
	}
	if (measured && ok)
		report_num("kib_per_conn", "RSS per connection",
			   (double)(rss_after - rss_before) / (double)established, 2, "KiB");
	else
		report_null("kib_per_conn", "RSS per connection");
	report_int("errors", "errors", error_count, NULL);
	report_result(ok);
	report_end();
	return ok ? 0 : 1;
}
