/* config.h - the settings: table, INI loading, -o overrides, validation, dump. */
#ifndef ECHOCHATD_CONFIG_H
#define ECHOCHATD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define EXIT_CONFIG 78 /* EX_CONFIG from sysexits.h */
#define EXIT_USAGE 64  /* EX_USAGE */

/* Longest line of a configuration file, without its newline. */
#define CONFIG_MAX_LINE 198

/* Settings shared by every service (the [echo] and [chat] sections). */
struct service_config {
	bool enabled;
	char *bind; /* normalised: "addr1, addr2" */
	unsigned port;
	unsigned backlog;
	unsigned idle_timeout;
};

/* The chat service's own settings. */
struct chat_settings {
	char *motd;         /* "\n" in the value separates lines */
	char *motd_file;    /* "" or an absolute path */
	char *motd_loaded;  /* the text of motd_file, read when the configuration is */
	char *default_room; /* "#lobby" */
	unsigned history;
	unsigned max_line;
	unsigned max_output;
	unsigned rate;
	unsigned burst;
};

struct config {
	/* [server] */
	unsigned max_clients;
	unsigned shutdown_timeout;
	unsigned tcp_keepalive;
	char *pidfile; /* "" or an absolute path */
	char *user;    /* "" or the user to become after binding, when started as root */
	char *group;
	unsigned max_clients_per_address; /* 0: no limit */
	char *allow; /* "" or addresses and prefixes: only these may connect */
	char *deny;  /* addresses and prefixes that may not connect */
	/* [log] */
	int log_level;
	char *log_target;
	/* one per service, indexed by enum service_id */
	struct service_config echo;
	struct service_config chat;
	struct chat_settings chat_settings;
	/* [metrics] */
	bool metrics_enabled;
	char *metrics_bind;
	unsigned metrics_port;
	/* [cluster] */
	bool cluster_enabled;
	char *cluster_redis;  /* "HOST:PORT", "[V6]:PORT" or "/unix/socket" */
	char *cluster_node;   /* "" until config_read fills in host name:chat port */
	char *cluster_prefix; /* "echochat:" */
	unsigned cluster_heartbeat;
};

/* Longest node id and key prefix of [cluster]. */
#define CLUSTER_NAME_MAX 64

/* Error messages gathered while loading: every error, not only the first. */
struct config_errors {
	char **messages;
	size_t count;
	size_t capacity;
};

struct config *config_new(void);
void config_free(struct config *cfg);

int config_load_file(struct config *cfg, const char *path, struct config_errors *errors);
int config_load_text(struct config *cfg, const char *name, const char *text, size_t len,
                     struct config_errors *errors);
int config_set(struct config *cfg, const char *assignment, struct config_errors *errors);
int config_validate(const struct config *cfg, struct config_errors *errors);
struct config *config_read(const char *path, char *const *overrides, size_t noverrides,
                           struct config_errors *errors);
void config_dump(const struct config *cfg, FILE *out);
size_t config_restart_changes(const struct config *old, const struct config *cfg,
                              struct config_errors *changes);

/* Split "a, b,c" into its items; returns the count, or 0. Free with config_list_free. */
size_t config_list_split(const char *list, char ***items);
void config_list_free(char **items, size_t count);
bool config_valid_node(const char *s, size_t len);

void config_errors_init(struct config_errors *errors);
void config_errors_clear(struct config_errors *errors);
void config_errors_add(struct config_errors *errors, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
