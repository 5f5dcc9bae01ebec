/* config.c - the settings table, INI loading through inih, -o overrides, validation, -T dump. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "command.h"
#include "log.h"

/* A file bigger than this is not a configuration file. */
#define CONFIG_MAX_FILE ((size_t)1024 * 1024)
/* Nor a message of the day. */
#define MOTD_MAX_FILE ((size_t)64 * 1024)

enum key_type {
	KEY_BOOL,
	KEY_UINT,
	KEY_BIND,
	KEY_LOG_LEVEL,
	KEY_LOG_TARGET,
	KEY_SIZE,      /* bytes, with an optional K, M or G (binary) suffix */
	KEY_TEXT,      /* free text */
	KEY_MOTD_FILE, /* "" or an absolute path, read at once */
	KEY_ROOM,      /* a room name, stored as "#name" */
	KEY_PATH,      /* "" or an absolute path */
	KEY_NAME,      /* "" or a user or group name */
	KEY_ACL,       /* "" or addresses and CIDR prefixes */
	KEY_CLUSTER,   /* a boolean that needs the cluster support built in */
	KEY_REDIS,     /* HOST:PORT, [V6]:PORT or an absolute unix socket path */
	KEY_NODE,      /* "" or a node id: letters, digits, '.', '_', '-', ':' */
	KEY_PREFIX,    /* printable, no blanks */
};

/* One row per setting: it drives defaults, parsing, validation, -o and -T. */
struct config_key {
	const char *section;
	const char *name;
	unsigned long min;
	unsigned long max;
	size_t offset;
	const char *default_value;
	enum key_type type;
	bool restart; /* a reload cannot apply it: changing it only logs a warning */
};

/* NOLINTBEGIN(bugprone-macro-parentheses): field names a struct member for offsetof */
#define KEY(section, name, type, min, max, field, def)                                           \
	{ section, name, min, max, offsetof(struct config, field), def, type, false }
#define KEY_RESTART(section, name, type, field, def)                                             \
	{ section, name, 0, 0, offsetof(struct config, field), def, type, true }
#define SERVICE_KEYS(section, field, default_port, default_idle)                                   \
	KEY(section, "enabled", KEY_BOOL, 0, 1, field.enabled, "yes"),                             \
	KEY(section, "bind", KEY_BIND, 0, 0, field.bind, "0.0.0.0, ::"),                          \
	KEY(section, "port", KEY_UINT, 0, 65535, field.port, default_port),                                \
	KEY(section, "backlog", KEY_UINT, 1, 65535, field.backlog, "128"),                         \
	KEY(section, "idle_timeout", KEY_UINT, 0, 604800, field.idle_timeout, default_idle)
/* NOLINTEND(bugprone-macro-parentheses) */

static const struct config_key config_keys[] = {
	KEY("server", "max_clients", KEY_UINT, 1, 1000000, max_clients, "10000"),
	KEY("server", "shutdown_timeout", KEY_UINT, 0, 3600, shutdown_timeout, "10"),
	KEY("server", "tcp_keepalive", KEY_UINT, 0, 86400, tcp_keepalive, "300"),
	KEY_RESTART("server", "pidfile", KEY_PATH, pidfile, ""),
	KEY_RESTART("server", "user", KEY_NAME, user, ""),
	KEY_RESTART("server", "group", KEY_NAME, group, ""),
	KEY("server", "max_clients_per_address", KEY_UINT, 0, 1000000, max_clients_per_address, "64"),
	KEY("server", "allow", KEY_ACL, 0, 0, allow, ""),
	KEY("server", "deny", KEY_ACL, 0, 0, deny, ""),
	KEY("log", "level", KEY_LOG_LEVEL, 0, 0, log_level, "info"),
	KEY("log", "target", KEY_LOG_TARGET, 0, 0, log_target, "stderr"),
	SERVICE_KEYS("echo", echo, "7007", "300"),
	SERVICE_KEYS("chat", chat, "7008", "0"),
	KEY("chat", "motd", KEY_TEXT, 0, 0, chat_settings.motd, ""),
	KEY("chat", "motd_file", KEY_MOTD_FILE, 0, 0, chat_settings.motd_file, ""),
	KEY("chat", "default_room", KEY_ROOM, 0, 0, chat_settings.default_room, "#lobby"),
	KEY("chat", "history", KEY_UINT, 0, 1000, chat_settings.history, "20"),
	KEY("chat", "max_line", KEY_UINT, 16, 65536, chat_settings.max_line, "512"),
	KEY("chat", "max_output", KEY_SIZE, 4096, 1073741824, chat_settings.max_output, "1048576"),
	KEY("chat", "rate", KEY_UINT, 0, 100000, chat_settings.rate, "5"),
	KEY("chat", "burst", KEY_UINT, 1, 100000, chat_settings.burst, "20"),
	KEY("metrics", "enabled", KEY_BOOL, 0, 1, metrics_enabled, "no"),
	KEY("metrics", "bind", KEY_BIND, 0, 0, metrics_bind, "127.0.0.1"),
	KEY("metrics", "port", KEY_UINT, 0, 65535, metrics_port, "9707"),
	KEY_RESTART("cluster", "enabled", KEY_CLUSTER, cluster_enabled, "no"),
	KEY_RESTART("cluster", "redis", KEY_REDIS, cluster_redis, "127.0.0.1:6379"),
	KEY_RESTART("cluster", "node", KEY_NODE, cluster_node, ""),
	KEY_RESTART("cluster", "prefix", KEY_PREFIX, cluster_prefix, "echochat:"),
	KEY("cluster", "heartbeat", KEY_UINT, 1, 3600, cluster_heartbeat, "5"),
};

