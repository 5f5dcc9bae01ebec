/* check_config.c - the settings table, INI loading, overrides, validation and dump. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_suites.h"
#include "config.h"
#include "log.h"

/* Load text as file "t.ini"; return the config (errors in *errors). */
static struct config *
load(const char *text, struct config_errors *errors)
{
	struct config *cfg = config_new();

	config_errors_init(errors);
	config_load_text(cfg, "t.ini", text, strlen(text), errors);
	return cfg;
}

/* Dump cfg into a string the caller frees. */
static char *
dump(const struct config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&buf, &len);

	ck_assert_ptr_nonnull(fp);
	config_dump(cfg, fp);
	fclose(fp);
	return buf;
}

START_TEST(test_defaults)
{
	struct config *cfg = config_new();

	ck_assert_uint_eq(cfg->max_clients, 10000);
	ck_assert_uint_eq(cfg->shutdown_timeout, 10);
	ck_assert_uint_eq(cfg->tcp_keepalive, 300);
	ck_assert_uint_eq(cfg->max_clients_per_address, 64);
	ck_assert_str_eq(cfg->allow, "");
	ck_assert_str_eq(cfg->deny, "");
	ck_assert_int_eq(cfg->log_level, LOG_LEVEL_INFO);
	ck_assert_str_eq(cfg->log_target, "stderr");
	ck_assert(cfg->echo.enabled);
	ck_assert_str_eq(cfg->echo.bind, "0.0.0.0, ::");
	ck_assert_uint_eq(cfg->echo.port, 7007);
	ck_assert_uint_eq(cfg->echo.backlog, 128);
	ck_assert_uint_eq(cfg->echo.idle_timeout, 300);
	ck_assert(cfg->chat.enabled);
	ck_assert_str_eq(cfg->chat.bind, "0.0.0.0, ::");
	ck_assert_uint_eq(cfg->chat.port, 7008);
	ck_assert_uint_eq(cfg->chat.backlog, 128);
	ck_assert_uint_eq(cfg->chat.idle_timeout, 0);
	ck_assert_str_eq(cfg->chat_settings.motd, "");
	ck_assert_str_eq(cfg->chat_settings.motd_file, "");
	ck_assert_ptr_null(cfg->chat_settings.motd_loaded);
	ck_assert_str_eq(cfg->chat_settings.default_room, "#lobby");
	ck_assert_uint_eq(cfg->chat_settings.history, 20);
	ck_assert_uint_eq(cfg->chat_settings.max_line, 512);
	ck_assert_uint_eq(cfg->chat_settings.max_output, 1048576);
	ck_assert_uint_eq(cfg->chat_settings.rate, 5);
	ck_assert_uint_eq(cfg->chat_settings.burst, 20);
	config_free(cfg);
}
END_TEST

