/* line.h - chat input framing and cleaning: pure code, no I/O (unit-tested and fuzzed). */
#ifndef ECHOCHATD_LINE_H
#define ECHOCHATD_LINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Telnet bytes (RFC 854). */
#define TELNET_IAC 255
#define TELNET_DONT 254
#define TELNET_DO 253
#define TELNET_WONT 252
#define TELNET_WILL 251
#define TELNET_SB 250
#define TELNET_SE 240

enum line_event_type {
	LINE_NONE,     /* all input consumed, no line complete yet */
	LINE_COMPLETE, /* a line (without its ending) is in ev->data, ev->len */
	LINE_TOO_LONG, /* a line passed max_line: the rest up to its end is discarded */
	LINE_TELNET,   /* the peer sent IAC DO/WILL opt: ev->telnet_command, ev->telnet_option */
};

struct line_event {
	enum line_event_type type;
	const unsigned char *data; /* valid until the next line_reader_push */
	size_t len;
	uint8_t telnet_command;
	uint8_t telnet_option;
};

enum line_state {
	LINE_STATE_DATA,
	LINE_STATE_AFTER_CR, /* a CR ended the line: a following LF or NUL belongs to it */
	LINE_STATE_IAC,
	LINE_STATE_IAC_OPTION,
	LINE_STATE_SB,
	LINE_STATE_SB_IAC,
};

struct line_reader {
	size_t max_line;
	enum line_state state;
	enum line_state resume; /* where IAC processing returns to */
	uint8_t pending_command;
	bool discarding; /* the current line was too long */
	size_t len;
	unsigned char *buf; /* max_line bytes */
};

int line_reader_init(struct line_reader *lr, size_t max_line);
void line_reader_free(struct line_reader *lr);
size_t line_reader_push(struct line_reader *lr, const unsigned char *data, size_t len,
                        struct line_event *ev);
bool line_reader_finish(struct line_reader *lr, struct line_event *ev);

/* The most bytes line_clean can write for a line of len bytes. */
#define LINE_CLEAN_MAX(len) ((len) * 3)
size_t line_clean(const unsigned char *src, size_t len, char *dst);

#endif
