/*
 * fuzz_chat_input.c - libFuzzer target for the chat input path, without I/O:
 * line_reader_push (framing, telnet) -> line_clean -> command_parse.
 *
 * Input layout:
 *   byte 0      max_line, 16..600
 *   byte 1      how the rest is split into reads: 0 = one byte per read, otherwise
 *               read sizes from a small PRNG seeded by this byte (up to 8 * (b & 63) + 1)
 *   bytes 2...  what the peer sends
 *
 * Properties checked (abort() when one does not hold):
 *   - line_reader_push consumes at least one byte of a non-empty buffer and at most all
 *     of it, all of it when it reports LINE_NONE; LINE_COMPLETE lines are 1..max_line
 *     bytes; LINE_TELNET is only IAC DO or IAC WILL;
 *   - split reads change nothing: the events are the same whether the bytes arrive in
 *     one read or in the data-chosen chunks;
 *   - the cleaned line (in a buffer of exactly LINE_CLEAN_MAX(len) + 1 bytes) is valid
 *     UTF-8 without C0 controls but TAB, DEL, C1 controls, U+202A..U+202E or
 *     U+2066..U+2069, holds no NUL, and cleaning it again gives it back unchanged;
 *   - command_parse of the cleaned line gives a consistent struct command.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "line.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_chat_input: %s:%d: check failed: %s\n",       \
			        __FILE__, __LINE__, #cond);                                  \
			abort();                                                             \
		}                                                                            \
	} while (0)

/* The events of one pass, serialised, to compare passes. */
struct trace {
	unsigned char *buf;
	size_t len, cap;
};

static void
trace_add(struct trace *t, const void *p, size_t n)
{
	if (t->len + n > t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 1024;
		while (cap < t->len + n)
			cap *= 2;
		t->buf = realloc(t->buf, cap);
		CHECK(t->buf != NULL);
		t->cap = cap;
	}
	memcpy(t->buf + t->len, p, n);
	t->len += n;
}

static void
trace_event(struct trace *t, const struct line_event *ev)
{
	unsigned char head[3] = {(unsigned char)ev->type, ev->telnet_command, ev->telnet_option};

	if (ev->type != LINE_TELNET)
		head[1] = head[2] = 0;
	trace_add(t, head, sizeof(head));
	if (ev->type == LINE_COMPLETE) {
		trace_add(t, &ev->len, sizeof(ev->len));
		trace_add(t, ev->data, ev->len);
	}
}

/* Independent strict UTF-8 check of s[0..len), with the code points the cleaner removes. */
static int
clean_utf8_ok(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint32_t cp;
		size_t n;
		unsigned char b = s[i];

		if (b < 0x80) {
			cp = b;
			n = 1;
		} else if ((b & 0xE0) == 0xC0) {
			cp = b & 0x1F;
			n = 2;
		} else if ((b & 0xF0) == 0xE0) {
			cp = b & 0x0F;
			n = 3;
		} else if ((b & 0xF8) == 0xF0) {
			cp = b & 0x07;
			n = 4;
		} else
			return 0; /* continuation byte or 0xF8..0xFF as a lead byte */
		if (len - i < n)
			return 0; /* truncated */
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000))
			return 0; /* overlong */
		if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		if ((cp < 0x20 && cp != '\t') || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F))
			return 0; /* C0 but TAB, DEL, C1 */
		if ((cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069))
			return 0; /* bidi embeddings, overrides, isolates */
		i += n;
	}
	return 1;
}

static int
nick_ok(const char *s)
{
	return nick_valid(s, strlen(s));
}