#define NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/* State of one inih pass over a file or a string. */
struct ini_source {
	const char *name;
	const char *text;
	size_t len;
	size_t pos;
	unsigned line;
	char section[64];
	bool skip_section; /* unknown or broken header: reported once, its keys ignored */
	struct config *cfg;
	struct config_errors *errors;
	unsigned set_on_line[NKEYS];
};

void
config_errors_init(struct config_errors *errors)
{
	memset(errors, 0, sizeof(*errors));
}

/* Free every gathered message. */
void
config_errors_clear(struct config_errors *errors)
{
	for (size_t i = 0; i < errors->count; i++)
		free(errors->messages[i]);
	free(errors->messages);
	config_errors_init(errors);
}

/* Add one formatted error message. */
void
config_errors_add(struct config_errors *errors, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	if (errors->count == errors->capacity) {
		size_t cap = errors->capacity ? errors->capacity * 2 : 8;
		char **grown = realloc(errors->messages, cap * sizeof(*grown));
		if (grown == NULL)
			fatal("realloc");
		errors->messages = grown;
		errors->capacity = cap;
	}
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatal("vasprintf");
	va_end(ap);
	errors->messages[errors->count++] = msg;
}

/* Find the row for section.name, or NULL. */
static const struct config_key *
config_key_find(const char *section, const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(config_keys[i].section, section) == 0 &&
		    strcmp(config_keys[i].name, name) == 0)
			return &config_keys[i];
	return NULL;
}

/* Tell whether any row lives in section. */
static bool
config_section_known(const char *section)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(config_keys[i].section, section) == 0)
			return true;
	return false;
}

#define SLOT(cfg, key, type) ((type *)(void *)((char *)(cfg) + (key)->offset))

/* Quote a value for an error message, escaping what is not printable. */
static const char *
quote(const char *value, char *buf, size_t len)
{
	char escaped[96];
	size_t vlen = strlen(value);

	log_escape(escaped, sizeof(escaped), value, vlen > 64 ? 64 : vlen);
	snprintf(buf, len, "\"%s%s\"", escaped, vlen > 64 ? "..." : "");
	return buf;
}

/* Split "a, b,c" into trimmed items (empty ones kept, so they can be reported). */
size_t
config_list_split(const char *list, char ***items)
{
	size_t count = 0;
	char **out = NULL;
	const char *p = list;

	for (;;) {
		const char *comma = strchr(p, ',');
		const char *end = comma ? comma : p + strlen(p);
		const char *start = p;
		char **grown;

		while (start < end && isspace((unsigned char)*start))
			start++;
		while (end > start && isspace((unsigned char)end[-1]))
			end--;
		grown = realloc(out, (count + 1) * sizeof(*out));
		if (grown == NULL)
			fatal("realloc");
		out = grown;
		out[count] = strndup(start, (size_t)(end - start));
		if (out[count] == NULL)
			fatal("strndup");
		count++;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	*items = out;
	return count;
}

void
config_list_free(char **items, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(items[i]);
	free(items);
}

/* Tell whether s is a syntactically valid host name (RFC 1123; last label not all digits). */
static bool
valid_host_name(const char *s)
{
	size_t len = strlen(s), label = 0;
	bool label_numeric = true;

	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			label_numeric = true;
		} else if (isalnum(ch) || (ch == '-' && label > 0)) {
			if (++label > 63)
				return false;
			if (!isdigit(ch))
				label_numeric = false;
		} else
			return false;
	}
	return label > 0 && s[len - 1] != '-' && !label_numeric;
}

