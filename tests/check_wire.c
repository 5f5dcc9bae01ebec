/* check_wire.c - the cluster wire format: encoding, decoding, and what is refused. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_suites.h"
#include "wire.h"

/* Decode a C string payload. */
static int
decode(const char *payload, struct wire_msg *m)
{
	return wire_decode(payload, strlen(payload), m);
}

START_TEST(test_decode_each_type)
{
	struct wire_msg m;

	ck_assert_int_eq(decode("1\tmsg\tn1\t1712-0\talice\t#lobby\thello\tworld", &m), 0);
	ck_assert_int_eq(m.type, WIRE_MSG);
	ck_assert_str_eq(m.node, "n1");
	ck_assert_str_eq(m.id, "1712-0");
	ck_assert_str_eq(m.nick, "alice");
	ck_assert_str_eq(m.room, "#lobby");
	ck_assert_uint_eq(m.text_len, 11); /* the text keeps its TAB */
	ck_assert(memcmp(m.text, "hello\tworld", 11) == 0);

	ck_assert_int_eq(decode("1\tme\tweb1:7008\t-\tbob\t#x\twaves", &m), 0);
	ck_assert_int_eq(m.type, WIRE_ME);
	ck_assert_str_eq(m.node, "web1:7008");
	ck_assert_str_eq(m.id, "-");

	ck_assert_int_eq(decode("1\ttopic\tn1\talice\t#lobby\t", &m), 0);
	ck_assert_int_eq(m.type, WIRE_TOPIC);
	ck_assert_uint_eq(m.text_len, 0);

	ck_assert_int_eq(decode("1\tjoin\tn1\talice\t#dev", &m), 0);
	ck_assert_int_eq(m.type, WIRE_JOIN);
	ck_assert_str_eq(m.room, "#dev");
	ck_assert_int_eq(decode("1\tpart\tn1\talice\t#dev", &m), 0);
	ck_assert_int_eq(m.type, WIRE_PART);
	ck_assert_int_eq(decode("1\tquit\tn1\talice\t#dev\tpeer closed", &m), 0);
	ck_assert_int_eq(m.type, WIRE_QUIT);
	ck_assert_uint_eq(m.text_len, strlen("peer closed"));
	ck_assert_int_eq(decode("1\tnick\tn1\talice\tAlice2\t#dev", &m), 0);
	ck_assert_str_eq(m.other, "Alice2");
	ck_assert_int_eq(decode("1\tpm\tn1\talice\tbob\tpsst", &m), 0);
	ck_assert_int_eq(m.type, WIRE_PM);
	ck_assert_str_eq(m.nick, "alice");
	ck_assert_str_eq(m.other, "bob");
	ck_assert_int_eq(decode("1\tbye\tn1", &m), 0);
	ck_assert_int_eq(m.type, WIRE_BYE);
}
END_TEST

START_TEST(test_heartbeat_roster)
{
	const char *hb = "1\thb\tn2\t1234567\nalice\t#lobby\nT\t#lobby\tthe topic\twith tab\nT\t#x";
	struct wire_roster_entry e;
	struct wire_msg m;
	const char *p, *end;

	ck_assert_int_eq(decode(hb, &m), 0);
	ck_assert_int_eq(m.type, WIRE_HB);
	ck_assert_uint_eq(m.epoch, 1234567);
	p = m.text;
	end = m.text + m.text_len;
	ck_assert(wire_roster_next(&p, end, &e));
	ck_assert(!e.is_topic);
	ck_assert_str_eq(e.nick, "alice");
	ck_assert_str_eq(e.room, "#lobby");
	ck_assert(wire_roster_next(&p, end, &e));
	ck_assert(e.is_topic);
	ck_assert_uint_eq(e.topic_len, strlen("the topic\twith tab"));
	/* "T\t#x" has one TAB: the user T in #x, not a topic */
	ck_assert(wire_roster_next(&p, end, &e));
	ck_assert(!e.is_topic);
	ck_assert_str_eq(e.nick, "T");
	ck_assert(!wire_roster_next(&p, end, &e));

	/* an empty roster */
	ck_assert_int_eq(decode("1\thb\tn2\t1", &m), 0);
	ck_assert_uint_eq(m.text_len, 0);
}
END_TEST