/* section.key=value, whether it is accepted, and how -T spells it when it is. */
static const struct {
	const char *assignment;
	bool ok;
	const char *dumped;
	const char *error; /* part of the message when rejected */
} value_cases[] = {
	{"server.max_clients=1", true, "max_clients = 1", NULL},
	{"server.max_clients=1000000", true, "max_clients = 1000000", NULL},
	{"server.max_clients=0", false, NULL, "[server] max_clients: 0 is out of range (1..1000000)"},
	{"server.max_clients=1000001", false, NULL, "out of range"},
	{"server.max_clients=99999999999999999999999", false, NULL, "out of range"},
	{"server.max_clients=-5", false, NULL, "is not a number"},
	{"server.max_clients=12abc", false, NULL, "\"12abc\" is not a number"},
	{"server.max_clients=", false, NULL, "a number is required"},
	{"server.shutdown_timeout=0", true, "shutdown_timeout = 0", NULL},
	{"server.shutdown_timeout=3600", true, "shutdown_timeout = 3600", NULL},
	{"server.shutdown_timeout=3601", false, NULL, "out of range"},
	{"server.tcp_keepalive=0", true, "tcp_keepalive = 0", NULL},
	{"server.tcp_keepalive=86401", false, NULL, "out of range"},
	{"server.max_clients_per_address=0", true, "max_clients_per_address = 0", NULL},
	{"server.pidfile=/run/echochatd.pid", true, "pidfile = /run/echochatd.pid", NULL},
	{"server.pidfile=echochatd.pid", false, NULL, "[server] pidfile: \"echochatd.pid\" is not an absolute file path"},
	{"server.user=nobody", true, "user = nobody", NULL},
	{"server.user=-rf", false, NULL, "is not a user or group name"},
	{"server.group=no group", false, NULL, "[server] group: \"no group\" is not a user or group name"},
	{"server.max_clients_per_address=1000001", false, NULL, "out of range"},
	{"server.allow=127.0.0.0/8, ::1", true, "allow = 127.0.0.0/8, ::1", NULL},
	{"server.deny=192.0.2.7", true, "deny = 192.0.2.7", NULL},
	{"cluster.redis=127.0.0.1:6379", true, "redis = 127.0.0.1:6379", NULL},
	{"cluster.redis=[::1]:6380", true, "redis = [::1]:6380", NULL},
	{"cluster.redis=redis.example.net:7000", true, "redis = redis.example.net:7000", NULL},
	{"cluster.redis=/run/redis/redis.sock", true, "redis = /run/redis/redis.sock", NULL},
	{"cluster.redis=localhost", false, NULL, "[cluster] redis: \"localhost\" is not HOST:PORT"},
	{"cluster.redis=::1:6379", false, NULL, "is not HOST:PORT"},
	{"cluster.redis=host:0", false, NULL, "is not HOST:PORT"},
	{"cluster.redis=host:65536", false, NULL, "is not HOST:PORT"},
	{"cluster.redis=[::1]6379", false, NULL, "is not HOST:PORT"},
	{"cluster.node=web1:7008", true, "node = web1:7008", NULL},
	{"cluster.node=", true, "node = ", NULL},
	{"cluster.node=web 1", false, NULL, "[cluster] node: \"web 1\" is not a node id"},
	{"cluster.node=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false, NULL, "is not a node id"},
	{"cluster.prefix=chat:prod:", true, "prefix = chat:prod:", NULL},
	{"cluster.prefix=", false, NULL, "is not a prefix"},
	{"cluster.prefix=a b", false, NULL, "is not a prefix"},
	{"cluster.heartbeat=1", true, "heartbeat = 1", NULL},
	{"cluster.heartbeat=0", false, NULL, "[cluster] heartbeat: 0 is out of range (1..3600)"},
	{"cluster.heartbeat=3601", false, NULL, "out of range"},
#ifdef HAVE_HIREDIS
	{"cluster.enabled=yes", true, "enabled = yes", NULL},
#else
	{"cluster.enabled=yes", false, NULL, "[cluster] enabled: cluster support is not built in (echochatd was built without hiredis)"},
#endif
	{"cluster.enabled=no", true, "enabled = no", NULL},
	{"server.deny=192.0.2.0/40", false, NULL, "[server] deny: \"192.0.2.0/40\" is not an address or prefix"},
	{"server.allow=localhost", false, NULL, "[server] allow: \"localhost\" is not an address or prefix"},
	{"log.level=debug", true, "level = debug", NULL},
	{"log.level=WARNING", true, "level = warning", NULL},
	{"log.level=notice", true, "level = notice", NULL},
	{"log.level=error", true, "level = error", NULL},
	{"log.level=loud", false, NULL, "[log] level: \"loud\" is not a level"},
	{"log.target=syslog", true, "target = syslog", NULL},
	{"log.target=/var/log/echochatd.log", true, "target = /var/log/echochatd.log", NULL},
	{"log.target=relative.log", false, NULL, "not stderr, syslog or an absolute file path"},
	{"echo.enabled=no", true, "enabled = no", NULL},
	{"echo.enabled=TRUE", true, "enabled = yes", NULL},
	{"echo.enabled=off", true, "enabled = no", NULL},
	{"echo.enabled=1", true, "enabled = yes", NULL},
	{"echo.enabled=maybe", false, NULL, "[echo] enabled: \"maybe\" is not a boolean"},
	{"echo.port=0", true, "port = 0", NULL},
	{"echo.port=65535", true, "port = 65535", NULL},
	{"echo.port=65536", false, NULL, "[echo] port: 65536 is out of range (0..65535)"},
	{"echo.port=abc", false, NULL, "[echo] port: \"abc\" is not a number"},
	{"echo.backlog=1", true, "backlog = 1", NULL},
	{"echo.backlog=0", false, NULL, "out of range (1..65535)"},
	{"echo.idle_timeout=0", true, "idle_timeout = 0", NULL},
	{"echo.idle_timeout=604801", false, NULL, "out of range"},
	{"echo.bind=127.0.0.1", true, "bind = 127.0.0.1", NULL},
	{"echo.bind=::1,127.0.0.1", true, "bind = ::1, 127.0.0.1", NULL},
	{"echo.bind=[::1] , localhost", true, "bind = ::1, localhost", NULL},
	{"echo.bind=echo-1.example.org", true, "bind = echo-1.example.org", NULL},
	{"echo.bind=300.1.2.3", false, NULL, "[echo] bind: \"300.1.2.3\" is not an IP address or host name"},
	{"echo.bind=127.0.0.1,,::1", false, NULL, "empty address"},
	{"echo.bind=", false, NULL, "empty address"},
	{"echo.bind=bad_name", false, NULL, "is not an IP address or host name"},
	{"echo.bind=-lead.example", false, NULL, "is not an IP address or host name"},
	{"echo.bind=::g", false, NULL, "is not an IP address or host name"},
	{"echo.colour=red", false, NULL, "[echo] colour: unknown key"},
	{"chat.enabled=no", true, "enabled = no", NULL},
	{"chat.port=0", true, "port = 0", NULL},
	{"chat.idle_timeout=60", true, "idle_timeout = 60", NULL},
	{"chat.motd=Hello\\nWorld ; a comment, as in a file", true, "motd = Hello\\nWorld\n", NULL},
	{"chat.motd=semi;colon", true, "motd = semi;colon\n", NULL},
	{"chat.motd_file=", true, "motd_file = \n", NULL},
	{"chat.motd_file=/nonexistent/motd", false, NULL, "[chat] motd_file: cannot read /nonexistent/motd: No such file or directory"},
	{"chat.motd_file=motd.txt", false, NULL, "is not an absolute file path"},
	{"chat.default_room=general", true, "default_room = #general", NULL},
	{"chat.default_room=#ok_room-1", true, "default_room = #ok_room-1", NULL},
	{"chat.default_room=bad room", false, NULL, "[chat] default_room: \"bad room\" is not a room name"},
	{"chat.history=0", true, "history = 0", NULL},
	{"chat.history=1001", false, NULL, "out of range (0..1000)"},
	{"chat.max_line=16", true, "max_line = 16", NULL},
	{"chat.max_line=15", false, NULL, "out of range (16..65536)"},
	{"chat.max_output=1M", true, "max_output = 1048576", NULL},
	{"chat.max_output=64KiB", true, "max_output = 65536", NULL},
	{"chat.max_output=2g", false, NULL, "out of range (4096..1073741824 bytes)"},
	{"chat.max_output=4095", false, NULL, "out of range"},
	{"chat.max_output=10Q", false, NULL, "\"10Q\" is not a size"},
	{"chat.max_output=17179869185G", false, NULL, "out of range"},
	{"chat.max_output=M", false, NULL, "is not a size"},
	{"chat.rate=0", true, "rate = 0", NULL},
	{"chat.burst=0", false, NULL, "out of range (1..100000)"},
	{"nosuch.key=1", false, NULL, "[nosuch]: unknown section"},
};

/* Every case through -o. */
START_TEST(test_value_override)
{
	struct config *cfg = config_new();
	struct config_errors errors;
	char *text;

	config_errors_init(&errors);
	config_set(cfg, value_cases[_i].assignment, &errors);
	if (value_cases[_i].ok) {
		ck_assert_msg(errors.count == 0, "%s: %s", value_cases[_i].assignment,
		              errors.count ? errors.messages[0] : "");
		text = dump(cfg);
		ck_assert_msg(strstr(text, value_cases[_i].dumped) != NULL, "%s: dump lacks %s",
		              value_cases[_i].assignment, value_cases[_i].dumped);
		free(text);
	} else {
		ck_assert_msg(errors.count == 1, "%s accepted", value_cases[_i].assignment);
		ck_assert_msg(strncmp(errors.messages[0], "-o ", 3) == 0, "%s", errors.messages[0]);
		ck_assert_msg(strstr(errors.messages[0], value_cases[_i].error) != NULL,
		              "%s: got \"%s\", want \"%s\"", value_cases[_i].assignment,
		              errors.messages[0], value_cases[_i].error);
	}
	config_errors_clear(&errors);
	config_free(cfg);
}
END_TEST

/* Every case through a file, where errors carry file:line. */
START_TEST(test_value_file)
{
	const char *assignment = value_cases[_i].assignment;
	const char *dot = strchr(assignment, '.'), *eq = strchr(assignment, '=');
	struct config_errors errors;
	struct config *cfg;
	char text[512], want[64];

	snprintf(text, sizeof(text), "; comment\n[%.*s]\n%.*s = %s\n", (int)(dot - assignment),
	         assignment, (int)(eq - dot - 1), dot + 1, eq + 1);
	cfg = load(text, &errors);
	if (value_cases[_i].ok) {
		ck_assert_msg(errors.count == 0, "%s: %s", assignment,
		              errors.count ? errors.messages[0] : "");
	} else {
		ck_assert_msg(errors.count == 1, "%s accepted", assignment);
		/* An unknown section is reported on its header line, anything else on line 3. */
		snprintf(want, sizeof(want), "t.ini:%d: ",
		         strstr(value_cases[_i].error, "unknown section") ? 2 : 3);
		ck_assert_msg(strncmp(errors.messages[0], want, strlen(want)) == 0, "%s: %s",
		              assignment, errors.messages[0]);
		ck_assert_msg(strstr(errors.messages[0], value_cases[_i].error) != NULL, "%s: %s",
		              assignment, errors.messages[0]);
	}
	config_errors_clear(&errors);
	config_free(cfg);
}
END_TEST

START_TEST(test_all_errors_reported)
{
	struct config_errors errors;
	struct config *cfg = load("[echo]\n"
	                          "port = 99999\n"
	                          "enabled = maybe\n"
	                          "\n"
	                          "[server]\n"
	                          "max_clients = lots\n"
	                          "colour = red\n"
	                          "[bogus]\n"
	                          "x = 1\n"
	                          "[log]\n"
	                          "level = loud\n",
	                          &errors);

	ck_assert_uint_eq(errors.count, 6);
	ck_assert(strncmp(errors.messages[0], "t.ini:2: [echo] port: ", 22) == 0);
	ck_assert(strncmp(errors.messages[1], "t.ini:3: [echo] enabled: ", 25) == 0);
	ck_assert(strncmp(errors.messages[2], "t.ini:6: [server] max_clients: ", 31) == 0);
	ck_assert_str_eq(errors.messages[3], "t.ini:7: [server] colour: unknown key");
	ck_assert_str_eq(errors.messages[4], "t.ini:8: [bogus]: unknown section");
	ck_assert(strncmp(errors.messages[5], "t.ini:11: [log] level: ", 23) == 0);
	config_errors_clear(&errors);
	config_free(cfg);
}
END_TEST

static const struct {
	const char *text;
	const char *error; /* NULL: accepted */
} syntax_cases[] = {
	{"[echo]\r\nport = 9\r\n", NULL},
	{"\xEF\xBB\xBF[echo]\nport = 9\n", NULL},
	{"[echo]\n   port = 9\n", NULL},
	{"[echo]\nport = 9   ; inline comment\n", NULL},
	{"# hash comment\n[ echo ]   ; comment\nport: 9\n", NULL},
	{"[echo]\nport = 9", NULL},
	{"port = 9\n", "t.ini:1: port: key outside any section"},
	{"[echo\nport = 9\n", "t.ini:1: syntax error: section header without ']'"},
	{"[echo] junk\nport = 9\n", "t.ini:1: syntax error: bad section header"},
	{"[echo]\njust words\n", "t.ini:2: syntax error: expected \"key = value\""},
	{"[echo]\nport = 9\nport = 10\n", "t.ini:3: [echo] port: set twice (first on line 2)"},
	{"[echo]\n= 9\n", "t.ini:2: [echo] : unknown key"},
};

START_TEST(test_syntax)
{
	struct config_errors errors;
	struct config *cfg = load(syntax_cases[_i].text, &errors);

	if (syntax_cases[_i].error == NULL) {
		ck_assert_msg(errors.count == 0, "case %d: %s", _i, errors.count ? errors.messages[0] : "");
		ck_assert_uint_eq(cfg->echo.port, 9);
	} else {
		ck_assert_msg(errors.count == 1, "case %d: %zu errors", _i, errors.count);
		ck_assert_str_eq(errors.messages[0], syntax_cases[_i].error);
	}
	config_errors_clear(&errors);
	config_free(cfg);
}
END_TEST

START_TEST(test_long_line)
{
	char text[1024];
	struct config_errors errors;
	struct config *cfg;

	/* 300 bytes would be split into two "lines" by inih itself. */
	snprintf(text, sizeof(text), "[echo]\nbind = 127.0.0.1%0300d\nport = 5\n", 0);
	cfg = load(text, &errors);
	ck_assert_uint_eq(errors.count, 1);
	ck_assert_str_eq(errors.messages[0], "t.ini:2: line too long (at most 198 bytes)");
	ck_assert_uint_eq(cfg->echo.port, 5);
	config_errors_clear(&errors);
	config_free(cfg);
}
END_TEST

START_TEST(test_nul_byte)
{
	static const char text[] = "[echo]\nport = 5\0\n";
	struct config_errors errors;
	struct config *cfg = config_new();

	config_errors_init(&errors);
	config_load_text(cfg, "t.ini", text, sizeof(text) - 1, &errors);
	ck_assert_uint_eq(errors.count, 1);
	ck_assert_str_eq(errors.messages[0], "t.ini:2: line contains a NUL byte");
	config_errors_clear(&errors);
	config_free(cfg);
}
END_TEST

START_TEST(test_dump_round_trip)
{
	struct config_errors errors;
	struct config *cfg = load("[echo]\nport = 0\nbind = 127.0.0.1, ::1\n[log]\nlevel = debug\n",
	                          &errors);
	char *first, *second;
	struct config *again;

	ck_assert_uint_eq(errors.count, 0);
	first = dump(cfg);
	again = load(first, &errors);
	ck_assert_msg(errors.count == 0, "%s", errors.count ? errors.messages[0] : "");
	second = dump(again);
	ck_assert_str_eq(first, second);
	ck_assert_ptr_nonnull(strstr(first, "[echo]\nenabled = yes\nbind = 127.0.0.1, ::1\nport = 0\n"));
	free(first);
	free(second);
	config_free(cfg);
	config_free(again);
}
END_TEST

START_TEST(test_read_overrides_win)
{
	char path[] = "/tmp/check_config_XXXXXX";
	int fd = mkstemp(path);
	char *overrides[] = {"echo.port=7", "log.level=error"};
	struct config_errors errors;
	struct config *cfg;
	FILE *fp;

	ck_assert_int_ne(fd, -1);
	fp = fdopen(fd, "w");
	fputs("[echo]\nport = 9000\nbacklog = 7\n", fp);
	fclose(fp);
	config_errors_init(&errors);
	cfg = config_read(path, overrides, 2, &errors);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->echo.port, 7);
	ck_assert_uint_eq(cfg->echo.backlog, 7);
	ck_assert_int_eq(cfg->log_level, LOG_LEVEL_ERROR);
	config_free(cfg);
	unlink(path);
}
END_TEST