/* Tell whether s is empty or a portable user or group name. */
static bool
valid_account_name(const char *s)
{
	size_t len = strlen(s);

	if (len > 32 || s[0] == '-')
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

/* Tell whether value is HOST:PORT, [IPV6]:PORT or an absolute path (a unix socket). */
static bool
valid_redis_address(const char *value)
{
	unsigned char addr[sizeof(struct in6_addr)];
	char host[256];
	const char *colon, *port;
	size_t hostlen;
	unsigned long n;
	char *end;

	if (value[0] == '/')
		return value[1] != '\0';
	if (value[0] == '[') {
		const char *close = strchr(value, ']');
		if (close == NULL || close[1] != ':')
			return false;
		hostlen = (size_t)(close - value - 1);
		if (hostlen == 0 || hostlen >= sizeof(host))
			return false;
		memcpy(host, value + 1, hostlen);
		host[hostlen] = '\0';
		if (inet_pton(AF_INET6, host, addr) != 1)
			return false;
		port = close + 2;
	} else {
		colon = strrchr(value, ':');
		if (colon == NULL || strchr(value, ':') != colon)
			return false;
		hostlen = (size_t)(colon - value);
		if (hostlen == 0 || hostlen >= sizeof(host))
			return false;
		memcpy(host, value, hostlen);
		host[hostlen] = '\0';
		if (inet_pton(AF_INET, host, addr) != 1 && !valid_host_name(host))
			return false;
		port = colon + 1;
	}
	if (!isdigit((unsigned char)port[0]))
		return false;
	errno = 0;
	n = strtoul(port, &end, 10);
	return errno == 0 && *end == '\0' && n >= 1 && n <= 65535;
}

/* Tell whether s is a node id: 1-64 letters, digits, '.', '_', '-' or ':'. */
bool
config_valid_node(const char *s, size_t len)
{
	if (len == 0 || len > CLUSTER_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		/* s[i] != 0 first: strchr finds the NUL terminator of "._-:" too */
		if (!isalnum((unsigned char)s[i]) && (s[i] == '\0' || strchr("._-:", s[i]) == NULL))
			return false;
	return true;
}

/* Strip the brackets of "[::1]" in place. */
static void
strip_brackets(char *item)
{
	size_t len = strlen(item);

	if (len >= 2 && item[0] == '[' && item[len - 1] == ']') {
		memmove(item, item + 1, len - 2);
		item[len - 2] = '\0';
	}
}

/* Validate and normalise an address list into "a, b". */
static bool
parse_bind(const char *value, char **out, char *why, size_t whylen)
{
	char **items, qbuf[128];
	size_t count = config_list_split(value, &items), total = 0;
	char *joined, *p;

	for (size_t i = 0; i < count; i++) {
		unsigned char addr[sizeof(struct in6_addr)];
		strip_brackets(items[i]);
		if (items[i][0] == '\0') {
			snprintf(why, whylen, "empty address in %s", quote(value, qbuf, sizeof(qbuf)));
			config_list_free(items, count);
			return false;
		}
		if (inet_pton(AF_INET, items[i], addr) != 1 &&
		    inet_pton(AF_INET6, items[i], addr) != 1 && !valid_host_name(items[i])) {
			snprintf(why, whylen, "%s is not an IP address or host name",
			         quote(items[i], qbuf, sizeof(qbuf)));
			config_list_free(items, count);
			return false;
		}
		total += strlen(items[i]) + 2;
	}
	joined = malloc(total + 1);
	if (joined == NULL)
		fatal("malloc");
	p = joined;
	for (size_t i = 0; i < count; i++)
		p += sprintf(p, "%s%s", i ? ", " : "", items[i]);
	config_list_free(items, count);
	*out = joined;
	return true;
}

/* Parse an unsigned decimal number within [min, max]. */
static bool
parse_uint(const char *value, unsigned long min, unsigned long max, unsigned *out, char *why,
           size_t whylen)
{
	char qbuf[128];
	unsigned long long n = 0;

	if (*value == '\0') {
		snprintf(why, whylen, "a number is required");
		return false;
	}
	for (const char *p = value; *p != '\0'; p++) {
		if (!isdigit((unsigned char)*p)) {
			snprintf(why, whylen, "%s is not a number", quote(value, qbuf, sizeof(qbuf)));
			return false;
		}
		if (n <= UINT32_MAX)
			n = n * 10 + (unsigned)(*p - '0');
	}
	if (n < min || n > max) {
		snprintf(why, whylen, "%s is out of range (%lu..%lu)", value, min, max);
		return false;
	}
	*out = (unsigned)n;
	return true;
}

/* Parse a byte count: a number with an optional K, M or G suffix (KiB, MiB, GiB). */
static bool
parse_size(const char *value, unsigned long min, unsigned long max, unsigned *out, char *why,
           size_t whylen)
{
	static const struct {
		const char *suffix;
		unsigned long long factor;
	} units[] = {{"", 1},          {"k", 1024},       {"kib", 1024},       {"m", 1048576},
	             {"mib", 1048576}, {"g", 1073741824}, {"gib", 1073741824}};
	char qbuf[128], digits[32];
	size_t ndigits = strspn(value, "0123456789");
	unsigned long long n;

	if (ndigits == 0 || ndigits >= sizeof(digits)) {
		snprintf(why, whylen, "%s is not a size (bytes, or a number with K, M or G)",
		         quote(value, qbuf, sizeof(qbuf)));
		return false;
	}
	memcpy(digits, value, ndigits);
	digits[ndigits] = '\0';
	n = strtoull(digits, NULL, 10);
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(value + ndigits, units[i].suffix) != 0)
			continue;
		/* compare before multiplying: n * factor could wrap around */
		if (ndigits > 12 || n > max / units[i].factor || n * units[i].factor < min) {
			snprintf(why, whylen, "%s is out of range (%lu..%lu bytes)", value, min, max);
			return false;
		}
		*out = (unsigned)(n * units[i].factor);
		return true;
	}
	snprintf(why, whylen, "%s is not a size (bytes, or a number with K, M or G)",
	         quote(value, qbuf, sizeof(qbuf)));
	return false;
}

