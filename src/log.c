/* log.c - the logging API: levels, targets, rate limits, escaping of peer bytes. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <syslog.h>
#include <unistd.h>

enum log_target_kind { TARGET_STDERR, TARGET_JOURNAL, TARGET_SYSLOG, TARGET_FILE };

int log_max_level = LOG_LEVEL_INFO;

static enum log_target_kind target_kind = TARGET_STDERR;
static int file_fd = -1;
static char *file_path;
static bool syslog_open;
/* During start-up, errors also go to stderr when the target is elsewhere. */
static bool stderr_echo;
/* A daemon has no stderr: "stderr" then means syslog. */
static bool detached;

static const char *const level_names[] = {
	[LOG_LEVEL_ERROR] = "error",     [LOG_LEVEL_WARNING] = "warning",
	[LOG_LEVEL_NOTICE] = "notice",   [LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

/* Return the name of a level. */
const char *
log_level_name(int level)
{
	if (level < LOG_LEVEL_ERROR || level > LOG_LEVEL_DEBUG)
		return "?";
	return level_names[level];
}

/* Return the level called name (case-insensitive), or -1. */
int
log_level_parse(const char *name)
{
	for (int level = LOG_LEVEL_ERROR; level <= LOG_LEVEL_DEBUG; level++)
		if (strcasecmp(name, level_names[level]) == 0)
			return level;
	return -1;
}

/* Tell whether stderr is the stream systemd-journald gave us (JOURNAL_STREAM=dev:ino). */
static bool
stderr_is_journal(void)
{
	const char *stream = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char *end;

	if (stream == NULL)
		return false;
	errno = 0;
	dev = strtoull(stream, &end, 10);
	if (errno != 0 || end == stream || *end != ':')
		return false;
	stream = end + 1;
	ino = strtoull(stream, &end, 10);
	if (errno != 0 || end == stream || *end != '\0')
		return false;
	if (fstat(STDERR_FILENO, &st) == -1)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* Open a file target for appending; returns the fd or -1. */
static int
open_log_file(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
}

/* Switch to the settings' level and target; on failure keep the current ones. */
int
log_open(const struct log_settings *settings, char *err, size_t errlen)
{
	enum log_target_kind kind;
	int fd = -1;

	/* A daemon has no stderr: "stderr" then means syslog. */
	if (strcmp(settings->target, "syslog") == 0 ||
	    (strcmp(settings->target, "stderr") == 0 && detached))
		kind = TARGET_SYSLOG;
	else if (strcmp(settings->target, "stderr") == 0)
		kind = stderr_is_journal() ? TARGET_JOURNAL : TARGET_STDERR;
	else if (target_kind == TARGET_FILE && file_path != NULL &&
	         strcmp(settings->target, file_path) == 0) {
		/* The same file: reopen it for logrotate, but a failure (say, after dropping
		 * privileges) keeps the open descriptor instead of failing a reload. */
		log_reopen();
		log_max_level = settings->level;
		return 0;
	} else {
		kind = TARGET_FILE;
		fd = open_log_file(settings->target);
		if (fd == -1) {
			snprintf(err, errlen, "cannot open log file %s: %s", settings->target,
			         strerror(errno));
			return -1;
		}
	}
	if (file_fd != -1)
		close(file_fd);
	free(file_path);
	file_fd = fd;
	file_path = kind == TARGET_FILE ? strdup(settings->target) : NULL;
	if (kind == TARGET_SYSLOG && !syslog_open) {
		openlog("echochatd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
		syslog_open = true;
	} else if (kind != TARGET_SYSLOG && syslog_open) {
		closelog();
		syslog_open = false;
	}
	target_kind = kind;
	log_max_level = settings->level;
	return 0;
}

/* Reopen a file target (after logrotate moved it away). */
void
log_reopen(void)
{
	int fd;

	if (target_kind != TARGET_FILE || file_path == NULL)
		return;
	fd = open_log_file(file_path);
	if (fd == -1) {
		log_warn("cannot reopen log file %s", file_path);
		return;
	}
	close(file_fd);
	file_fd = fd;
}

/* Close the target and go back to stderr. */
void
log_close(void)
{
	if (file_fd != -1)
		close(file_fd);
	file_fd = -1;
	free(file_path);
	file_path = NULL;
	if (syslog_open)
		closelog();
	syslog_open = false;
	target_kind = TARGET_STDERR;
}

/* From now on the process has no stderr worth writing to (daemon mode). */
void
log_set_detached(bool on)
{
	detached = on;
}

/* Make errors also appear on stderr while the daemon starts, whatever the target. */
void
log_set_stderr_echo(bool on)
{
	stderr_echo = on;
}

/* Write all of buf to fd, retrying short writes; logging must not fail loudly. */
static void
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

/* Format a local timestamp with milliseconds into buf. */
static void
format_timestamp(char *buf, size_t len)
{
	struct timeval tv;
	struct tm tm;
	size_t n;

	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03ld", (long)(tv.tv_usec / 1000));
}

/* Emit one formatted message to the current target. */
static void
log_emit(int level, const char *msg)
{
	char line[2048 + 64];
	char stamp[40];
	int n;

	switch (target_kind) {
	case TARGET_SYSLOG:
		syslog(level, "%s", msg);
		break;
	case TARGET_JOURNAL:
		n = snprintf(line, sizeof(line), "<%d>%s\n", level, msg);
		write_all(STDERR_FILENO, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
		break;
	case TARGET_STDERR:
	case TARGET_FILE:
		format_timestamp(stamp, sizeof(stamp));
		n = snprintf(line, sizeof(line), "%s %s: %s\n", stamp, log_level_name(level), msg);
		if ((size_t)n >= sizeof(line)) {
			n = sizeof(line) - 1;
			line[n - 1] = '\n';
		}
		write_all(target_kind == TARGET_FILE ? file_fd : STDERR_FILENO, line, (size_t)n);
		break;
	}
	if (stderr_echo && level <= LOG_LEVEL_ERROR && target_kind != TARGET_STDERR &&
	    target_kind != TARGET_JOURNAL) {
		n = snprintf(line, sizeof(line), "echochatd: %s\n", msg);
		write_all(STDERR_FILENO, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
	}
}

/* Log a message at level, with ": strerror(errno)" appended when asked; errno is kept. */
void
log_write(int level, bool with_errno, const char *fmt, ...)
{
	int saved_errno = errno;
	char msg[2048];
	va_list ap;
	int n;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (with_errno && n >= 0 && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", strerror(saved_errno));
	log_emit(level, msg);
	errno = saved_errno;
}

/* Log at error level with strerror(errno) and exit 1. */
void
fatal(const char *fmt, ...)
{
	int saved_errno = errno;
	char msg[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", strerror(saved_errno));
	log_emit(LOG_LEVEL_ERROR, msg);
	exit(1);
}

/* Log at error level and exit 1. */
void
fatalx(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_emit(LOG_LEVEL_ERROR, msg);
	exit(1);
}

/* Tell whether a rate-limited message may be logged now; report how many were held back. */
bool
log_ratelimit_pass(struct log_ratelimit *rl, time_t now, unsigned long *suppressed)
{
	if (rl->window_start != 0 && now - rl->window_start < rl->interval) {
		rl->suppressed++;
		return false;
	}
	rl->window_start = now;
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	return true;
}

/* Copy peer bytes into dst as printable ASCII (\xNN escapes); always NUL-terminates. */
size_t
log_escape(char *dst, size_t dstlen, const void *src, size_t srclen)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = src;
	size_t o = 0;

	if (dstlen == 0)
		return 0;
	for (size_t i = 0; i < srclen; i++) {
		unsigned char ch = s[i];
		if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = (char)ch;
		} else {
			if (o + 4 >= dstlen)
				break;
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[ch >> 4];
			dst[o++] = hex[ch & 15];
		}
	}
	dst[o] = '\0';
	return o;
}