/* Clean one complete line, check the result, and parse it. */
static void
check_line(const unsigned char *line, size_t len)
{
	char *clean = malloc(LINE_CLEAN_MAX(len) + 1), *again;
	size_t clen, alen;
	struct command cmd;

	CHECK(clean != NULL);
	clen = line_clean(line, len, clean);
	CHECK(clen <= LINE_CLEAN_MAX(len));
	clean[clen] = '\0';
	CHECK(memchr(clean, '\0', clen) == NULL);
	CHECK(clean_utf8_ok((const unsigned char *)clean, clen));

	/* Cleaning is idempotent. */
	again = malloc(LINE_CLEAN_MAX(clen) + 1);
	CHECK(again != NULL);
	alen = line_clean((const unsigned char *)clean, clen, again);
	CHECK(alen == clen && memcmp(again, clean, clen) == 0);
	free(again);

	command_parse(clean, &cmd);
	CHECK(cmd.type >= CMD_MESSAGE && cmd.type <= CMD_INVALID);
	CHECK(memchr(cmd.word, '\0', sizeof(cmd.word)) != NULL);
	CHECK(cmd.text != NULL);
	CHECK(cmd.text[0] == '\0' || (cmd.text >= clean && cmd.text <= clean + clen));
	switch (cmd.type) {
	case CMD_MESSAGE:
		CHECK(cmd.text == clean || (clean[0] == '/' && cmd.text == clean + 1));
		break;
	case CMD_NICK:
		CHECK(nick_ok(cmd.word));
		break;
	case CMD_JOIN:
		CHECK(cmd.word[0] == '#' && strlen(cmd.word) >= 2 &&
		      strlen(cmd.word) <= ROOM_MAX + 1);
		break;
	case CMD_MSG:
		CHECK(nick_ok(cmd.word) && cmd.text[0] != '\0');
		break;
	case CMD_ME:
		CHECK(cmd.text[0] != '\0');
		break;
	case CMD_INVALID:
		CHECK(cmd.error != NULL);
		break;
	default:
		break;
	}
	CHECK(cmd.type == CMD_INVALID || cmd.error == NULL);
	free(clean);
}

static uint32_t
xorshift32(uint32_t *state)
{
	uint32_t x = *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *state = x;
}

/* Feed len bytes in chunks (chunk_seed 256: all at once); record events; check lines. */
static void
run(size_t max_line, unsigned chunk_seed, const unsigned char *in, size_t len,
    struct trace *t, int check_lines)
{
	struct line_reader lr;
	struct line_event ev;
	uint32_t rng = 0x9E3779B9u * (chunk_seed + 1u);
	size_t pos = 0, max_chunk = chunk_seed == 256 ? len : 8u * (chunk_seed & 63u) + 1u;

	CHECK(line_reader_init(&lr, max_line) == 0);
	while (pos < len) {
		size_t chunk = chunk_seed == 256 ? len - pos : 1 + xorshift32(&rng) % max_chunk;
		unsigned char *copy;
		size_t off = 0;

		if (chunk > len - pos)
			chunk = len - pos;
		/* An exact-size copy, released after the read, like a socket buffer. */
		copy = malloc(chunk);
		CHECK(copy != NULL);
		memcpy(copy, in + pos, chunk);
		while (off < chunk) {
			size_t used = line_reader_push(&lr, copy + off, chunk - off, &ev);

			CHECK(used >= 1 && used <= chunk - off);
			off += used;
			switch (ev.type) {
			case LINE_NONE:
				CHECK(off == chunk);
				continue; /* nothing to record */
			case LINE_COMPLETE:
				CHECK(ev.data != NULL && ev.len >= 1 && ev.len <= max_line);
				if (check_lines)
					check_line(ev.data, ev.len);
				break;
			case LINE_TOO_LONG:
				break;
			case LINE_TELNET:
				CHECK(ev.telnet_command == TELNET_DO ||
				      ev.telnet_command == TELNET_WILL);
				break;
			default:
				CHECK(!"unknown event type");
			}
			trace_event(t, &ev);
		}
		free(copy);
		pos += chunk;
	}
	if (line_reader_finish(&lr, &ev)) {
		CHECK(ev.type == LINE_COMPLETE);
		CHECK(ev.data != NULL && ev.len >= 1 && ev.len <= max_line);
		if (check_lines)
			check_line(ev.data, ev.len);
		trace_event(t, &ev);
	} else
		CHECK(ev.type == LINE_NONE);
	CHECK(lr.len == 0);
	line_reader_free(&lr);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct trace whole = {0}, split = {0};
	size_t max_line;

	if (size < 2)
		return 0;
	max_line = 16 + (size_t)data[0] * (600 - 16) / 255;
	run(max_line, data[1], data + 2, size - 2, &split, 1);
	run(max_line, 256, data + 2, size - 2, &whole, 0);
	CHECK(whole.len == split.len);
	CHECK(whole.len == 0 || memcmp(whole.buf, split.buf, whole.len) == 0);
	free(whole.buf);
	free(split.buf);
	return 0;
}