/* Read a message-of-the-day file whole. */
static bool
read_motd_file(const char *path, char **text, char *why, size_t whylen)
{
	FILE *fp = fopen(path, "re");
	char *buf;
	size_t len;

	if (fp == NULL) {
		snprintf(why, whylen, "cannot read %s: %s", path, strerror(errno));
		return false;
	}
	buf = malloc(MOTD_MAX_FILE + 1);
	if (buf == NULL)
		fatal("malloc");
	len = fread(buf, 1, MOTD_MAX_FILE + 1, fp);
	if (ferror(fp) || len > MOTD_MAX_FILE) {
		snprintf(why, whylen, ferror(fp) ? "cannot read %s" : "%s is larger than 64 KiB", path);
		free(buf);
		fclose(fp);
		return false;
	}
	fclose(fp);
	buf[len] = '\0';
	*text = buf;
	return true;
}

/* Parse a boolean in any of its usual spellings. */
static bool
parse_bool(const char *value, bool *out, char *why, size_t whylen)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	char qbuf[128];

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(value, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(value, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	snprintf(why, whylen, "%s is not a boolean (yes/no, true/false, on/off, 1/0)",
	         quote(value, qbuf, sizeof(qbuf)));
	return false;
}

/* Replace the string in a slot. */
static void
set_string(char **slot, char *value)
{
	free(*slot);
	*slot = value;
}

/* Store a copy of an already validated string value. */
static bool
store_copy(struct config *cfg, const struct config_key *key, const char *value)
{
	char *copy = strdup(value);

	if (copy == NULL)
		fatal("strdup");
	set_string(SLOT(cfg, key, char *), copy);
	return true;
}

/* Parse value into the key's slot; on failure say why and leave the slot alone. */
static bool
parse_value(const struct config_key *key, const char *value, struct config *cfg, char *why,
            size_t whylen)
{
	char qbuf[128], *copy;
	int level;

	switch (key->type) {
	case KEY_BOOL:
		return parse_bool(value, SLOT(cfg, key, bool), why, whylen);
	case KEY_UINT:
		return parse_uint(value, key->min, key->max, SLOT(cfg, key, unsigned), why, whylen);
	case KEY_BIND:
		if (!parse_bind(value, &copy, why, whylen))
			return false;
		set_string(SLOT(cfg, key, char *), copy);
		return true;
	case KEY_LOG_LEVEL:
		level = log_level_parse(value);
		if (level == -1) {
			snprintf(why, whylen,
			         "%s is not a level (debug, info, notice, warning, error)",
			         quote(value, qbuf, sizeof(qbuf)));
			return false;
		}
		*SLOT(cfg, key, int) = level;
		return true;
	case KEY_SIZE:
		return parse_size(value, key->min, key->max, SLOT(cfg, key, unsigned), why, whylen);
	case KEY_TEXT:
		return store_copy(cfg, key, value);
	case KEY_MOTD_FILE: {
		char *text = NULL;
		if (value[0] != '\0' && value[0] != '/') {
			snprintf(why, whylen, "%s is not an absolute file path",
			         quote(value, qbuf, sizeof(qbuf)));
			return false;
		}
		if (value[0] != '\0' && !read_motd_file(value, &text, why, whylen))
			return false;
		set_string(&cfg->chat_settings.motd_loaded, text);
		return store_copy(cfg, key, value);
	}
	case KEY_ROOM:
		copy = malloc(strlen(value) + 2);
		if (copy == NULL)
			fatal("malloc");
		if (!room_normalize(value, strlen(value), copy, strlen(value) + 2)) {
			free(copy);
			snprintf(why, whylen,
			         "%s is not a room name (# and 1-32 letters, digits, _ or -)",
			         quote(value, qbuf, sizeof(qbuf)));
			return false;
		}
		set_string(SLOT(cfg, key, char *), copy);
		return true;
	case KEY_PATH:
		if (value[0] != '\0' && value[0] != '/') {
			snprintf(why, whylen, "%s is not an absolute file path",
			         quote(value, qbuf, sizeof(qbuf)));
			return false;
		}
		return store_copy(cfg, key, value);
	case KEY_NAME:
		if (!valid_account_name(value)) {
			snprintf(why, whylen,
			         "%s is not a user or group name (letters, digits, ., _ or -)",
			         quote(value, qbuf, sizeof(qbuf)));
			return false;
		}
		return store_copy(cfg, key, value);
	case KEY_ACL: {
		struct addr_acl acl;
		if (addr_acl_parse(value, &acl, why, whylen) == -1)
			return false;
		addr_acl_free(&acl);
		return store_copy(cfg, key, value);
	}
	case KEY_CLUSTER:
		if (!parse_bool(value, SLOT(cfg, key, bool), why, whylen))
			return false;
#ifndef HAVE_HIREDIS
		if (*SLOT(cfg, key, bool)) {
			*SLOT(cfg, key, bool) = false;
			snprintf(why, whylen,
			         "cluster support is not built in (echochatd was built without hiredis)");
			return false;
		}
#endif
		return true;
	case KEY_REDIS:
		if (!valid_redis_address(value)) {
			snprintf(why, whylen,
			         "%s is not HOST:PORT, [IPV6]:PORT or an absolute unix socket path",
			         quote(value, qbuf, sizeof(qbuf)));
			return false;
		}
		return store_copy(cfg, key, value);
	case KEY_NODE:
		if (value[0] != '\0' && !config_valid_node(value, strlen(value))) {
			snprintf(why, whylen,
			         "%s is not a node id (1-64 letters, digits, '.', '_', '-' or ':')",
			         quote(value, qbuf, sizeof(qbuf)));
			return false;
		}
		return store_copy(cfg, key, value);
	case KEY_PREFIX: {
		size_t len = strlen(value);
		bool printable = len > 0 && len <= CLUSTER_NAME_MAX;
		for (size_t i = 0; i < len && printable; i++)
			printable = isgraph((unsigned char)value[i]);
		if (!printable) {
			snprintf(why, whylen, "%s is not a prefix (1-64 printable characters, no blanks)",
			         quote(value, qbuf, sizeof(qbuf)));
			return false;
		}
		return store_copy(cfg, key, value);
	}
	case KEY_LOG_TARGET:
		if (strcmp(value, "stderr") != 0 && strcmp(value, "syslog") != 0 && value[0] != '/') {
			snprintf(why, whylen, "%s is not stderr, syslog or an absolute file path",
			         quote(value, qbuf, sizeof(qbuf)));
			return false;
		}
		return store_copy(cfg, key, value);
	}
	return false;
}

/* Format the key's current value as the file would spell it. */
static void
format_value(const struct config_key *key, const struct config *cfg, char *buf, size_t len)
{
	const void *c = cfg;

	switch (key->type) {
	case KEY_BOOL:
	case KEY_CLUSTER:
		snprintf(buf, len, "%s", *SLOT(c, key, const bool) ? "yes" : "no");
		break;
	case KEY_UINT:
	case KEY_SIZE:
		snprintf(buf, len, "%u", *SLOT(c, key, const unsigned));
		break;
	case KEY_BIND:
	case KEY_LOG_TARGET:
	case KEY_TEXT:
	case KEY_MOTD_FILE:
	case KEY_ROOM:
	case KEY_PATH:
	case KEY_NAME:
	case KEY_ACL:
	case KEY_REDIS:
	case KEY_NODE:
	case KEY_PREFIX:
		snprintf(buf, len, "%s", *SLOT(c, key, char *const));
		break;
	case KEY_LOG_LEVEL:
		snprintf(buf, len, "%s", log_level_name(*SLOT(c, key, const int)));
		break;
	}
}

/* Tell whether a key's slot is an allocated string. */
static bool
key_holds_string(const struct config_key *key)
{
	switch (key->type) {
	case KEY_BIND:
	case KEY_LOG_TARGET:
	case KEY_TEXT:
	case KEY_MOTD_FILE:
	case KEY_ROOM:
	case KEY_PATH:
	case KEY_NAME:
	case KEY_ACL:
	case KEY_REDIS:
	case KEY_NODE:
	case KEY_PREFIX:
		return true;
	case KEY_BOOL:
	case KEY_CLUSTER:
	case KEY_UINT:
	case KEY_SIZE:
	case KEY_LOG_LEVEL:
		break;
	}
	return false;
}

/* Make a configuration holding the built-in defaults. */
struct config *
config_new(void)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	char why[256];

	if (cfg == NULL)
		fatal("calloc");
	for (size_t i = 0; i < NKEYS; i++)
		if (!parse_value(&config_keys[i], config_keys[i].default_value, cfg, why, sizeof(why)))
			fatalx("built-in default of [%s] %s: %s", config_keys[i].section,
			       config_keys[i].name, why);
	return cfg;
}

