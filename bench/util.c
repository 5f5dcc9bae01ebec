/* util.c - echochat-bench: messages, clock, histogram, progress line, report, /proc. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

const char *progname = "echochat-bench";

/* ----------------------------------------------------------------- messages */

static bool progress_visible;

void progress_clear(void)
{
	if (progress_visible) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
		progress_visible = false;
	}
}

void die(const char *fmt, ...)
{
	va_list ap;

	progress_clear();
	va_start(ap, fmt);
	fprintf(stderr, "%s: ", progname);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

void warnx(const char *fmt, ...)
{
	va_list ap;

	progress_clear();
	va_start(ap, fmt);
	fprintf(stderr, "%s: ", progname);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		die("out of memory (%zu bytes)", n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		die("out of memory (%zu x %zu bytes)", n, size);
	return p;
}

/* -------------------------------------------------------------------- clock */

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t secs_to_ns(double s)
{
	return (uint64_t)(s * 1e9);
}

/* ------------------------------------------------------------------- errors */

#define ERRORS_SHOWN 10

long error_count;
static long errors_printed;

void error_at(int conn, const char *fmt, ...)
{
	va_list ap;

	error_count++;
	if (errors_printed >= ERRORS_SHOWN)
		return;
	errors_printed++;
	progress_clear();
	va_start(ap, fmt);
	if (conn >= 0)
		fprintf(stderr, "%s: error: connection %d: ", progname, conn);
	else
		fprintf(stderr, "%s: error: ", progname);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

void errors_flush_note(void)
{
	if (error_count > errors_printed)
		warnx("%ld more errors not shown (%ld in all)", error_count - errors_printed,
		      error_count);
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

void fail_run(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	progress_clear();
	fprintf(stderr, "%s: %s\n", progname, msg);
	if (opt.json) {
		printf("{\"mode\": ");
		json_string(stdout, opt.mode_name);
		printf(", \"target\": ");
		json_string(stdout, target_name);
		printf(", \"ok\": false, \"errors\": %ld, \"error\": ", error_count > 0 ? error_count : 1);
		json_string(stdout, msg);
		printf("}\n");
	}
	fflush(stdout);
	exit(1);
}

/* ---------------------------------------------------------------- histogram */

void hist_reset(struct hist *h)
{
	memset(h, 0, sizeof *h);
}

static unsigned hist_index(uint64_t v)
{
	if (v < HIST_SUB)
		return (unsigned)v;
	unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - HIST_SUB_BITS;
	return (shift + 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

/* The middle of a bucket. */
static uint64_t hist_value(unsigned idx)
{
	if (idx < HIST_SUB)
		return idx;
	unsigned shift = idx / HIST_SUB - 1;
	uint64_t low = (uint64_t)(HIST_SUB + idx % HIST_SUB) << shift;
	return low + (((uint64_t)1 << shift) >> 1);
}

void hist_add(struct hist *h, uint64_t ns)
{
	if (h->count == 0 || ns < h->min)
		h->min = ns;
	if (ns > h->max)
		h->max = ns;
	h->count++;
	h->sum += (double)ns;
	h->bucket[hist_index(ns)]++;
}

/* Nearest rank: the smallest value with at least p of all values at or below it. */
double hist_percentile_us(const struct hist *h, double p)
{
	if (h->count == 0)
		return 0;
	double want = p * (double)h->count;
	uint64_t rank = (uint64_t)want;
	if ((double)rank < want || rank == 0)
		rank++;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank) {
			uint64_t v = hist_value(i);
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return (double)v / 1000.0;
		}
	}
	return (double)h->max / 1000.0;
}

double hist_mean_us(const struct hist *h)
{
	return h->count ? h->sum / (double)h->count / 1000.0 : 0;
}

/* ------------------------------------------------------------ progress line */

static uint64_t progress_next;

bool progress_due(uint64_t now)
{
	if (!opt.progress)
		return false;
	if (progress_next == 0)
		progress_next = now + 1000000000u;
	if (now < progress_next)
		return false;
	while (progress_next <= now)
		progress_next += 1000000000u;
	return true;
}

void progress_restart(uint64_t now)
{
	progress_next = now + 1000000000u;
}

void progress_show(const char *fmt, ...)
{
	va_list ap;

	if (!opt.progress)
		return;
	fputs("\r", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\033[K", stderr);
	fflush(stderr);
	progress_visible = true;
}

/* ------------------------------------------------------------------- report */

struct report_row {
	char key[32];
	char label[40];
	char json[64];
	char text[96];
};

#define REPORT_ROWS 64
static struct report_row rows[REPORT_ROWS];
static int nrows;
static char report_title[200];

void report_begin(const char *title)
{
	progress_clear();
	errors_flush_note();
	nrows = 0;
	snprintf(report_title, sizeof report_title, "%s", title);
	report_str("mode", "mode", opt.mode_name);
	report_str("target", "target", target_name);
}

static struct report_row *row_add(const char *key, const char *label)
{
	if (nrows == REPORT_ROWS)
		die("internal error: too many report rows");
	struct report_row *r = &rows[nrows++];
	snprintf(r->key, sizeof r->key, "%s", key);
	snprintf(r->label, sizeof r->label, "%s", label);
	return r;
}

void report_str(const char *key, const char *label, const char *value)
{
	struct report_row *r = row_add(key, label);
	char *j = r->json;

	snprintf(r->text, sizeof r->text, "%s", value);
	/* Values are our own words and numeric addresses; escape anyway. Each
	 * character takes at most 2 bytes, and the closing quote and NUL 2. */
	*j++ = '"';
	for (const char *s = value; *s && (size_t)(j - r->json) + 4 <= sizeof r->json; s++) {
		char ch = *s;
		if ((unsigned char)ch < 0x20)
			ch = ' ';
		if (ch == '"' || ch == '\\')
			*j++ = '\\';
		*j++ = ch;
	}
	*j++ = '"';
	*j = '\0';
}

void report_int(const char *key, const char *label, long long value, const char *unit)
{
	struct report_row *r = row_add(key, label);

	snprintf(r->json, sizeof r->json, "%lld", value);
	snprintf(r->text, sizeof r->text, "%lld%s%s", value, unit ? " " : "", unit ? unit : "");
}

void report_num(const char *key, const char *label, double value, int decimals, const char *unit)
{
	struct report_row *r = row_add(key, label);

	snprintf(r->json, sizeof r->json, "%.*f", decimals, value);
	snprintf(r->text, sizeof r->text, "%.*f%s%s", decimals, value, unit ? " " : "",
		 unit ? unit : "");
}

void report_null(const char *key, const char *label)
{
	struct report_row *r = row_add(key, label);

	snprintf(r->json, sizeof r->json, "null");
	snprintf(r->text, sizeof r->text, "-");
}

void report_bool(const char *key, const char *label, bool value)
{
	struct report_row *r = row_add(key, label);

	snprintf(r->json, sizeof r->json, "%s", value ? "true" : "false");
	snprintf(r->text, sizeof r->text, "%s", value ? "yes" : "no");
}

void report_latency(const struct hist *h, bool valid)
{
	static const struct {
		const char *key, *label;
		double p;
	} pct[] = {
		{ "p50_us", "latency p50", 0.50 },
		{ "p90_us", "latency p90", 0.90 },
		{ "p99_us", "latency p99", 0.99 },
		{ "p999_us", "latency p99.9", 0.999 },
	};

	valid = valid && h->count > 0;
	for (size_t i = 0; i < sizeof pct / sizeof pct[0]; i++) {
		if (valid)
			report_num(pct[i].key, pct[i].label, hist_percentile_us(h, pct[i].p), 1, "us");
		else
			report_null(pct[i].key, pct[i].label);
	}
	if (valid) {
		report_num("max_us", "latency max", (double)h->max / 1000.0, 1, "us");
		report_num("mean_us", "latency mean", hist_mean_us(h), 1, "us");
	} else {
		report_null("max_us", "latency max");
		report_null("mean_us", "latency mean");
	}
}

void report_result(bool ok)
{
	struct report_row *r = row_add("ok", "result");

	snprintf(r->json, sizeof r->json, "%s", ok ? "true" : "false");
	if (ok)
		snprintf(r->text, sizeof r->text, "ok");
	else
		snprintf(r->text, sizeof r->text, "FAILED (%ld error%s, see above)", error_count,
			 error_count == 1 ? "" : "s");
}

void report_end(void)
{
	if (opt.json) {
		fputc('{', stdout);
		for (int i = 0; i < nrows; i++)
			printf("%s\"%s\": %s", i ? ", " : "", rows[i].key, rows[i].json);
		fputs("}\n", stdout);
	} else {
		int width = 0;
		for (int i = 0; i < nrows; i++) {
			int w = (int)strlen(rows[i].label);
			if (w > width)
				width = w;
		}
		printf("%s\n", report_title);
		for (int i = 0; i < nrows; i++)
			printf("  %-*s  %s\n", width, rows[i].label, rows[i].text);
	}
	fflush(stdout);
}

/* --------------------------------------------------------------------- /proc */

long proc_rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, "VmRSS:", 6) == 0) {
			char *end;
			long v = strtol(line + 6, &end, 10);
			if (end != line + 6 && v >= 0)
				kib = v;
			break;
		}
	}
	fclose(f);
	return kib;
}

long proc_fd_count(pid_t pid)
{
	char path[64];
	long n = 0;
	struct dirent *e;

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (d == NULL)
		return -1;
	// cppcheck-suppress readdirCalled ; one thread, readdir_r is deprecated
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* The inode of a listening TCP socket on the target's port, from /proc/net/tcp{,6}. */
static unsigned long listener_inode(const char *table, unsigned port)
{
	char line[512];
	unsigned long found = 0;
	FILE *f = fopen(table, "r");

	if (f == NULL)
		return 0;
	while (found == 0 && fgets(line, sizeof line, f)) {
		/* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
		char *field[10], *save = NULL;
		int n = 0;
		for (char *t = strtok_r(line, " \t\n", &save); t && n < 10;
		     t = strtok_r(NULL, " \t\n", &save))
			field[n++] = t;
		if (n < 10 || strcmp(field[3], "0A") != 0) /* TCP_LISTEN */
			continue;
		char *colon = strrchr(field[1], ':');
		if (colon != NULL && strtoul(colon + 1, NULL, 16) == port)
			found = strtoul(field[9], NULL, 10);
	}
	fclose(f);
	return found;
}

pid_t find_listener_pid(const struct sockaddr_storage *ss)
{
	unsigned port = ntohs(ss->ss_family == AF_INET6
				      ? ((const struct sockaddr_in6 *)ss)->sin6_port
				      : ((const struct sockaddr_in *)ss)->sin_port);
	unsigned long inode = listener_inode("/proc/net/tcp", port);
	if (inode == 0)
		inode = listener_inode("/proc/net/tcp6", port);
	if (inode == 0)
		return 0;

	char want[64];
	snprintf(want, sizeof want, "socket:[%lu]", inode);
	pid_t found = 0;
	DIR *procs = opendir("/proc");
	struct dirent *p;
	if (procs == NULL)
		return 0;
	// cppcheck-suppress readdirCalled
	while (found == 0 && (p = readdir(procs)) != NULL) {
		if (p->d_name[0] < '1' || p->d_name[0] > '9')
			continue;
		char dir[300];
		snprintf(dir, sizeof dir, "/proc/%s/fd", p->d_name);
		DIR *fds = opendir(dir);
		struct dirent *e;
		if (fds == NULL)
			continue;
		// cppcheck-suppress readdirCalled
		while (found == 0 && (e = readdir(fds)) != NULL) {
			char path[600], link[64];
			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
			ssize_t n = readlink(path, link, sizeof link - 1);
			if (n <= 0)
				continue;
			link[n] = '\0';
			if (strcmp(link, want) == 0)
				found = (pid_t)strtol(p->d_name, NULL, 10);
		}
		closedir(fds);
	}
	closedir(procs);
	return found;
}