START_TEST(test_read_errors)
{
	char *bad[] = {"echo.port=x", "echo.bind=?"};
	struct config_errors errors;

	config_errors_init(&errors);
	ck_assert_ptr_null(config_read("/nonexistent/echochatd.ini", NULL, 0, &errors));
	ck_assert_uint_eq(errors.count, 1);
	ck_assert_str_eq(errors.messages[0],
	                 "/nonexistent/echochatd.ini: cannot read: No such file or directory");
	config_errors_clear(&errors);

	/* Every bad override is reported, not only the first. */
	ck_assert_ptr_null(config_read(NULL, bad, 2, &errors));
	ck_assert_uint_eq(errors.count, 2);
	config_errors_clear(&errors);
}
END_TEST

START_TEST(test_validate)
{
	char *off[] = {"echo.enabled=no", "chat.enabled=no"};
	char *same_port[] = {"echo.port=9000", "chat.port=9000"};
	char *one_off[] = {"echo.enabled=no", "chat.port=7007"};
	char *both_motd[] = {"chat.motd=hi", "chat.motd_file=/etc/hostname"};
	struct config_errors errors;
	struct config *cfg;

	config_errors_init(&errors);
	ck_assert_ptr_null(config_read(NULL, off, 2, &errors));
	ck_assert_uint_eq(errors.count, 1);
	ck_assert_str_eq(errors.messages[0], "no service is enabled ([echo] and [chat] enabled = no)");
	config_errors_clear(&errors);
	ck_assert_ptr_null(config_read(NULL, same_port, 2, &errors));
	ck_assert_str_eq(errors.messages[0], "[chat] port: 9000 is also the [echo] port");
	config_errors_clear(&errors);
	ck_assert_ptr_null(config_read(NULL, both_motd, 2, &errors));
	ck_assert_uint_eq(errors.count, 1);
	config_errors_clear(&errors);
	/* one service alone is fine, and then its port may be anything */
	cfg = config_read(NULL, one_off, 2, &errors);
	ck_assert_ptr_nonnull(cfg);
	config_free(cfg);
}
END_TEST