void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < NKEYS; i++)
		if (key_holds_string(&config_keys[i]))
			free(*SLOT(cfg, &config_keys[i], char *));
	free(cfg->chat_settings.motd_loaded);
	free(cfg);
}

/* Apply section.name = value, reporting any error against where. */
static int
apply_setting(struct config *cfg, const char *where, const char *section, const char *name,
              const char *value, struct config_errors *errors, unsigned *set_on_line,
              unsigned line)
{
	const struct config_key *key = config_key_find(section, name);
	char why[256], formatted[1024], previous[1024];

	if (key == NULL) {
		config_errors_add(errors, "%s: [%s] %s: unknown key", where, section, name);
		return 1;
	}
	if (set_on_line != NULL) {
		size_t index = (size_t)(key - config_keys);
		if (set_on_line[index] != 0) {
			config_errors_add(errors, "%s: [%s] %s: set twice (first on line %u)", where,
			                  section, name, set_on_line[index]);
			return 1;
		}
		set_on_line[index] = line;
	}
	for (const char *p = value; *p != '\0'; p++)
		if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f) {
			/* a newline in a -o value would let -T write lines of its own */
			config_errors_add(errors, "%s: [%s] %s: control characters are not allowed",
			                  where, section, name);
			return 1;
		}
	format_value(key, cfg, previous, sizeof(previous));
	if (!parse_value(key, value, cfg, why, sizeof(why))) {
		config_errors_add(errors, "%s: [%s] %s: %s", where, section, name, why);
		return 1;
	}
	/* -T must write back every value on one line the loader accepts; a value that
	 * cannot be is refused, and the previous one (valid, so it parses) put back. */
	format_value(key, cfg, formatted, sizeof(formatted));
	if (strlen(key->name) + 3 + strlen(formatted) > CONFIG_MAX_LINE) {
		config_errors_add(errors, "%s: [%s] %s: value too long (\"%s = ...\" must fit in %d bytes)",
		                  where, section, name, name, CONFIG_MAX_LINE);
		parse_value(key, previous, cfg, why, sizeof(why));
		return 1;
	}
	if (formatted[0] == ';') {
		/* "key = ;..." reads as a key with an empty value and a comment */
		config_errors_add(errors, "%s: [%s] %s: a value cannot start with ';'", where, section,
		                  name);
		parse_value(key, previous, cfg, why, sizeof(why));
		return 1;
	}
	return 0;
}