/* Whatever arrives from Redis that is not exactly version 1 is refused. */
static const char *const malformed[] = {
	"",
	"1",
	"1\t",
	"2\tmsg\tn1\t-\talice\t#lobby\thi",        /* another version */
	"1\tshout\tn1\talice",                     /* unknown type */
	"1\tmsg\tn1\t-\talice\t#lobby",            /* a field short */
	"1\tmsg\tn1\t-\tbad nick\t#lobby\thi",     /* nick with a blank */
	"1\tmsg\tn1\t-\t9lives\t#lobby\thi",       /* nick starting with a digit */
	"1\tmsg\tn1\t-\talice\tlobby\thi",         /* room without '#' */
	"1\tmsg\tn1\t-\talice\t#lo.bby\thi",       /* room with a dot */
	"1\tmsg\tn 1\t-\talice\t#lobby\thi",       /* node with a blank */
	"1\tmsg\t\t-\talice\t#lobby\thi",          /* empty node */
	"1\tmsg\tn1\tabc\talice\t#lobby\thi",      /* bad stream id */
	"1\tmsg\tn1\t12-\talice\t#lobby\thi",      /* bad stream id */
	"1\tmsg\tn1\t-\talice\t#lobby\thi\r\nX",   /* CR LF in text */
	"1\tjoin\tn1\talice\t#lobby\textra",       /* a field too many */
	"1\tbye\tn1\textra",
	"1\thb\tn1\tx12",                          /* bad epoch */
	"1\thb\tn1\t12\nalice",                    /* roster line without a room */
	"1\thb\tn1\t12\nalice\tlobby",             /* roster room without '#' */
	"1\thb\tn1\t12\nT\t#x\tbad\rtopic",        /* CR in a topic */
	"1\tpm\tn1\talice\tbob",                   /* no text field */
};

START_TEST(test_malformed)
{
	struct wire_msg m;

	ck_assert_msg(decode(malformed[_i], &m) == -1, "accepted: %s", malformed[_i]);
}
END_TEST

START_TEST(test_sizes_and_nul)
{
	struct wire_msg m;
	size_t big = WIRE_MAX + 1;
	char *payload = malloc(big);
	static const char head[] = "1\tmsg\tn1\t-\talice\t#lobby\t";

	ck_assert_ptr_nonnull(payload);
	memset(payload, 'a', big);
	memcpy(payload, head, sizeof(head) - 1);
	ck_assert_int_eq(wire_decode(payload, big, &m), -1);
	ck_assert_int_eq(wire_decode(payload, WIRE_MAX, &m), 0);
	/* a NUL inside the text */
	payload[sizeof(head)] = '\0';
	ck_assert_int_eq(wire_decode(payload, WIRE_MAX, &m), -1);
	free(payload);
}
END_TEST

START_TEST(test_encode_round_trip)
{
	struct wire_msg in, out;
	static const enum wire_type types[] = {WIRE_MSG,  WIRE_ME,   WIRE_TOPIC, WIRE_JOIN, WIRE_PART,
	                                       WIRE_QUIT, WIRE_NICK, WIRE_PM,    WIRE_BYE,  WIRE_HB};

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		char *payload;
		size_t len;

		memset(&in, 0, sizeof(in));
		in.type = types[i];
		strcpy(in.node, "node-1.example:7008");
		strcpy(in.nick, "alice");
		strcpy(in.other, "bob");
		strcpy(in.room, "#lobby");
		in.text = "some\ttext";
		in.text_len = 9;
		in.epoch = 42;
		payload = wire_encode(&in, &len);
		ck_assert_uint_eq(len, strlen(payload));
		ck_assert_msg(wire_decode(payload, len, &out) == 0, "%s", payload);
		ck_assert_int_eq(out.type, in.type);
		ck_assert_str_eq(out.node, in.node);
		free(payload);
	}
}
END_TEST

START_TEST(test_stream_ids)
{
	ck_assert(wire_id_valid("-", 1));
	ck_assert(wire_id_valid("1712345678901-0", 15));
	ck_assert(!wire_id_valid("1712345678901", 13));
	ck_assert(!wire_id_valid("-1", 2));
	ck_assert(!wire_id_valid("1-2-3", 5));
	ck_assert(!wire_id_valid("", 0));
}
END_TEST

Suite *
wire_suite(void)
{
	Suite *s = suite_create("wire");
	TCase *tc = tcase_create("wire");

	tcase_add_test(tc, test_decode_each_type);
	tcase_add_test(tc, test_heartbeat_roster);
	tcase_add_loop_test(tc, test_malformed, 0, sizeof(malformed) / sizeof(malformed[0]));
	tcase_add_test(tc, test_sizes_and_nul);
	tcase_add_test(tc, test_encode_round_trip);
	tcase_add_test(tc, test_stream_ids);
	suite_add_tcase(s, tc);
	return s;
}