START_TEST(test_restart_changes)
{
	char *before[] = {"server.user=nobody"}, *after[] = {"server.user=daemon", "echo.port=9"};
	struct config_errors errors, changes;
	struct config *old, *cfg;

	config_errors_init(&errors);
	config_errors_init(&changes);
	old = config_read(NULL, before, 1, &errors);
	cfg = config_read(NULL, after, 2, &errors);
	ck_assert_ptr_nonnull(old);
	ck_assert_ptr_nonnull(cfg);
	/* only the restart-only key is reported, not the port a reload applies */
	ck_assert_uint_eq(config_restart_changes(old, cfg, &changes), 1);
	ck_assert_str_eq(changes.messages[0], "[server] user: changed from \"nobody\" to \"daemon\"; "
	                                      "it takes effect at the next restart");
	config_errors_clear(&changes);
	config_free(old);
	config_free(cfg);
}
END_TEST

/* Whatever is accepted can be written back by -T on lines the loader accepts. */
START_TEST(test_value_fits_dump)
{
	char target[300], bind[200], text[512];
	struct config_errors errors;
	struct config *cfg = config_new();

	memset(target, 'x', sizeof(target));
	memcpy(target, "log.target=/", 12);
	target[sizeof(target) - 1] = '\0';
	config_errors_init(&errors);
	ck_assert_int_eq(config_set(cfg, target, &errors), 1);
	ck_assert_ptr_nonnull(strstr(errors.messages[0], "[log] target: value too long"));
	config_errors_clear(&errors);
	ck_assert_int_eq(config_set(cfg, "chat.motd=hi\n[echo]\nport=7008", &errors), 1);
	ck_assert_ptr_nonnull(strstr(errors.messages[0], "[chat] motd: control characters are not allowed"));
	config_errors_clear(&errors);
	/* in a file, "motd = ;x" is an empty value and a comment; -o cannot set what -T
	 * would write that way */
	ck_assert_int_eq(config_set(cfg, "chat.motd=;x", &errors), 1);
	ck_assert_ptr_nonnull(strstr(errors.messages[0], "[chat] motd: a value cannot start with ';'"));
	ck_assert_str_eq(cfg->chat_settings.motd, "");
	config_errors_clear(&errors);
	config_free(cfg);

	/* "1.1.1.1,..." fits in a file line but grows to "1.1.1.1, ..." when normalised */
	strcpy(bind, "1.1.1.1");
	while (strlen(bind) < 180)
		strcat(bind, ",1.1.1.1");
	snprintf(text, sizeof(text), "[echo]\nbind = %s\n", bind);
	cfg = load(text, &errors);
	ck_assert_uint_eq(errors.count, 1);
	ck_assert_ptr_nonnull(strstr(errors.messages[0], "t.ini:2: [echo] bind: value too long"));
	config_errors_clear(&errors);
	config_free(cfg);
}
END_TEST

