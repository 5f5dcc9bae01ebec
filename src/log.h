/* log.h - one line per event, to stderr, the journal, syslog or a file. */
#ifndef ECHOCHATD_LOG_H
#define ECHOCHATD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Levels are syslog priorities, so they map 1:1 onto syslog and "<N>" journal prefixes. */
enum log_level {
	LOG_LEVEL_ERROR = 3,
	LOG_LEVEL_WARNING = 4,
	LOG_LEVEL_NOTICE = 5,
	LOG_LEVEL_INFO = 6,
	LOG_LEVEL_DEBUG = 7,
};

struct log_settings {
	int level;
	const char *target; /* "stderr", "syslog" or an absolute file path */
};

/* Messages above this level are not even formatted. */
extern int log_max_level;

int log_open(const struct log_settings *settings, char *err, size_t errlen);
void log_reopen(void);
void log_close(void);
void log_set_stderr_echo(bool on);
void log_set_detached(bool on);

const char *log_level_name(int level);
int log_level_parse(const char *name);

void log_write(int level, bool with_errno, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
__attribute__((noreturn)) void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define log_enabled(level) ((level) <= log_max_level)
#define log_at_(level, errno_, ...)                                                        \
	do {                                                                               \
		if (log_enabled(level))                                                    \
			log_write((level), (errno_), __VA_ARGS__);                          \
	} while (0)
#define log_error(...) log_at_(LOG_LEVEL_ERROR, false, __VA_ARGS__)
#define log_warn(...) log_at_(LOG_LEVEL_WARNING, true, __VA_ARGS__) /* appends strerror(errno) */
#define log_warnx(...) log_at_(LOG_LEVEL_WARNING, false, __VA_ARGS__)
#define log_notice(...) log_at_(LOG_LEVEL_NOTICE, false, __VA_ARGS__)
#define log_info(...) log_at_(LOG_LEVEL_INFO, false, __VA_ARGS__)
#define log_debug(...) log_at_(LOG_LEVEL_DEBUG, false, __VA_ARGS__)

/*
 * A rate limit for repeated warnings from one cause: the first in each interval passes,
 * the others are counted, and the next one that passes says how many were suppressed.
 */
struct log_ratelimit {
	time_t interval;
	time_t window_start;
	unsigned long suppressed;
};

bool log_ratelimit_pass(struct log_ratelimit *rl, time_t now, unsigned long *suppressed);

/* Copy peer bytes into dst as printable ASCII (\xNN escapes); always NUL-terminates. */
size_t log_escape(char *dst, size_t dstlen, const void *src, size_t srclen);

#endif
