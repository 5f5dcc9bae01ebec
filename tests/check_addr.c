/* check_addr.c - address formatting, prefixes, allow/deny lists, per-address counts. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <string.h>

#include "addr.h"
#include "check_suites.h"

/* Make an addr_ip from text. */
static struct addr_ip
ip_of(const char *text)
{
	struct sockaddr_storage ss;
	struct addr_ip ip;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		ck_assert_int_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		ck_assert_int_eq(inet_pton(AF_INET, text, &sin->sin_addr), 1);
	}
	ck_assert(addr_ip_from_sockaddr((struct sockaddr *)&ss, &ip));
	return ip;
}

static const struct {
	const char *prefix;
	const char *ip;
	bool match;
} match_cases[] = {
	{"127.0.0.1", "127.0.0.1", true},
	{"127.0.0.1", "127.0.0.2", false},
	{"127.0.0.0/8", "127.255.1.2", true},
	{"127.0.0.0/8", "128.0.0.1", false},
	{"10.1.2.3/20", "10.1.15.255", true}, /* host bits ignored */
	{"10.1.2.3/20", "10.1.16.0", false},
	{"0.0.0.0/0", "203.0.113.9", true},
	{"0.0.0.0/0", "::1", false}, /* families never mix */
	{"::1", "::1", true},
	{"::/0", "2001:db8::1", true},
	{"2001:db8::/32", "2001:db8:ffff::1", true},
	{"2001:db8::/33", "2001:db8:8000::1", false},
	{"fe80::/10", "febf::1", true},
	{"fe80::/10", "fec0::1", false},
	{"192.0.2.0/24", "::ffff:192.0.2.7", true}, /* IPv4-mapped counts as IPv4 */
};

START_TEST(test_prefix_match)
{
	struct addr_prefix p;
	struct addr_ip ip = ip_of(match_cases[_i].ip);

	ck_assert_msg(addr_prefix_parse(match_cases[_i].prefix, &p), "%s", match_cases[_i].prefix);
	ck_assert_msg(addr_prefix_match(&p, &ip) == match_cases[_i].match, "%s ~ %s",
	              match_cases[_i].prefix, match_cases[_i].ip);
}
END_TEST

START_TEST(test_prefix_parse_errors)
{
	static const char *const bad[] = {"", "/8", "1.2.3.4/", "1.2.3.4/33", "::/129", "1.2.3/8",
	                                  "1.2.3.4/8x", "host.example", "1.2.3.4/-1", "1.2.3.4/0008"};
	struct addr_prefix p;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!addr_prefix_parse(bad[i], &p), "accepted %s", bad[i]);
}
END_TEST

START_TEST(test_acl)
{
	struct addr_acl acl;
	char why[160];
	struct addr_ip a = ip_of("127.0.0.2"), b = ip_of("::1"), c = ip_of("10.0.0.1");

	ck_assert_int_eq(addr_acl_parse("", &acl, why, sizeof(why)), 0);
	ck_assert_uint_eq(acl.count, 0);
	ck_assert(!addr_acl_match(&acl, &a));
	addr_acl_free(&acl);

	ck_assert_int_eq(addr_acl_parse(" 127.0.0.2 , ::1/128,10.0.0.0/8 ", &acl, why, sizeof(why)), 0);
	ck_assert_uint_eq(acl.count, 3);
	ck_assert(addr_acl_match(&acl, &a));
	ck_assert(addr_acl_match(&acl, &b));
	ck_assert(addr_acl_match(&acl, &c));
	addr_acl_free(&acl);

	ck_assert_int_eq(addr_acl_parse("127.0.0.1,,::1", &acl, why, sizeof(why)), -1);
	ck_assert_int_eq(addr_acl_parse("127.0.0.1, nonsense", &acl, why, sizeof(why)), -1);
	ck_assert_str_eq(why, "\"nonsense\" is not an address or prefix (e.g. 192.0.2.0/24, 2001:db8::/32)");
	ck_assert_ptr_null(acl.prefixes);
}
END_TEST

START_TEST(test_counter)
{
	struct addr_counter *counter = addr_counter_new();
	struct addr_ip a = ip_of("127.0.0.1"), b = ip_of("::1"), c = ip_of("127.0.0.2");

	ck_assert_uint_eq(addr_counter_get(counter, &a), 0);
	ck_assert_uint_eq(addr_counter_add(counter, &a, 1), 1);
	ck_assert_uint_eq(addr_counter_add(counter, &a, 1), 2);
	ck_assert_uint_eq(addr_counter_add(counter, &b, 1), 1);
	ck_assert_uint_eq(addr_counter_get(counter, &c), 0);
	ck_assert_uint_eq(addr_counter_size(counter), 2);
	ck_assert_uint_eq(addr_counter_add(counter, &a, -1), 1);
	ck_assert_uint_eq(addr_counter_add(counter, &a, -1), 0);
	ck_assert_uint_eq(addr_counter_size(counter), 1);
	/* never below zero, and unknown addresses are not created by a decrement */
	ck_assert_uint_eq(addr_counter_add(counter, &c, -1), 0);
	ck_assert_uint_eq(addr_counter_size(counter), 1);
	/* many addresses: chains in the hash table */
	for (unsigned i = 0; i < 20000; i++) {
		struct addr_ip ip = {.family = AF_INET6};
		memcpy(ip.bytes, &i, sizeof(i));
		ck_assert_uint_eq(addr_counter_add(counter, &ip, 1), 1);
	}
	ck_assert_uint_eq(addr_counter_size(counter), 20001);
	addr_counter_free(counter);
}
END_TEST

START_TEST(test_format)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(7)};
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(7008)};
	char buf[ADDR_STRLEN];

	inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
	inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
	ck_assert_str_eq(addr_format((struct sockaddr *)&sin, buf, sizeof(buf)), "192.0.2.1:7");
	ck_assert_str_eq(addr_format((struct sockaddr *)&sin6, buf, sizeof(buf)), "[2001:db8::1]:7008");
	ck_assert_uint_eq(addr_port((struct sockaddr *)&sin6), 7008);
}
END_TEST

Suite *
addr_suite(void)
{
	Suite *s = suite_create("addr");
	TCase *tc = tcase_create("addr");

	tcase_add_loop_test(tc, test_prefix_match, 0, sizeof(match_cases) / sizeof(match_cases[0]));
	tcase_add_test(tc, test_prefix_parse_errors);
	tcase_add_test(tc, test_acl);
	tcase_add_test(tc, test_counter);
	tcase_add_test(tc, test_format);
	suite_add_tcase(s, tc);
	return s;
}
