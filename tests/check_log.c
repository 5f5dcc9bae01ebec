/* check_log.c - levels, rate limits and the escaping of peer bytes. */
#include <check.h>
#include <string.h>

#include "check_suites.h"
#include "log.h"

START_TEST(test_levels)
{
	ck_assert_int_eq(log_level_parse("debug"), LOG_LEVEL_DEBUG);
	ck_assert_int_eq(log_level_parse("Info"), LOG_LEVEL_INFO);
	ck_assert_int_eq(log_level_parse("notice"), LOG_LEVEL_NOTICE);
	ck_assert_int_eq(log_level_parse("WARNING"), LOG_LEVEL_WARNING);
	ck_assert_int_eq(log_level_parse("error"), LOG_LEVEL_ERROR);
	ck_assert_int_eq(log_level_parse("warn"), -1);
	ck_assert_int_eq(log_level_parse(""), -1);
	ck_assert_str_eq(log_level_name(LOG_LEVEL_WARNING), "warning");
	ck_assert_str_eq(log_level_name(42), "?");
}
END_TEST

START_TEST(test_ratelimit)
{
	struct log_ratelimit rl = {.interval = 10};
	unsigned long suppressed = 99;

	ck_assert(log_ratelimit_pass(&rl, 1000, &suppressed));
	ck_assert_uint_eq(suppressed, 0);
	ck_assert(!log_ratelimit_pass(&rl, 1001, &suppressed));
	ck_assert(!log_ratelimit_pass(&rl, 1009, &suppressed));
	ck_assert(log_ratelimit_pass(&rl, 1010, &suppressed));
	ck_assert_uint_eq(suppressed, 2);
	ck_assert(!log_ratelimit_pass(&rl, 1011, &suppressed));
	ck_assert(log_ratelimit_pass(&rl, 2000, &suppressed));
	ck_assert_uint_eq(suppressed, 1);
}
END_TEST

START_TEST(test_escape)
{
	char out[32];

	log_escape(out, sizeof(out), "a\x1b[2J\\\xff\n", 8);
	ck_assert_str_eq(out, "a\\x1b[2J\\x5c\\xff\\x0a");
	/* Truncation never splits an escape and always terminates. */
	log_escape(out, 6, "\x01\x02", 2);
	ck_assert_str_eq(out, "\\x01");
	ck_assert_uint_eq(log_escape(out, 1, "abc", 3), 0);
	ck_assert_str_eq(out, "");
}
END_TEST

Suite *
log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("log");

	tcase_add_test(tc, test_levels);
	tcase_add_test(tc, test_ratelimit);
	tcase_add_test(tc, test_escape);
	suite_add_tcase(s, tc);
	return s;
}
