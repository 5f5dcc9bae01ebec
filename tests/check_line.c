/* check_line.c - chat input framing, telnet IAC removal, over-long lines, cleaning. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_suites.h"
#include "line.h"

/* Everything a reader reported for some input, as one string:
 * lines as "[text]", over-long as "!", telnet requests as "<DO 1>" / "<WILL 3>". */
struct transcript {
	char text[4096];
	size_t len;
};

static void
record(struct transcript *t, const struct line_event *ev)
{
	switch (ev->type) {
	case LINE_COMPLETE:
		t->text[t->len++] = '[';
		memcpy(t->text + t->len, ev->data, ev->len);
		t->len += ev->len;
		t->text[t->len++] = ']';
		break;
	case LINE_TOO_LONG:
		t->text[t->len++] = '!';
		break;
	case LINE_TELNET:
		t->len += (size_t)sprintf(t->text + t->len, "<%s %d>",
		                          ev->telnet_command == TELNET_DO ? "DO" : "WILL",
		                          ev->telnet_option);
		break;
	case LINE_NONE:
		break;
	}
	t->text[t->len] = '\0';
}

/* Feed input in pieces of at most chunk bytes; collect the transcript. */
static void
feed(struct line_reader *lr, const char *input, size_t len, size_t chunk, struct transcript *t)
{
	size_t off = 0;

	while (off < len) {
		size_t n = len - off < chunk ? len - off : chunk, used = 0;
		while (used < n) {
			struct line_event ev;
			used += line_reader_push(lr, (const unsigned char *)input + off + used, n - used, &ev);
			record(t, &ev);
		}
		off += n;
	}
}

static const struct {
	const char *input;
	size_t len; /* 0: strlen */
	const char *expect;
} framing_cases[] = {
	{"a\n", 0, "[a]"},
	{"a\r\nb\r\n", 0, "[a][b]"},
	{"a\rb\r", 0, "[a][b]"},
	{"a\r\0b\r\0", 7, "[a][b]"},
	{"a\n\nb\r\n\r\n\n", 0, "[a][b]"},     /* empty lines are ignored */
	{"a\r\r\nb\n", 0, "[a][b]"},           /* CR, then an empty CR LF line */
	{"partial", 0, ""},                    /* not a line until it ends */
	{"x\xff\xff" "y\n", 0, "[x\xffy]"},    /* IAC IAC is one 0xFF byte */
	{"a\xff\xfb\x01" "b\n", 0, "<WILL 1>[ab]"},
	{"a\xff\xfd\x18" "b\n", 0, "<DO 24>[ab]"},
	{"a\xff\xfc\x01\xff\xfe\x01" "b\n", 0, "[ab]"}, /* WONT/DONT: removed silently */
	{"a\xff\xf1\xff\xf9" "b\n", 0, "[ab]"},         /* NOP, GA: two-byte commands */
	{"a\xff\xfa\x18\x01\xff\xff\n\xff\xf0" "b\n", 0, "[ab]"}, /* SB ... SE, IAC IAC inside */
	{"a\xff\xff\xff\xfb\x03\n", 0, "<WILL 3>[a\xff]"},
};

START_TEST(test_framing)
{
	const char *input = framing_cases[_i].input;
	size_t len = framing_cases[_i].len ? framing_cases[_i].len : strlen(input);
	const char *expect = framing_cases[_i].expect;

	/* Whole, then split at every byte boundary: the result must be the same. */
	for (size_t chunk = len; chunk >= 1; chunk--) {
		struct line_reader lr;
		struct transcript t = {.len = 0};
		t.text[0] = '\0';
		ck_assert_int_eq(line_reader_init(&lr, 64), 0);
		feed(&lr, input, len, chunk, &t);
		ck_assert_msg(strcmp(t.text, expect) == 0, "case %d chunk %zu: got \"%s\" want \"%s\"",
		              _i, chunk, t.text, expect);
		line_reader_free(&lr);
	}
}
END_TEST

/* Split a CR LF pair over two calls: exactly one line, the LF is not a second one. */
START_TEST(test_cr_then_lf_later)
{
	struct line_reader lr;
	struct transcript t = {.len = 0};

	ck_assert_int_eq(line_reader_init(&lr, 16), 0);
	feed(&lr, "one\r", 4, 4, &t);
	ck_assert_str_eq(t.text, "[one]");
	feed(&lr, "\ntwo\n", 5, 5, &t);
	ck_assert_str_eq(t.text, "[one][two]");
	line_reader_free(&lr);
}
END_TEST

START_TEST(test_too_long)
{
	struct line_reader lr;
	struct transcript t = {.len = 0};
	char input[100];

	ck_assert_int_eq(line_reader_init(&lr, 8), 0);
	/* exactly max_line fits */
	feed(&lr, "12345678\n", 9, 9, &t);
	ck_assert_str_eq(t.text, "[12345678]");
	t.len = 0;
	t.text[0] = '\0';
	/* one more: reported once, the rest of the line is dropped, the next line is fine */
	memset(input, 'x', sizeof(input));
	input[60] = '\n';
	memcpy(input + 61, "ok\r\n", 4);
	for (size_t chunk = 65; chunk >= 1; chunk--) {
		t.len = 0;
		t.text[0] = '\0';
		feed(&lr, input, 65, chunk, &t);
		ck_assert_msg(strcmp(t.text, "![ok]") == 0, "chunk %zu: %s", chunk, t.text);
	}
	line_reader_free(&lr);
}
END_TEST

