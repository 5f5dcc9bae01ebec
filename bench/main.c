/*
 * echochat-bench - the benchmark tool shipped with echochatd.
 *
 * Modes: echo (round trips, throughput and latency, every byte verified), chat
 * (room fan-out: deliveries per second, delivery latency, sequence checks),
 * connect (connections per second), idle (server memory per idle connection).
 * Single-threaded, epoll; loopback targets only. See echochat-bench(1).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

struct options opt = {
	.host = "127.0.0.1",
	.port = -1,
	.conns = -1,
	.size = 64,
	.depth = 1,
	.seconds = -1,
	.warmup = -1,
	.receivers = 100,
	.senders = 1,
	.messages = 10000,
	.idle_conns = -1,
	.src_addrs = -1,
	.connect_timeout = 10,
};

struct sockaddr_storage target;
socklen_t target_len;
char target_name[80];
struct sockaddr_storage sender_target;

static void usage(FILE *f)
{
	fprintf(f,
"usage: %s MODE [options]\n"
"\n"
"  echo     [-H host] [-p port] [-c CONNS] [-s SIZE] [-d DEPTH] [-t SECONDS] [-w WARMUP]\n"
"           CONNS connections (50) each keep DEPTH (1) messages of SIZE bytes (64;\n"
"           K and M suffixes) in flight, for SECONDS (5) after WARMUP (1) seconds;\n"
"           every echoed byte is verified. Default port 7007.\n"
"  chat     [-H host] [-p port] [-r RECEIVERS] [-S SENDERS] [-m MESSAGES] [-t TIMEOUT]\n"
"           [--rate LINES_PER_S] [--sender-port PORT]\n"
"           RECEIVERS (100) and SENDERS (1) join #bench; each sender sends MESSAGES\n"
"           (10000) lines, as fast as it can or --rate lines per second; ends when\n"
"           every line reached every receiver, or after TIMEOUT (60) seconds.\n"
"           Default port 7008. The daemon must run with [chat] rate = 0.\n"
"           --sender-port: the senders connect to this port, another node of a\n"
"           cluster (same address), to measure cross-node fan-out.\n"
"  connect  [-H host] [-p port] [-c CONCURRENCY] [-t SECONDS] [-w WARMUP]\n"
"           connect, echo one byte, close, CONCURRENCY (50) at a time, for SECONDS\n"
"           (5) after WARMUP (1). Echo port (7007).\n"
"  idle     [-H host] [-p port] -n N [--pid PID] [-t SECONDS]\n"
"           hold N connections for SECONDS (5); report the server's RSS per\n"
"           connection (PID: found from the listening socket if not given).\n"
"           Default port 7007 (the chat port works too).\n"
"\n"
"common options:\n"
"  -H, --host ADDR           numeric loopback address or localhost (127.0.0.1)\n"
"  -p, --port PORT\n"
"      --src-addrs K         bind clients round-robin to 127.0.0.2 .. 127.0.0.(K+1)\n"
"                            (default: only when local ports would run short)\n"
"      --connect-timeout S   (10)\n"
"      --json                print one JSON object instead of the table\n"
"  -h, --help                this help\n"
"  -V, --version             print the version\n"
"\n"
"Exit status: 0 success, 1 the run failed (errors, refused or dropped\n"
"connections, incomplete delivery), 2 bad usage.\n",
		progname);
}

static long parse_long(const char *s, const char *what, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < lo || v > hi)
		die("bad %s '%s' (want %ld..%ld)", what, s, lo, hi);
	return v;
}

static size_t parse_size(const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	unsigned long long mult = 1;
	if (end != s && (*end == 'k' || *end == 'K'))
		mult = 1024, end++;
	else if (end != s && (*end == 'm' || *end == 'M'))
		mult = 1024ull * 1024, end++;
	if (errno || *end || end == s || s[0] == '-' || v == 0 || v > (16ull << 20) / mult)
		die("bad size '%s' (want 1..16M bytes; K and M suffixes allowed)", s);
	return (size_t)(v * mult);
}

static double parse_secs(const char *s, const char *what, double lo)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || end == s || !(v >= lo) || v > 86400)
		die("bad %s '%s' (want seconds, %g..86400)", what, s, lo);
	return v;
}

/* Only loopback: this tool generates load and runs on shared machines. */
static void resolve_target(void)
{
	const char *host = opt.host;
	struct sockaddr_in *a4 = (struct sockaddr_in *)&target;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&target;

	memset(&target, 0, sizeof target);
	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127)
			die("refusing %s: only loopback targets (127.0.0.0/8, ::1) are allowed", host);
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)opt.port);
		target_len = sizeof *a4;
		snprintf(target_name, sizeof target_name, "%s:%d", host, opt.port);
	} else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
			die("refusing %s: only loopback targets (127.0.0.0/8, ::1) are allowed", host);
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)opt.port);
		target_len = sizeof *a6;
		snprintf(target_name, sizeof target_name, "[%s]:%d", host, opt.port);
	} else {
		die("refusing '%s': give a numeric loopback address (127.0.0.1, ::1) or localhost",
		    host);
	}
	/* same address; with --sender-port, another port: another node of a cluster */
	sender_target = target;
	if (opt.sender_port > 0 && target.ss_family == AF_INET)
		((struct sockaddr_in *)&sender_target)->sin_port = htons((uint16_t)opt.sender_port);
	else if (opt.sender_port > 0)
		((struct sockaddr_in6 *)&sender_target)->sin6_port = htons((uint16_t)opt.sender_port);
}