START_TEST(test_list_split)
{
	char **items;
	size_t n = config_list_split(" a ,b,, c", &items);

	ck_assert_uint_eq(n, 4);
	ck_assert_str_eq(items[0], "a");
	ck_assert_str_eq(items[1], "b");
	ck_assert_str_eq(items[2], "");
	ck_assert_str_eq(items[3], "c");
	config_list_free(items, n);
}
END_TEST

Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("config");

	tcase_add_test(tc, test_defaults);
	tcase_add_loop_test(tc, test_value_override, 0, sizeof(value_cases) / sizeof(value_cases[0]));
	tcase_add_loop_test(tc, test_value_file, 0, sizeof(value_cases) / sizeof(value_cases[0]));
	tcase_add_test(tc, test_all_errors_reported);
	tcase_add_loop_test(tc, test_syntax, 0, sizeof(syntax_cases) / sizeof(syntax_cases[0]));
	tcase_add_test(tc, test_long_line);
	tcase_add_test(tc, test_nul_byte);
	tcase_add_test(tc, test_dump_round_trip);
	tcase_add_test(tc, test_read_overrides_win);
	tcase_add_test(tc, test_read_errors);
	tcase_add_test(tc, test_validate);
	tcase_add_test(tc, test_list_split);
	tcase_add_test(tc, test_restart_changes);
	tcase_add_test(tc, test_value_fits_dump);
	suite_add_tcase(s, tc);
	return s;
}
