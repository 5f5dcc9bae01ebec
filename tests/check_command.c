/* check_command.c - command parsing, nick and room rules, the token bucket. */
#include <check.h>
#include <string.h>

#include "bucket.h"
#include "check_suites.h"
#include "command.h"

static const struct {
	const char *line;
	enum command_type type;
	const char *word;
	const char *text;
	const char *error; /* part of it */
} parse_cases[] = {
	{"hello world", CMD_MESSAGE, "", "hello world", NULL},
	{"//slash", CMD_MESSAGE, "", "/slash", NULL},
	{"/", CMD_UNKNOWN, "", "", NULL},
	{"/nick alice", CMD_NICK, "alice", "", NULL},
	{"/NICK  Bob_2-x ", CMD_NICK, "Bob_2-x", "", NULL},
	{"/nick", CMD_INVALID, NULL, NULL, "usage: /nick NAME"},
	{"/nick 9lives", CMD_INVALID, NULL, NULL, "a nick is 1-24 letters"},
	{"/nick two words", CMD_INVALID, NULL, NULL, "a nick is"},
	{"/nick abcdefghijklmnopqrstuvwxy", CMD_INVALID, NULL, NULL, "a nick is"},
	{"/nick abcdefghijklmnopqrstuvwx", CMD_NICK, "abcdefghijklmnopqrstuvwx", "", NULL},
	{"/nick caf\xc3\xa9", CMD_INVALID, NULL, NULL, "a nick is"},
	{"/join dev", CMD_JOIN, "#dev", "", NULL},
	{"/Join #Dev-2", CMD_JOIN, "#Dev-2", "", NULL},
	{"/join", CMD_INVALID, NULL, NULL, "usage: /join ROOM"},
	{"/join #", CMD_INVALID, NULL, NULL, "a room name is"},
	{"/join #a.b", CMD_INVALID, NULL, NULL, "a room name is"},
	{"/join abcdefghijklmnopqrstuvwxyz0123456", CMD_INVALID, NULL, NULL, "a room name is"},
	{"/part", CMD_PART, "part", "", NULL},
	{"/rooms", CMD_ROOMS, "rooms", "", NULL},
	{"/WHO", CMD_WHO, "WHO", "", NULL},
	{"/msg bob hi there", CMD_MSG, "bob", "hi there", NULL},
	{"/msg bob", CMD_INVALID, NULL, NULL, "usage: /msg NICK TEXT"},
	{"/msg", CMD_INVALID, NULL, NULL, "usage: /msg NICK TEXT"},
	{"/msg 1bob hi", CMD_INVALID, NULL, NULL, "a nick is"},
	{"/me waves", CMD_ME, "me", "waves", NULL},
	{"/me", CMD_INVALID, NULL, NULL, "usage: /me TEXT"},
	{"/topic", CMD_TOPIC, "topic", "", NULL},
	{"/topic the topic", CMD_TOPIC, "topic", "the topic", NULL},
	{"/quit", CMD_QUIT, "quit", "", NULL},
	{"/quit gone fishing", CMD_QUIT, "quit", "gone fishing", NULL},
	{"/help", CMD_HELP, "help", "", NULL},
	{"/frobnicate now", CMD_UNKNOWN, "frobnicate", "", NULL},
	{"/nickname x", CMD_UNKNOWN, "nickname", "", NULL},
	/* a long unknown name is cut at a character boundary: 11 x "é" (22 bytes) fit, not 17 */
	{"/0123456789\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
	 CMD_UNKNOWN, "0123456789\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", "", NULL},
};

START_TEST(test_parse)
{
	struct command cmd;

	command_parse(parse_cases[_i].line, &cmd);
	ck_assert_msg(cmd.type == parse_cases[_i].type, "%s: type %d", parse_cases[_i].line, cmd.type);
	if (parse_cases[_i].word != NULL)
		ck_assert_str_eq(cmd.word, parse_cases[_i].word);
	if (parse_cases[_i].text != NULL)
		ck_assert_str_eq(cmd.text, parse_cases[_i].text);
	if (parse_cases[_i].error != NULL) {
		ck_assert_ptr_nonnull(cmd.error);
		ck_assert_msg(strstr(cmd.error, parse_cases[_i].error) != NULL, "%s: %s",
		              parse_cases[_i].line, cmd.error);
	}
}
END_TEST

START_TEST(test_rules)
{
	char room[40];

	ck_assert(nick_valid("a", 1));
	ck_assert(!nick_valid("", 0));
	ck_assert(!nick_valid("_a", 2));
	ck_assert(!nick_valid("a b", 3));
	ck_assert(room_normalize("lobby", 5, room, sizeof(room)));
	ck_assert_str_eq(room, "#lobby");
	ck_assert(room_normalize("#x", 2, room, sizeof(room)));
	ck_assert_str_eq(room, "#x");
	ck_assert(!room_normalize("##x", 3, room, sizeof(room)));
	ck_assert(!room_normalize("#x", 2, room, 2));
}
END_TEST

START_TEST(test_bucket)
{
	struct token_bucket b;

	bucket_init(&b, 3, 1000);
	for (int i = 0; i < 3; i++) {
		ck_assert(bucket_ready(&b, 10, 3, 1000));
		bucket_spend(&b, 10);
	}
	ck_assert(!bucket_ready(&b, 10, 3, 1000));
	ck_assert_uint_ge(bucket_wait_ms(&b, 10), 100);
	ck_assert_uint_le(bucket_wait_ms(&b, 10), 101);
	ck_assert(!bucket_ready(&b, 10, 3, 1050));
	ck_assert(bucket_ready(&b, 10, 3, 1100));
	/* never more than the burst, however long the pause */
	ck_assert(bucket_ready(&b, 10, 3, 100000));
	ck_assert(b.tokens <= 3.0);
	/* rate 0: unlimited */
	ck_assert(bucket_ready(&b, 0, 1, 0));
}
END_TEST

START_TEST(test_nick_fold)
{
	char key[NICK_MAX + 1];

	nick_fold("aIice", key);
	ck_assert_str_eq(key, "allce");
	ck_assert(nick_same("alice", "aIice"));
	ck_assert(nick_same("alice", "ALICE"));
	ck_assert(nick_same("alice", "a1ice"));
	ck_assert(nick_same("bob", "B0B"));
	ck_assert(nick_same("Bob_2-x", "b0b_2-X"));
	ck_assert(!nick_same("bob", "bobby"));
	ck_assert(!nick_same("bob_", "bob-"));
	nick_fold("abcdefghijklmnopqrstuvwx", key);
	ck_assert_uint_eq(strlen(key), NICK_MAX);
}
END_TEST

Suite *
command_suite(void)
{
	Suite *s = suite_create("command");
	TCase *tc = tcase_create("command");

	tcase_add_loop_test(tc, test_parse, 0, sizeof(parse_cases) / sizeof(parse_cases[0]));
	tcase_add_test(tc, test_rules);
	tcase_add_test(tc, test_bucket);
	tcase_add_test(tc, test_nick_fold);
	suite_add_tcase(s, tc);
	return s;
}