/* Memory stays bounded whatever comes: the reader never holds more than max_line. */
START_TEST(test_bounded_garbage)
{
	struct line_reader lr;
	unsigned char junk[4096];
	unsigned seed = 1;

	ck_assert_int_eq(line_reader_init(&lr, 32), 0);
	for (int round = 0; round < 200; round++) {
		size_t off = 0;
		for (size_t i = 0; i < sizeof(junk); i++) {
			seed = seed * 1103515245 + 12345;
			junk[i] = (unsigned char)(seed >> 16);
		}
		while (off < sizeof(junk)) {
			struct line_event ev;
			off += line_reader_push(&lr, junk + off, sizeof(junk) - off, &ev);
			ck_assert_uint_le(lr.len, 32);
			if (ev.type == LINE_COMPLETE)
				ck_assert_uint_le(ev.len, 32);
		}
	}
	line_reader_free(&lr);
}
END_TEST

START_TEST(test_finish)
{
	struct line_reader lr;
	struct line_event ev;

	ck_assert_int_eq(line_reader_init(&lr, 16), 0);
	line_reader_push(&lr, (const unsigned char *)"tail", 4, &ev);
	ck_assert_int_eq(ev.type, LINE_NONE);
	ck_assert(line_reader_finish(&lr, &ev));
	ck_assert_int_eq(ev.type, LINE_COMPLETE);
	ck_assert_uint_eq(ev.len, 4);
	ck_assert(memcmp(ev.data, "tail", 4) == 0);
	ck_assert(!line_reader_finish(&lr, &ev));
	line_reader_free(&lr);
}
END_TEST

static const struct {
	const char *input;
	const char *expect;
} clean_cases[] = {
	{"plain text", "plain text"},
	{"tab\there", "tab\there"},
	{"esc\x1b[2Jcode", "esc[2Jcode"},
	{"bell\x07 nul-free \x01\x1f\x7f", "bell nul-free "},
	{"c1 \xc2\x85\xc2\x9b end", "c1  end"},                 /* U+0085, U+009B */
	{"bidi \xe2\x80\xae" "evil\xe2\x80\xac", "bidi evil"},      /* U+202E, U+202C */
	{"iso \xe2\x81\xa6x\xe2\x81\xa9", "iso x"},              /* U+2066, U+2069 */
	{"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
	{"bad \xff end", "bad \xef\xbf\xbd end"},
	{"trunc \xe2\x82", "trunc \xef\xbf\xbd\xef\xbf\xbd"},
	{"overlong \xc0\xaf", "overlong \xef\xbf\xbd\xef\xbf\xbd"},
	{"surrogate \xed\xa0\x80", "surrogate \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
	{"too big \xf4\x90\x80\x80", "too big \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
	{"\xe2\x80\x8b zero-width space stays", "\xe2\x80\x8b zero-width space stays"},
};

START_TEST(test_clean)
{
	const char *in = clean_cases[_i].input;
	size_t len = strlen(in);
	char *out = malloc(LINE_CLEAN_MAX(len) + 1);
	size_t n = line_clean((const unsigned char *)in, len, out);

	out[n] = '\0';
	ck_assert_msg(strcmp(out, clean_cases[_i].expect) == 0, "case %d: got \"%s\"", _i, out);
	free(out);
}
END_TEST

/* Whatever the input, the output is valid UTF-8 with no control character but TAB. */
START_TEST(test_clean_random)
{
	unsigned char in[256];
	char out[LINE_CLEAN_MAX(256)];
	unsigned seed = 7;

	for (int round = 0; round < 500; round++) {
		size_t n, bad = 0;
		for (size_t i = 0; i < sizeof(in); i++) {
			seed = seed * 1103515245 + 12345;
			in[i] = (unsigned char)(seed >> 16);
		}
		n = line_clean(in, sizeof(in), out);
		ck_assert_uint_le(n, sizeof(out));
		for (size_t i = 0; i < n; i++) {
			unsigned char ch = (unsigned char)out[i];
			if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
				bad++;
		}
		ck_assert_msg(bad == 0, "round %d: %zu control bytes", round, bad);
		/* and cleaning is idempotent: clean output is left as it is */
		{
			char again[LINE_CLEAN_MAX(sizeof(out))];
			size_t m = line_clean((const unsigned char *)out, n, again);
			ck_assert_uint_eq(m, n);
			ck_assert(memcmp(again, out, n) == 0);
		}
	}
}
END_TEST

Suite *
line_suite(void)
{
	Suite *s = suite_create("line");
	TCase *tc = tcase_create("line");

	tcase_add_loop_test(tc, test_framing, 0, sizeof(framing_cases) / sizeof(framing_cases[0]));
	tcase_add_test(tc, test_cr_then_lf_later);
	tcase_add_test(tc, test_too_long);
	tcase_add_test(tc, test_bounded_garbage);
	tcase_add_test(tc, test_finish);
	tcase_add_loop_test(tc, test_clean, 0, sizeof(clean_cases) / sizeof(clean_cases[0]));
	tcase_add_test(tc, test_clean_random);
	suite_add_tcase(s, tc);
	return s;
}
