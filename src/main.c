/* main.c - the command line, the start-up order and the exit codes. */
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
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
	        "TCP echo (RFC 862) and chat server daemon; runs in the foreground.\n"
	        "\n"
	        "  -c, --config FILE          read settings from FILE (default: %s if it exists,\n"
	        "                             else the built-in defaults)\n"
	        "  -o, --set SECTION.KEY=VALUE\n"
	        "                             override one setting after the file is read\n"
	        "                             (repeatable), e.g. -o echo.port=0\n"
	        "  -t, --check-config         validate the configuration and exit\n"
	        "  -T, --dump-config          print the effective configuration as INI and exit\n"
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

int
main(int argc, char **argv)
{
	const char *config_path = NULL;
	char **overrides = NULL;
	size_t override_count = 0;
	bool check_only = false, dump = false;
	struct config_errors errors;
	struct log_settings ls;
	struct config *cfg;
	struct server *server;
	char err[512];
	int opt, status;

	while ((opt = getopt_long(argc, argv, "c:o:tTVh", long_options, NULL)) != -1) {
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

	/* libevent writes with plain writev(): a vanished peer must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	ls.level = cfg->log_level;
	ls.target = cfg->log_target;
	if (log_open(&ls, err, sizeof(err)) == -1) {
		fprintf(stderr, "echochatd: %s\n", err);
		config_free(cfg);
		free(overrides);
		return 1;
	}
	log_set_stderr_echo(true);
	event_set_log_callback(on_libevent_log);
	event_set_fatal_callback(on_libevent_fatal);
	log_notice("echochatd %s starting (config: %s)", PACKAGE_VERSION,
	           config_path ? config_path : "built-in defaults");

	server = server_create(cfg, config_path, overrides, override_count);
	if (server_start(server) == -1) {
		server_free(server);
		log_close();
		free(overrides);
		return 1;
	}
	log_set_stderr_echo(false);
	status = server_run(server);
	server_free(server);
	log_notice("exiting");
	log_close();
	free(overrides);
	return status;
}