/*
 * Hand inih one line at a time. Debian's inih passes the handler no line number and
 * splits lines longer than its buffer, so this reader counts lines, rejects long ones,
 * and reports malformed lines itself (all of them, not only the first) before inih
 * sees them; inih gets a blank line in their place.
 */
static char *
ini_read_line(char *buf, int size, void *stream)
{
	struct ini_source *src = stream;
	const char *start, *end, *nl;
	size_t len;

	if (src->pos >= src->len)
		return NULL;
	start = src->text + src->pos;
	nl = memchr(start, '\n', src->len - src->pos);
	end = nl != NULL ? nl : src->text + src->len;
	src->pos = (size_t)(end - src->text) + (nl != NULL);
	src->line++;
	if (end > start && end[-1] == '\r')
		end--;
	if (src->line == 1 && end - start >= 3 && memcmp(start, "\xEF\xBB\xBF", 3) == 0)
		start += 3;
	/* Leading blanks are dropped: inih would take an indented line as a continuation. */
	while (start < end && isspace((unsigned char)*start))
		start++;
	len = (size_t)(end - start);
	buf[0] = '\n';
	buf[1] = '\0';
	if (memchr(start, '\0', len) != NULL) {
		config_errors_add(src->errors, "%s:%u: line contains a NUL byte", src->name, src->line);
		return buf;
	}
	if (len > CONFIG_MAX_LINE || len + 2 > (size_t)size) {
		config_errors_add(src->errors, "%s:%u: line too long (at most %d bytes)", src->name,
		                  src->line, CONFIG_MAX_LINE);
		return buf;
	}
	if (len == 0 || *start == ';' || *start == '#')
		return buf;
	if (*start == '[') {
		const char *close = memchr(start, ']', len);
		const char *name = start + 1, *name_end = close, *rest;
		if (close == NULL) {
			config_errors_add(src->errors, "%s:%u: syntax error: section header without ']'",
			                  src->name, src->line);
			src->skip_section = true;
			return buf;
		}
		for (rest = close + 1; rest < end && isspace((unsigned char)*rest); rest++)
			;
		while (name < name_end && isspace((unsigned char)*name))
			name++;
		while (name_end > name && isspace((unsigned char)name_end[-1]))
			name_end--;
		if ((rest < end && *rest != ';' && *rest != '#') ||
		    (size_t)(name_end - name) >= sizeof(src->section)) {
			config_errors_add(src->errors, "%s:%u: syntax error: bad section header",
			                  src->name, src->line);
			src->skip_section = true;
			return buf;
		}
		memcpy(src->section, name, (size_t)(name_end - name));
		src->section[name_end - name] = '\0';
		src->skip_section = !config_section_known(src->section);
		if (src->skip_section)
			config_errors_add(src->errors, "%s:%u: [%s]: unknown section", src->name,
			                  src->line, src->section);
		snprintf(buf, (size_t)size, "[%s]\n", src->section);
		return buf;
	}
	if (memchr(start, '=', len) == NULL && memchr(start, ':', len) == NULL) {
		config_errors_add(src->errors, "%s:%u: syntax error: expected \"key = value\"",
		                  src->name, src->line);
		return buf;
	}
	memcpy(buf, start, len);
	buf[len] = '\n';
	buf[len + 1] = '\0';
	return buf;
}