static void raise_fd_limit(long need)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)need + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("getrlimit: %s", strerror(errno));
	if (rl.rlim_cur >= want)
		return;
	if (rl.rlim_max < want)
		rl.rlim_max = want; /* needs privilege (CAP_SYS_RESOURCE); fails cleanly otherwise */
	rl.rlim_cur = want;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("%ld connections need an open-file limit of %lu: %s (try ulimit -n %lu)", need,
		    (unsigned long)want, strerror(errno), (unsigned long)want);
}

/* Local ports available to one source address. */
static long ephemeral_ports(void)
{
	long lo = 32768, hi = 60999;
	char line[64];
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	if (f) {
		if (fgets(line, sizeof line, f)) {
			char *end;
			long a = strtol(line, &end, 10);
			long b = strtol(end, NULL, 10);
			if (a > 0 && b >= a)
				lo = a, hi = b;
		}
		fclose(f);
	}
	return hi - lo + 1;
}

static void on_alarm(int sig)
{
	static const char msg[] = "echochat-bench: hard time limit reached, exiting\n";
	ssize_t r;

	(void)sig;
	r = write(2, msg, sizeof msg - 1);
	(void)r;
	_exit(1);
}

enum {
	OPT_JSON = 256, OPT_PID, OPT_SRC, OPT_RATE, OPT_CONNECT_TIMEOUT, OPT_SENDER_PORT,
};

/* Which modes take which option (bit per mode). */
#define M_ECHO (1u << MODE_ECHO)
#define M_CHAT (1u << MODE_CHAT)
#define M_CONNECT (1u << MODE_CONNECT)
#define M_IDLE (1u << MODE_IDLE)
#define M_ALL (M_ECHO | M_CHAT | M_CONNECT | M_IDLE)

static unsigned option_modes(int ch)
{
	switch (ch) {
	case 'c': return M_ECHO | M_CONNECT;
	case 's': case 'd': return M_ECHO;
	case 'w': return M_ECHO | M_CONNECT;
	case 'r': case 'S': case 'm': case OPT_RATE: case OPT_SENDER_PORT: return M_CHAT;
	case 'n': case OPT_PID: return M_IDLE;
	default: return M_ALL;
	}
}

