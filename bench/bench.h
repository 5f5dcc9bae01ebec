/* bench.h - echochat-bench, the load generator shipped with echochatd: shared declarations. */
#ifndef ECHOCHAT_BENCH_H
#define ECHOCHAT_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#define NORETURN __attribute__((noreturn))

/* ------------------------------------------------------------------ options */

enum mode { MODE_ECHO, MODE_CHAT, MODE_CONNECT, MODE_IDLE };

struct options {
	enum mode mode;
	const char *mode_name;
	const char *host;
	int port;
	int conns;          /* echo: connections; connect: concurrency */
	size_t size;        /* echo: message size */
	int depth;          /* echo: messages in flight per connection */
	double seconds;     /* echo, connect: measured time; chat: timeout; idle: hold */
	double warmup;      /* echo, connect */
	int receivers;      /* chat */
	int senders;        /* chat */
	long messages;      /* chat: lines per sender */
	double rate;        /* chat: lines per second per sender, 0 = as fast as possible */
	int sender_port;    /* chat: senders connect here (another node of a cluster); 0 = port */
	long idle_conns;    /* idle: -n */
	pid_t pid;          /* idle: the server's pid (0 = find it from the listening socket) */
	int src_addrs;      /* bind clients to 127.0.0.2 .. 127.0.0.(K+1); -1 = automatic */
	double connect_timeout;
	bool json;
	bool progress;      /* stderr is a terminal */
};

extern struct options opt;
extern struct sockaddr_storage target;
extern socklen_t target_len;
extern char target_name[80]; /* "127.0.0.1:7007" or "[::1]:7007" */
extern struct sockaddr_storage sender_target; /* chat --sender-port: where senders connect */

int run_echo(void);
int run_chat(void);
int run_connect(void);
int run_idle(void);

/* ------------------------------------------------------------------ util.c */

extern const char *progname;

void die(const char *fmt, ...) PRINTF_LIKE(1, 2) NORETURN;      /* usage/setup error: exit 2 */
void warnx(const char *fmt, ...) PRINTF_LIKE(1, 2);
void *xcalloc(size_t n, size_t size);
void *xmalloc(size_t n);

uint64_t now_ns(void);
uint64_t secs_to_ns(double s);

/* Counted errors: each is printed (the first few of them) and counted. */
extern long error_count;
void error_at(int conn, const char *fmt, ...) PRINTF_LIKE(2, 3);
void errors_flush_note(void);

/* Run failure that ends the program (refused connection and the like): exit 1. */
void fail_run(const char *fmt, ...) PRINTF_LIKE(1, 2) NORETURN;

/* Latency histogram, log-linear: 128 buckets per power of two (within 0.4 %). */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t min, max;
	double sum;
	uint64_t bucket[HIST_BUCKETS];
};

void hist_reset(struct hist *h);
void hist_add(struct hist *h, uint64_t ns);
double hist_percentile_us(const struct hist *h, double p);
double hist_mean_us(const struct hist *h);

/* Progress line on stderr (only when it is a terminal). */
bool progress_due(uint64_t now);
void progress_restart(uint64_t now); /* the next line one second from now */
void progress_show(const char *fmt, ...) PRINTF_LIKE(1, 2);
void progress_clear(void);

/* The report: a table on stdout, or one JSON object with --json. Keys are
 * JSON names; the table shows the label. */
void report_begin(const char *title);
void report_str(const char *key, const char *label, const char *value);
void report_int(const char *key, const char *label, long long value, const char *unit);
void report_num(const char *key, const char *label, double value, int decimals, const char *unit);
void report_null(const char *key, const char *label);
void report_bool(const char *key, const char *label, bool value);
void report_latency(const struct hist *h, bool valid);
/* "ok": true/false; the table says "ok" or "FAILED (N errors)". */
void report_result(bool ok);
void report_end(void);

/* /proc readers; -1 when unknown. */
long proc_rss_kib(pid_t pid);
long proc_fd_count(pid_t pid);
pid_t find_listener_pid(const struct sockaddr_storage *ss);

/* ------------------------------------------------------------------- net.c */

enum conn_state { CONN_NEW, CONN_CONNECTING, CONN_OPEN, CONN_CLOSED };

struct conn;

struct conn_ops {
	void (*connected)(struct conn *c);
	void (*connect_failed)(struct conn *c, int err);
	void (*readable)(struct conn *c);
	void (*writable)(struct conn *c);
};

struct conn {
	int fd;
	int id;
	enum conn_state state;
	bool want_out;
	const struct conn_ops *ops;
	bool confirmed;   /* the server has answered on it */
	bool to_sender_target; /* connect to sender_target instead of target */
	uint64_t started; /* when connect() was called */
};

extern int net_connecting; /* connects in progress */
extern int net_open;       /* open connections */
extern int net_unconfirmed; /* open, not yet confirmed */
extern uint8_t net_rxbuf[256 * 1024];

void net_init(void);
/* Start connecting; source address number `slot` with --src-addrs. False on
 * immediate failure (connect_failed has been called). */
bool net_connect(struct conn *c, unsigned slot);
void net_want_out(struct conn *c, bool want);
/* Wait for events at most timeout_ms, dispatch them. */
void net_poll(int timeout_ms);
void net_close(struct conn *c);
/* recv into net_rxbuf: >0 bytes, 0 EOF, -1 nothing now, -2 error (errno set). */
ssize_t net_recv(struct conn *c);
/* send: bytes written, 0 when the socket is full, -1 error (errno set). */
ssize_t net_send(struct conn *c, const void *p, size_t n);
int ms_until(uint64_t deadline_ns, int cap_ms);
/* Connect n connections (base, base + stride, ...), polling until every one
 * is open or has failed or the deadline passes (then the rest fail with
 * ETIMEDOUT); tick() runs now and then. A connection is in progress from
 * connect() until it is open or, with wait_confirm, until the mode has seen
 * the server serve it (net_confirm): at most MAX_PENDING at a time, below the
 * server's listen backlog (128 by default), since a completed handshake only
 * means that the kernel queued the connection, not that the server took it. */
#define MAX_PENDING 64
void net_connect_all(void *base, size_t stride, int n, uint64_t deadline, bool wait_confirm,
		     void (*tick)(void));
/* The server has served this connection (it answered). */
void net_confirm(struct conn *c);
/* The explanation for a connection that fails now, for error messages. */
const char *connect_hint(int err);
/* Describe bytes for an error message: printable text in quotes, else hex. */
void describe_bytes(char *out, size_t outlen, const uint8_t *p, size_t n);

#endif