/* inih's callback for one "name = value" line. */
static int
ini_on_value(void *user, const char *section, const char *name, const char *value)
{
	struct ini_source *src = user;
	char where[512];

	(void)section; /* the reader tracks sections itself, with their line numbers */
	if (src->skip_section)
		return 1;
	snprintf(where, sizeof(where), "%s:%u", src->name, src->line);
	if (src->section[0] == '\0') {
		config_errors_add(src->errors, "%s: %s: key outside any section", where, name);
		return 1;
	}
	apply_setting(src->cfg, where, src->section, name, value, src->errors, src->set_on_line,
	              src->line);
	return 1;
}

/* Load INI text named name into cfg; returns the number of errors added. */
int
config_load_text(struct config *cfg, const char *name, const char *text, size_t len,
                 struct config_errors *errors)
{
	struct ini_source src;
	size_t before = errors->count;
	int rc;

	memset(&src, 0, sizeof(src));
	src.name = name;
	src.text = text;
	src.len = len;
	src.cfg = cfg;
	src.errors = errors;
	rc = ini_parse_stream(ini_read_line, &src, ini_on_value, &src);
	if (rc == -2)
		config_errors_add(errors, "%s: out of memory", name);
	else if (rc != 0 && errors->count == before)
		config_errors_add(errors, "%s:%d: syntax error", name, rc);
	return (int)(errors->count - before);
}

/* Load the file at path into cfg; returns the number of errors added. */
int
config_load_file(struct config *cfg, const char *path, struct config_errors *errors)
{
	FILE *fp = fopen(path, "re");
	char *text;
	size_t len;
	int n;

	if (fp == NULL) {
		config_errors_add(errors, "%s: cannot read: %s", path, strerror(errno));
		return 1;
	}
	text = malloc(CONFIG_MAX_FILE + 1);
	if (text == NULL)
		fatal("malloc");
	len = fread(text, 1, CONFIG_MAX_FILE + 1, fp);
	if (ferror(fp)) {
		config_errors_add(errors, "%s: cannot read: %s", path, strerror(errno));
		n = 1;
	} else if (len > CONFIG_MAX_FILE) {
		config_errors_add(errors, "%s: file too large (more than %zu bytes)", path,
		                  CONFIG_MAX_FILE);
		n = 1;
	} else
		n = config_load_text(cfg, path, text, len, errors);
	free(text);
	fclose(fp);
	return n;
}

