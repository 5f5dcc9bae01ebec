/* line.c - chat input framing and cleaning: pure code, no I/O (unit-tested and fuzzed). */
#include "line.h"

#include <stdlib.h>
#include <string.h>

/* Prepare a reader for lines of at most max_line bytes. */
int
line_reader_init(struct line_reader *lr, size_t max_line)
{
	memset(lr, 0, sizeof(*lr));
	lr->max_line = max_line;
	lr->buf = malloc(max_line > 0 ? max_line : 1);
	return lr->buf == NULL ? -1 : 0;
}

void
line_reader_free(struct line_reader *lr)
{
	free(lr->buf);
	lr->buf = NULL;
}

/* Finish the current line into ev; returns whether there is one to report. */
static bool
line_end(struct line_reader *lr, struct line_event *ev)
{
	bool had_line = !lr->discarding && lr->len > 0;

	lr->discarding = false;
	if (!had_line) {
		lr->len = 0;
		return false; /* empty lines are ignored */
	}
	ev->type = LINE_COMPLETE;
	ev->data = lr->buf;
	ev->len = lr->len;
	lr->len = 0;
	return true;
}

/* Append one data byte; returns whether the line just became too long. */
static bool
line_add(struct line_reader *lr, unsigned char ch)
{
	if (lr->discarding)
		return false;
	if (lr->len == lr->max_line) {
		lr->discarding = true;
		lr->len = 0;
		return true;
	}
	lr->buf[lr->len++] = ch;
	return false;
}

/*
 * Consume input until something happens: a line completes, a line becomes too long,
 * or the peer asks a telnet option. Returns the bytes consumed; ev->type is LINE_NONE
 * when all len bytes were consumed with nothing to report. Lines end with LF, CR LF,
 * CR NUL or a bare CR, also across calls. Telnet commands are removed; IAC IAC is 0xFF.
 */
size_t
line_reader_push(struct line_reader *lr, const unsigned char *data, size_t len,
                 struct line_event *ev)
{
	size_t i = 0;

	ev->type = LINE_NONE;
	ev->data = NULL;
	ev->len = 0;
	while (i < len) {
		unsigned char ch = data[i++];

		switch (lr->state) {
		case LINE_STATE_AFTER_CR:
			lr->state = LINE_STATE_DATA;
			if (ch == '\n' || ch == '\0')
				break;
			/* FALLTHROUGH */
		case LINE_STATE_DATA:
			if (ch == TELNET_IAC) {
				lr->resume = LINE_STATE_DATA;
				lr->state = LINE_STATE_IAC;
			} else if (ch == '\n' || ch == '\r') {
				if (ch == '\r')
					lr->state = LINE_STATE_AFTER_CR;
				if (line_end(lr, ev))
					return i;
			} else if (line_add(lr, ch)) {
				ev->type = LINE_TOO_LONG;
				return i;
			}
			break;
		case LINE_STATE_IAC:
			lr->state = lr->resume;
			if (ch == TELNET_IAC) {
				if (line_add(lr, ch)) {
					ev->type = LINE_TOO_LONG;
					return i;
				}
			} else if (ch >= TELNET_WILL && ch <= TELNET_DONT) {
				lr->pending_command = ch;
				lr->state = LINE_STATE_IAC_OPTION;
			} else if (ch == TELNET_SB)
				lr->state = LINE_STATE_SB;
			/* any other command (NOP, AYT, GA, ...) is two bytes long: dropped */
			break;
		case LINE_STATE_IAC_OPTION:
			lr->state = lr->resume;
			if (lr->pending_command == TELNET_DO || lr->pending_command == TELNET_WILL) {
				ev->type = LINE_TELNET;
				ev->telnet_command = lr->pending_command;
				ev->telnet_option = ch;
				return i;
			}
			break;
		case LINE_STATE_SB:
			if (ch == TELNET_IAC)
				lr->state = LINE_STATE_SB_IAC;
			break;
		case LINE_STATE_SB_IAC:
			/* IAC SE ends the subnegotiation; IAC IAC is data inside it. */
			lr->state = ch == TELNET_SE ? lr->resume : LINE_STATE_SB;
			break;
		}
	}
	return i;
}

/* The input ended: hand out a last line that had no line ending, if any. */
bool
line_reader_finish(struct line_reader *lr, struct line_event *ev)
{
	ev->type = LINE_NONE;
	lr->state = LINE_STATE_DATA;
	return line_end(lr, ev);
}

/* Decode one UTF-8 sequence at s (n bytes left); returns its length, 0 if invalid. */
static size_t
utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	size_t need;
	uint32_t min, c;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xC2 && s[0] <= 0xDF) {
		need = 2;
		min = 0x80;
		c = s[0] & 0x1F;
	} else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		need = 3;
		min = 0x800;
		c = s[0] & 0x0F;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		need = 4;
		min = 0x10000;
		c = s[0] & 0x07;
	} else
		return 0;
	if (n < need)
		return 0;
	for (size_t k = 1; k < need; k++) {
		if ((s[k] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (s[k] & 0x3F);
	}
	/* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are invalid. */
	if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	*cp = c;
	return need;
}

/* Tell whether a code point must not reach other people's terminals. */
static bool
line_is_unsafe(uint32_t cp)
{
	return (cp < 0x20 && cp != '\t') || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) ||
	       (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

/*
 * Clean a line before anyone else sees it: control characters (C0 but TAB, DEL, C1)
 * and Unicode bidirectional controls are removed, so nobody can push escape sequences
 * or reorder text in other people's terminals; each invalid UTF-8 sequence becomes
 * U+FFFD. dst must hold LINE_CLEAN_MAX(len) bytes; returns the bytes written.
 */
size_t
line_clean(const unsigned char *src, size_t len, char *dst)
{
	size_t i = 0, o = 0;

	while (i < len) {
		uint32_t cp;
		size_t n = utf8_decode(src + i, len - i, &cp);

		if (n == 0) {
			/* U+FFFD for the invalid byte; resynchronise on the next one. */
			dst[o++] = (char)0xEF;
			dst[o++] = (char)0xBF;
			dst[o++] = (char)0xBD;
			i++;
			continue;
		}
		if (!line_is_unsafe(cp)) {
			memcpy(dst + o, src + i, n);
			o += n;
		}
		i += n;
	}
	return o;
}
