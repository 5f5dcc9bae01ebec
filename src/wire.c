/* wire.c - encode and validate the cluster messages of version 1 (see doc/cluster.md). */
#include "wire.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const char *const wire_names[] = {
	[WIRE_MSG] = "msg",   [WIRE_ME] = "me",     [WIRE_TOPIC] = "topic", [WIRE_JOIN] = "join",
	[WIRE_PART] = "part", [WIRE_QUIT] = "quit", [WIRE_NICK] = "nick",   [WIRE_PM] = "pm",
	[WIRE_BYE] = "bye",   [WIRE_HB] = "hb",
};

#define WIRE_NTYPES (sizeof(wire_names) / sizeof(wire_names[0]))

/* The fields after VERSION and TYPE, by type: what each one must hold. */
enum field {
	F_NODE,
	F_ID,
	F_NICK,
	F_OTHER,
	F_ROOM,
	F_TEXT,  /* the rest of the payload, TABs included */
	F_EPOCH,
	F_END,
};

static const enum field wire_fields[][6] = {
	[WIRE_MSG] = {F_NODE, F_ID, F_NICK, F_ROOM, F_TEXT, F_END},
	[WIRE_ME] = {F_NODE, F_ID, F_NICK, F_ROOM, F_TEXT, F_END},
	[WIRE_TOPIC] = {F_NODE, F_NICK, F_ROOM, F_TEXT, F_END},
	[WIRE_JOIN] = {F_NODE, F_NICK, F_ROOM, F_END},
	[WIRE_PART] = {F_NODE, F_NICK, F_ROOM, F_END},
	[WIRE_QUIT] = {F_NODE, F_NICK, F_ROOM, F_TEXT, F_END},
	[WIRE_NICK] = {F_NODE, F_NICK, F_OTHER, F_ROOM, F_END},
	[WIRE_PM] = {F_NODE, F_NICK, F_OTHER, F_TEXT, F_END},
	[WIRE_BYE] = {F_NODE, F_END},
	[WIRE_HB] = {F_NODE, F_EPOCH, F_END},
};

const char *
wire_type_name(enum wire_type type)
{
	return (size_t)type < WIRE_NTYPES ? wire_names[type] : "?";
}

/* Tell whether id is a Redis stream id ("MS-SEQ") or "-". */
bool
wire_id_valid(const char *id, size_t len)
{
	size_t dash = 0, i;

	if (len == 1 && id[0] == '-')
		return true;
	if (len == 0 || len > WIRE_ID_MAX)
		return false;
	for (i = 0; i < len; i++) {
		if (id[i] == '-' && dash == 0 && i > 0)
			dash = i;
		else if (!isdigit((unsigned char)id[i]))
			return false;
	}
	return dash > 0 && dash + 1 < len;
}

/* Tell whether free text is fit for a chat line: no CR, LF or NUL. */
static bool
text_valid(const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (text[i] == '\r' || text[i] == '\n' || text[i] == '\0')
			return false;
	return true;
}

/* Copy a nick field after checking it. */
static bool
take_nick(const char *p, size_t len, char *out)
{
	if (!nick_valid(p, len))
		return false;
	memcpy(out, p, len);
	out[len] = '\0';
	return true;
}

/* Check the roster lines of a heartbeat, all of them, before anyone trusts one. */
static bool
roster_valid(const char *p, const char *end)
{
	struct wire_roster_entry e;

	while (p < end)
		if (!wire_roster_next(&p, end, &e))
			return false;
	return true;
}

/*
 * Decode and validate one payload. Everything a node received from Redis goes through
 * here, so nothing is trusted: version, type, field count, every nick, room, node and id,
 * sizes, and no CR, LF or NUL in text. Returns 0, or -1 for a malformed payload.
 */