/* Apply one "section.key=value" override; returns the number of errors added. */
int
config_set(struct config *cfg, const char *assignment, struct config_errors *errors)
{
	const char *dot = strchr(assignment, '.'), *eq = strchr(assignment, '=');
	char section[64], name[64], where[512], *value, *end;
	const char *start;
	size_t slen, nlen;
	int n;

	snprintf(where, sizeof(where), "-o %s", assignment);
	if (dot == NULL || eq == NULL || dot > eq) {
		config_errors_add(errors, "%s: expected SECTION.KEY=VALUE", where);
		return 1;
	}
	slen = (size_t)(dot - assignment);
	nlen = (size_t)(eq - dot - 1);
	if (slen >= sizeof(section) || nlen >= sizeof(name)) {
		config_errors_add(errors, "%s: unknown key", where);
		return 1;
	}
	memcpy(section, assignment, slen);
	section[slen] = '\0';
	memcpy(name, dot + 1, nlen);
	name[nlen] = '\0';
	if (!config_section_known(section)) {
		config_errors_add(errors, "%s: [%s]: unknown section", where, section);
		return 1;
	}
	start = eq + 1;
	while (isspace((unsigned char)*start))
		start++;
	value = strdup(start);
	if (value == NULL)
		fatal("strdup");
	/* As in a file, a ';' after a blank starts a comment: -o and -T agree with the file. */
	for (end = value; *end != '\0'; end++)
		if (*end == ';' && end > value && isspace((unsigned char)end[-1])) {
			*end = '\0';
			break;
		}
	for (end = value + strlen(value); end > value && isspace((unsigned char)end[-1]); end--)
		end[-1] = '\0';
	n = apply_setting(cfg, where, section, name, value, errors, NULL, 0);
	free(value);
	return n;
}

/* Check what no single key can: the settings taken together. */
int
config_validate(const struct config *cfg, struct config_errors *errors)
{
	size_t before = errors->count;

	if (!cfg->echo.enabled && !cfg->chat.enabled)
		config_errors_add(errors, "no service is enabled ([echo] and [chat] enabled = no)");
	if (cfg->echo.enabled && cfg->chat.enabled && cfg->echo.port != 0 &&
	    cfg->echo.port == cfg->chat.port)
		config_errors_add(errors, "[chat] port: %u is also the [echo] port", cfg->chat.port);
	if (cfg->chat_settings.motd[0] != '\0' && cfg->chat_settings.motd_file[0] != '\0')
		config_errors_add(errors, "[chat] motd and motd_file: set one or the other, not both");
	if (cfg->cluster_enabled && !cfg->chat.enabled)
		config_errors_add(errors, "[cluster] enabled: the cluster carries chat, and [chat] is disabled");
	return (int)(errors->count - before);
}

/* Read defaults, then the file (if any), then the overrides, and validate; NULL on errors. */
struct config *
config_read(const char *path, char *const *overrides, size_t noverrides,
            struct config_errors *errors)
{
	struct config *cfg = config_new();

	if (path != NULL)
		config_load_file(cfg, path, errors);
	for (size_t i = 0; i < noverrides; i++)
		config_set(cfg, overrides[i], errors);
	if (errors->count == 0)
		config_validate(cfg, errors);
	if (errors->count > 0) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

/* List the keys a reload cannot apply whose value changed; returns how many. */
size_t
config_restart_changes(const struct config *old, const struct config *cfg,
                       struct config_errors *changes)
{
	char before[1024], after[1024];
	size_t n = 0;

	for (size_t i = 0; i < NKEYS; i++) {
		if (!config_keys[i].restart)
			continue;
		format_value(&config_keys[i], old, before, sizeof(before));
		format_value(&config_keys[i], cfg, after, sizeof(after));
		if (strcmp(before, after) != 0) {
			config_errors_add(changes, "[%s] %s: changed from \"%s\" to \"%s\"; it takes effect at the next restart",
			                  config_keys[i].section, config_keys[i].name, before, after);
			n++;
		}
	}
	return n;
}

/* Print the whole configuration as INI the daemon accepts. */
void
config_dump(const struct config *cfg, FILE *out)
{
	const char *section = NULL;
	char value[1024];

	fprintf(out, "; effective configuration of echochatd %s\n", PACKAGE_VERSION);
	for (size_t i = 0; i < NKEYS; i++) {
		const struct config_key *key = &config_keys[i];
		if (section == NULL || strcmp(section, key->section) != 0) {
			fprintf(out, "%s[%s]\n", section ? "\n" : "", key->section);
			section = key->section;
		}
		format_value(key, cfg, value, sizeof(value));
		fprintf(out, "%s = %s\n", key->name, value);
	}
}