static void parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "host", required_argument, 0, 'H' },
		{ "port", required_argument, 0, 'p' },
		{ "conns", required_argument, 0, 'c' },
		{ "concurrency", required_argument, 0, 'c' },
		{ "size", required_argument, 0, 's' },
		{ "depth", required_argument, 0, 'd' },
		{ "time", required_argument, 0, 't' },
		{ "timeout", required_argument, 0, 't' },
		{ "warmup", required_argument, 0, 'w' },
		{ "receivers", required_argument, 0, 'r' },
		{ "senders", required_argument, 0, 'S' },
		{ "messages", required_argument, 0, 'm' },
		{ "rate", required_argument, 0, OPT_RATE },
		{ "sender-port", required_argument, 0, OPT_SENDER_PORT },
		{ "connections", required_argument, 0, 'n' },
		{ "pid", required_argument, 0, OPT_PID },
		{ "src-addrs", required_argument, 0, OPT_SRC },
		{ "connect-timeout", required_argument, 0, OPT_CONNECT_TIMEOUT },
		{ "json", no_argument, 0, OPT_JSON },
		{ "help", no_argument, 0, 'h' },
		{ "version", no_argument, 0, 'V' },
		{ 0, 0, 0, 0 },
	};
	static const char shortopts[] = "H:p:c:s:d:t:w:r:S:m:n:hV";
	int ch;

	if (argc < 2) {
		usage(stderr);
		exit(2);
	}
	const char *m = argv[1];
	if (strcmp(m, "-h") == 0 || strcmp(m, "--help") == 0) {
		usage(stdout);
		exit(0);
	}
	if (strcmp(m, "-V") == 0 || strcmp(m, "--version") == 0) {
		printf("echochat-bench %s\n", PACKAGE_VERSION);
		exit(0);
	}
	if (strcmp(m, "echo") == 0)
		opt.mode = MODE_ECHO;
	else if (strcmp(m, "chat") == 0)
		opt.mode = MODE_CHAT;
	else if (strcmp(m, "connect") == 0)
		opt.mode = MODE_CONNECT;
	else if (strcmp(m, "idle") == 0)
		opt.mode = MODE_IDLE;
	else
		die("unknown mode '%s' (echo, chat, connect or idle; see --help)", m);
	opt.mode_name = m;

	optind = 2;
	while ((ch = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		if (ch == '?') {
			fprintf(stderr, "Try '%s --help'.\n", progname);
			exit(2);
		}
		if (!(option_modes(ch) & (1u << opt.mode))) {
			const struct option *o = longopts;
			while (o->name && o->val != ch)
				o++;
			die("option --%s does not apply to %s mode", o->name ? o->name : "?", m);
		}
		switch (ch) {
		case 'H': opt.host = optarg; break;
		case 'p': opt.port = (int)parse_long(optarg, "port", 1, 65535); break;
		case 'c': opt.conns = (int)parse_long(optarg, "connection count", 1, 1000000); break;
		case 's': opt.size = parse_size(optarg); break;
		case 'd': opt.depth = (int)parse_long(optarg, "depth", 1, 65536); break;
		case 't': opt.seconds = parse_secs(optarg, "time", 0.1); break;
		case 'w': opt.warmup = parse_secs(optarg, "warm-up", 0); break;
		case 'r': opt.receivers = (int)parse_long(optarg, "receiver count", 1, 100000); break;
		case 'S': opt.senders = (int)parse_long(optarg, "sender count", 1, 10000); break;
		case 'm': opt.messages = parse_long(optarg, "message count", 1, 100000000); break;
		case 'n': opt.idle_conns = parse_long(optarg, "connection count", 1, 1000000); break;
		case OPT_RATE: opt.rate = parse_secs(optarg, "rate", 0); break;
		case OPT_SENDER_PORT: opt.sender_port = (int)parse_long(optarg, "sender port", 1, 65535); break;
		case OPT_PID: opt.pid = (pid_t)parse_long(optarg, "pid", 1, 1L << 30); break;
		case OPT_SRC: opt.src_addrs = (int)parse_long(optarg, "source address count", 0, 250); break;
		case OPT_CONNECT_TIMEOUT:
			opt.connect_timeout = parse_secs(optarg, "connect timeout", 0.1);
			break;
		case OPT_JSON: opt.json = true; break;
		case 'h': usage(stdout); exit(0);
		case 'V': printf("echochat-bench %s\n", PACKAGE_VERSION); exit(0);
		default: exit(2);
		}
	}
	if (optind < argc)
		die("unexpected argument '%s'", argv[optind]);

	if (opt.port < 0)
		opt.port = opt.mode == MODE_CHAT ? 7008 : 7007;
	if (opt.conns < 0)
		opt.conns = 50;
	if (opt.seconds < 0)
		opt.seconds = opt.mode == MODE_CHAT ? 60 : 5;
	if (opt.warmup < 0)
		opt.warmup = 1;
	if (opt.mode == MODE_IDLE && opt.idle_conns < 0)
		die("idle mode needs -n N, the number of connections to hold");
	if (opt.mode == MODE_ECHO && (uint64_t)opt.size * (uint64_t)opt.depth > (1ull << 30))
		die("-s SIZE x -d DEPTH must stay within 1 GiB in flight per connection");
	if (opt.mode == MODE_CHAT) {
		double bits = (double)opt.receivers * opt.senders * (double)opt.messages;
		if (bits > 8.0 * (512 << 20))
			die("-r x -S x -m is too large (the sequence check needs a bit per delivery, "
			    "at most 512 MiB)");
		if (opt.rate > 0 && (double)opt.messages / opt.rate > opt.seconds)
			die("-m %ld lines at --rate %g per second take longer than the -t %g s timeout",
			    opt.messages, opt.rate, opt.seconds);
	}
	opt.progress = isatty(STDERR_FILENO);
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	resolve_target();

	long conns;
	switch (opt.mode) {
	case MODE_ECHO: conns = opt.conns; break;
	case MODE_CHAT: conns = (long)opt.receivers + opt.senders; break;
	case MODE_CONNECT: conns = opt.conns; break;
	default: conns = opt.idle_conns; break;
	}
	if (opt.src_addrs > 0 && target.ss_family != AF_INET)
		die("--src-addrs needs an IPv4 target");
	if (opt.src_addrs < 0) {
		/* Automatic: enough source addresses that each keeps half its ports free. */
		long per_addr = ephemeral_ports() / 2;
		if (per_addr < 1)
			per_addr = 1;
		opt.src_addrs = 0;
		if (opt.mode != MODE_CONNECT && conns > per_addr) {
			if (target.ss_family != AF_INET)
				die("%ld connections need more local ports than one address has: "
				    "use an IPv4 target", conns);
			long k = (conns + per_addr - 1) / per_addr;
			opt.src_addrs = k > 250 ? 250 : (int)k;
			if (!opt.json)
				warnx("%ld connections: binding them to 127.0.0.2 .. 127.0.0.%d "
				      "(--src-addrs %d)", conns, opt.src_addrs + 1, opt.src_addrs);
		}
	}
	raise_fd_limit(conns);
	signal(SIGPIPE, SIG_IGN);

	/* The backstop: whatever happens, the run ends. */
	double budget = opt.connect_timeout * 3 + opt.seconds + opt.warmup + 30;
	if (opt.mode == MODE_IDLE)
		budget += (double)conns / 1000.0;
	signal(SIGALRM, on_alarm);
	alarm((unsigned)budget);

	net_init();
	switch (opt.mode) {
	case MODE_ECHO: return run_echo();
	case MODE_CHAT: return run_chat();
	case MODE_CONNECT: return run_connect();
	default: return run_idle();
	}
}
