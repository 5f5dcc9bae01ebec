/* wire.h - the cluster's message format between nodes, version 1 (pure: no I/O). */
#ifndef ECHOCHATD_WIRE_H
#define ECHOCHATD_WIRE_H

#include <stdbool.h>
#include <stddef.h>

#include "command.h"
#include "config.h"

#define WIRE_VERSION "1"
/* Largest message but a heartbeat: a chat line (max_line <= 64 KiB) and its fields. */
#define WIRE_MAX ((size_t)64 * 1024 + 1024)
/* Largest heartbeat: the whole roster of a node. */
#define WIRE_HB_MAX ((size_t)16 * 1024 * 1024)
/* Longest Redis stream id ("18446744073709551615-18446744073709551615"). */
#define WIRE_ID_MAX 41

enum wire_type {
	WIRE_MSG,   /* NODE ID NICK ROOM TEXT */
	WIRE_ME,    /* NODE ID NICK ROOM TEXT */
	WIRE_TOPIC, /* NODE NICK ROOM TEXT */
	WIRE_JOIN,  /* NODE NICK ROOM */
	WIRE_PART,  /* NODE NICK ROOM */
	WIRE_QUIT,  /* NODE NICK ROOM REASON */
	WIRE_NICK,  /* NODE OLD NEW ROOM */
	WIRE_PM,    /* NODE FROM TO TEXT */
	WIRE_BYE,   /* NODE */
	WIRE_HB,    /* NODE EPOCH, then lines "NICK\tROOM" and "T\tROOM\tTOPIC" */
};

/* One decoded message; text points into the payload it was decoded from. */
struct wire_msg {
	enum wire_type type;
	char node[CLUSTER_NAME_MAX + 1];
	char id[WIRE_ID_MAX + 1]; /* msg, me: the stream id, or "-" */
	char nick[NICK_MAX + 1];  /* the user; the old nick (nick); the sender (pm) */
	char other[NICK_MAX + 1]; /* the new nick (nick); the receiver (pm) */
	char room[ROOM_MAX + 2];
	const char *text; /* msg, me, topic, quit, pm: the text; hb: the roster lines */
	size_t text_len;
	unsigned long long epoch; /* hb: the node's start time, to tell restarts apart */
};

/* One line of a heartbeat's roster. */
struct wire_roster_entry {
	bool is_topic;
	char nick[NICK_MAX + 1];
	char room[ROOM_MAX + 2];
	const char *topic;
	size_t topic_len;
};

const char *wire_type_name(enum wire_type type);
int wire_decode(const char *payload, size_t len, struct wire_msg *m);
char *wire_encode(const struct wire_msg *m, size_t *len);
bool wire_roster_next(const char **cursor, const char *end, struct wire_roster_entry *e);
bool wire_id_valid(const char *id, size_t len);

#endif
