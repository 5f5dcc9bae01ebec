/* main.c - the command line, the start-up order and the exit codes. */
#include <event2/event.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "notify.h"
#include "server.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG_PATH SYSCONFDIR "/echochatd.ini"

static const struct option long_options[] = {
	{"config", required_argument, NULL, 'c'},
	{"set", required_argument, NULL, 'o'},
	{"check-config", no_argument, NULL, 't'},
	{"dump-config", no_argument, NULL, 'T'},
	{"daemonize", no_argument, NULL, 'd'},
	{"version", no_argument, NULL, 'V'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

/* Print how to call the daemon. */
static void
usage(FILE *out)
{
	fprintf(out,
	        "Usage: echochatd [OPTION]...\n"
	        "TCP echo (RFC 862) and chat server daemon; runs in the foreground unless -d.\n"
	        "\n"
	        "  -c, --config FILE          read settings from FILE (default: %s if it exists,\n"
	        "                             else the built-in defaults)\n"
	        "  -o, --set SECTION.KEY=VALUE\n"
	        "                             override one setting after the file is read\n"
	        "                             (repeatable), e.g. -o echo.port=0\n"
	        "  -t, --check-config         validate the configuration and exit\n"
	        "  -T, --dump-config          print the effective configuration as INI and exit\n"
	        "  -d, --daemonize            run in the background (classic daemon); the command\n"
	        "                             exits 0 once the daemon serves, non-zero if it failed\n"
	        "  -V, --version              print the version and exit\n"
	        "  -h, --help                 print this help and exit\n"
	        "\n"
	        "Signals: SIGTERM/SIGINT shut down gracefully, SIGHUP reloads the configuration.\n"
	        "Exit status: 0 clean shutdown, 1 start-up failure, 64 bad usage, 78 bad configuration.\n",
	        DEFAULT_CONFIG_PATH);
}

/* Route libevent's own messages into our log. */
static void
on_libevent_log(int severity, const char *msg)
{
	switch (severity) {
	case EVENT_LOG_DEBUG:
		log_debug("libevent: %s", msg);
		break;
	case EVENT_LOG_MSG:
		log_info("libevent: %s", msg);
		break;
	case EVENT_LOG_WARN:
		log_warnx("libevent: %s", msg);
		break;
	default:
		log_error("libevent: %s", msg);
		break;
	}
}

static void
on_libevent_fatal(int err)
{
	log_error("libevent: fatal error %d", err);
	abort();
}

/* Start serving: log, detach, listen, drop root, pidfile, readiness; then run. */
static int
run_daemon(struct config *cfg, const char *config_path, char *const *overrides,
           size_t override_count, bool daemonize)
{
	struct log_settings ls = {.level = cfg->log_level, .target = cfg->log_target};
	struct server *server;
	char *pidfile = NULL;
	char err[512];
	int status = 1;

	/* libevent writes with plain writev(): a vanished peer must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	log_set_detached(daemonize);
	if (log_open(&ls, err, sizeof(err)) == -1) {
		fprintf(stderr, "echochatd: %s\n", err);
		config_free(cfg);
		return 1;
	}
	log_set_stderr_echo(true);
	event_set_log_callback(on_libevent_log);
	event_set_fatal_callback(on_libevent_fatal);
	if (cfg->pidfile[0] != '\0') {
		if (pidfile_check(cfg->pidfile, err, sizeof(err)) == -1) {
			log_error("%s", err);
			goto out;
		}
		pidfile = strdup(cfg->pidfile);
	}
	/* Detach before the event loop exists: libevent's backends do not survive fork. */
	if (daemonize && daemon_detach() == -1) {
		log_error("cannot go to the background: %s", strerror(errno));
		goto out;
	}
	log_notice("echochatd %s starting (config: %s)", PACKAGE_VERSION,
	           config_path ? config_path : "built-in defaults");

	server = server_create(cfg, config_path, overrides, override_count);
	cfg = NULL; /* the server owns it now */
	if (server_start(server) == -1)
		goto out_server;
	/* The pidfile is written while still root, so that it can live in /run. */
	if (pidfile != NULL && pidfile_write(pidfile, err, sizeof(err)) == -1) {
		log_error("%s", err);
		free(pidfile);
		pidfile = NULL;
		goto out_server;
	}
	if (geteuid() == 0) {
		const char *user = server->config->user, *group = server->config->group;
		if (user[0] == '\0')
			log_warnx("running as root: set [server] user to drop privileges after binding");
		else if (privileges_drop(user, group, err, sizeof(err)) == -1) {
			log_error("%s", err);
			goto out_server;
		} else
			log_notice("running as user %s", user);
	}
	log_notice("ready");
	notify_ready();
	daemon_report(0);
	log_set_stderr_echo(false);
	status = server_run(server);
	server_free(server);
	log_notice("exiting");
	if (pidfile != NULL)
		pidfile_remove(pidfile);
	free(pidfile);
	log_close();
	return status;

out_server:
	server_free(server);
out:
	if (pidfile != NULL)
		pidfile_remove(pidfile);
	free(pidfile);
	config_free(cfg);
	daemon_report(1);
	log_close();
	return 1;
}

int
main(int argc, char **argv)
{
	const char *config_path = NULL;
	char **overrides = NULL;
	size_t override_count = 0;
	bool check_only = false, dump = false, daemonize = false;
	struct config_errors errors;
	struct config *cfg;
	char *absolute_path = NULL;
	int opt, status;

	while ((opt = getopt_long(argc, argv, "c:o:tTdVh", long_options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'o': {
			const char *dot = strchr(optarg, '.'), *eq = strchr(optarg, '=');
			char **grown;
			if (dot == NULL || eq == NULL || dot > eq || dot == optarg || eq == dot + 1) {
				fprintf(stderr, "echochatd: -o %s: expected SECTION.KEY=VALUE\n", optarg);
				free(overrides);
				return EXIT_USAGE;
			}
			grown = realloc(overrides, (override_count + 1) * sizeof(*overrides));
			if (grown == NULL) {
				perror("echochatd: realloc");
				free(overrides);
				return 1;
			}
			overrides = grown;
			overrides[override_count++] = optarg;
			break;
		}
		case 't':
			check_only = true;
			break;
		case 'T':
			dump = true;
			break;
		case 'd':
			daemonize = true;
			break;
		case 'V':
			printf("echochatd %s\n", PACKAGE_VERSION);
			free(overrides);
			return 0;
		case 'h':
			usage(stdout);
			free(overrides);
			return 0;
		default:
			usage(stderr);
			free(overrides);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "echochatd: unexpected argument: %s\n", argv[optind]);
		usage(stderr);
		free(overrides);
		return EXIT_USAGE;
	}
	if (config_path == NULL && access(DEFAULT_CONFIG_PATH, F_OK) == 0)
		config_path = DEFAULT_CONFIG_PATH;

	config_errors_init(&errors);
	cfg = config_read(config_path, overrides, override_count, &errors);
	if (cfg == NULL) {
		for (size_t i = 0; i < errors.count; i++)
			fprintf(stderr, "%s\n", errors.messages[i]);
		config_errors_clear(&errors);
		free(overrides);
		return EXIT_CONFIG;
	}
	if (check_only || dump) {
		if (dump)
			config_dump(cfg, stdout);
		else
			printf("configuration OK\n");
		config_free(cfg);
		free(overrides);
		return 0;
	}

	/* A daemon changes directory: keep finding the file on reload. */
	if (daemonize && config_path != NULL && config_path[0] != '/') {
		absolute_path = realpath(config_path, NULL);
		if (absolute_path != NULL)
			config_path = absolute_path;
	}
	status = run_daemon(cfg, config_path, overrides, override_count, daemonize);
	free(absolute_path);
	free(overrides);
	return status;
}