int
wire_decode(const char *payload, size_t len, struct wire_msg *m)
{
	const char *p = payload, *end = payload + len, *tab;
	size_t type, flen;

	memset(m, 0, sizeof(*m));
	if (len < 4 || len > WIRE_HB_MAX || memcmp(p, WIRE_VERSION "\t", 2) != 0)
		return -1;
	p += 2;
	for (type = 0; type < WIRE_NTYPES; type++) {
		flen = strlen(wire_names[type]);
		if ((size_t)(end - p) > flen && memcmp(p, wire_names[type], flen) == 0 &&
		    (p[flen] == '\t'))
			break;
	}
	if (type == WIRE_NTYPES)
		return -1;
	m->type = (enum wire_type)type;
	if (m->type != WIRE_HB && len > WIRE_MAX)
		return -1;
	p += strlen(wire_names[type]) + 1;
	for (const enum field *f = wire_fields[type]; *f != F_END; f++) {
		bool last = f[1] == F_END;
		const char *stop = m->type == WIRE_HB && last ? memchr(p, '\n', (size_t)(end - p)) : NULL;

		if (*f == F_TEXT) {
			if (!text_valid(p, (size_t)(end - p)))
				return -1;
			m->text = p;
			m->text_len = (size_t)(end - p);
			p = end;
			continue;
		}
		tab = last ? (stop != NULL ? stop : end) : memchr(p, '\t', (size_t)(end - p));
		if (tab == NULL)
			return -1;
		flen = (size_t)(tab - p);
		switch (*f) {
		case F_NODE:
			if (!config_valid_node(p, flen))
				return -1;
			memcpy(m->node, p, flen);
			break;
		case F_ID:
			if (!wire_id_valid(p, flen))
				return -1;
			memcpy(m->id, p, flen);
			break;
		case F_NICK:
			if (!take_nick(p, flen, m->nick))
				return -1;
			break;
		case F_OTHER:
			if (!take_nick(p, flen, m->other))
				return -1;
			break;
		case F_ROOM:
			if (flen == 0 || p[0] != '#' || !room_normalize(p, flen, m->room, sizeof(m->room)))
				return -1;
			break;
		case F_EPOCH: {
			char digits[21];
			if (flen == 0 || flen >= sizeof(digits))
				return -1;
			for (size_t i = 0; i < flen; i++) /* not strspn: p is not NUL-terminated */
				if (!isdigit((unsigned char)p[i]))
					return -1;
			memcpy(digits, p, flen);
			digits[flen] = '\0';
			m->epoch = strtoull(digits, NULL, 10);
			break;
		}
		case F_TEXT:
		case F_END:
			break;
		}
		p = tab == end ? end : tab + 1;
	}
	if (m->type == WIRE_HB) {
		if (!roster_valid(p, end))
			return -1;
		m->text = p;
		m->text_len = (size_t)(end - p);
	} else if (p != end && m->text == NULL)
		return -1; /* fields left over */
	return 0;
}

/*
 * Read the next roster line of a heartbeat at *cursor; false at the end or on a
 * malformed line (wire_decode has checked every line before handing the roster out).
 */
bool
wire_roster_next(const char **cursor, const char *end, struct wire_roster_entry *e)
{
	const char *p = *cursor, *nl, *tab;
	size_t flen;

	if (p >= end)
		return false;
	nl = memchr(p, '\n', (size_t)(end - p));
	if (nl == NULL)
		nl = end;
	memset(e, 0, sizeof(*e));
	tab = memchr(p, '\t', (size_t)(nl - p));
	if (tab == NULL)
		return false;
	flen = (size_t)(tab - p);
	/* "T\tROOM\tTOPIC" has two TABs; "NICK\tROOM" one (and "T" is a valid nick) */
	if (flen == 1 && p[0] == 'T' && memchr(tab + 1, '\t', (size_t)(nl - tab - 1)) != NULL) {
		const char *room = tab + 1, *tab2 = memchr(room, '\t', (size_t)(nl - room));
		if (tab2 == room || room[0] != '#' ||
		    !room_normalize(room, (size_t)(tab2 - room), e->room, sizeof(e->room)) ||
		    !text_valid(tab2 + 1, (size_t)(nl - tab2 - 1)))
			return false;
		e->is_topic = true;
		e->topic = tab2 + 1;
		e->topic_len = (size_t)(nl - tab2 - 1);
	} else {
		const char *room = tab + 1;
		if (!take_nick(p, flen, e->nick) || nl == room || room[0] != '#' ||
		    !room_normalize(room, (size_t)(nl - room), e->room, sizeof(e->room)))
			return false;
	}
	*cursor = nl < end ? nl + 1 : end;
	return true;
}

/* Encode m (all but hb) as a payload; malloc'd, free it. */
char *
wire_encode(const struct wire_msg *m, size_t *len)
{
	const char *name = wire_type_name(m->type);
	int text_len = (int)m->text_len;
	const char *text = m->text != NULL ? m->text : "";
	char *out = NULL;
	int n = -1;

	switch (m->type) {
	case WIRE_MSG:
	case WIRE_ME:
		n = asprintf(&out, "1\t%s\t%s\t%s\t%s\t%s\t%.*s", name, m->node,
		             m->id[0] ? m->id : "-", m->nick, m->room, text_len, text);
		break;
	case WIRE_TOPIC:
	case WIRE_QUIT:
		n = asprintf(&out, "1\t%s\t%s\t%s\t%s\t%.*s", name, m->node, m->nick, m->room,
		             text_len, text);
		break;
	case WIRE_JOIN:
	case WIRE_PART:
		n = asprintf(&out, "1\t%s\t%s\t%s\t%s", name, m->node, m->nick, m->room);
		break;
	case WIRE_NICK:
		n = asprintf(&out, "1\t%s\t%s\t%s\t%s\t%s", name, m->node, m->nick, m->other,
		             m->room);
		break;
	case WIRE_PM:
		n = asprintf(&out, "1\t%s\t%s\t%s\t%s\t%.*s", name, m->node, m->nick, m->other,
		             text_len, text);
		break;
	case WIRE_BYE:
		n = asprintf(&out, "1\t%s\t%s", name, m->node);
		break;
	case WIRE_HB:
		n = asprintf(&out, "1\t%s\t%s\t%llu", name, m->node, m->epoch);
		break;
	}
	if (n < 0)
		fatal("asprintf");
	*len = (size_t)n;
	return out;
}
