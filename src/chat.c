/* chat.c - the chat service: users, nicknames, rooms, commands, broadcast. */
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "bucket.h"
#include "chat.h"
#include "client.h"
#include "cluster.h"
#include "command.h"
#include "config.h"
#include "line.h"
#include "metrics.h"
#include "server.h"
#include "service.h"

/* Broadcast lines are written once into blocks of this size and shared by reference. */
#define CHAT_BLOCK_SIZE ((size_t)64 * 1024)
/*
 * A delivery this long or longer is added to receivers' buffers by reference; a
 * shorter one is copied. A reference costs libevent a chain of its own (about 100
 * bytes) in every receiver's buffer, more than a short line's bytes, and a copy
 * usually lands in the free tail of the last chain: 2,000 people joining one room
 * would otherwise queue millions of tiny chains.
 */
#define CHAT_REFERENCE_MIN 512
/* Kernel send buffer of a chat socket (Linux doubles it): what a receiver that does
 * not read can hold in the kernel, on top of max_output in ours. */
#define CHAT_SOCKET_SNDBUF (64 * 1024)
/* /who and /rooms lines are cut near this length. */
#define CHAT_LIST_WIDTH 400

TAILQ_HEAD(chat_user_list, chat_user);

/* Refcounted bytes, referenced from the output buffers of every receiver. */
struct chat_block {
	unsigned refs;
	size_t len;
	size_t cap;
	char data[];
};

struct chat_room {
	TAILQ_ENTRY(chat_room) entry;
	char name[ROOM_MAX + 2];
	char *topic;
	struct chat_user_list members;
	unsigned member_count;
	/* the last history_cap room messages, ready to send (with CRLF) */
	char **history;
	unsigned history_cap;
	unsigned history_count;
	unsigned history_next;
};

struct chat_user {
	TAILQ_ENTRY(chat_user) all_entry;
	TAILQ_ENTRY(chat_user) room_entry;
	struct client *client;
	struct chat_room *room;
	char nick[NICK_MAX + 1];
	struct line_reader reader;
	struct token_bucket bucket;
	struct event *rate_timer;
	uint8_t telnet_answered[2][32]; /* DO and WILL options already refused */
	char pending_nick[NICK_MAX + 1]; /* a /nick waiting for the cluster's claim */
	bool departed;
	bool dropping;
	struct chat_user *next_drop;
};

/* The chat's state: one per process, like the event loop. */
static struct {
	bool initialised;
	struct chat_user_list users;
	TAILQ_HEAD(, chat_room) rooms;
	unsigned user_count;
	unsigned room_count;
	unsigned long guest_counter;
	/* broadcast batching: block->data[pending_start..len) still goes to pending_room */
	struct chat_block *block;
	size_t pending_start;
	struct chat_room *pending_room;
	struct chat_user *pending_except;
	unsigned pending_lines; /* lines in the pending range, for the metrics */
	struct chat_user *drops; /* slow consumers to disconnect once delivery is over */
	bool flushing;
	/* scratch space for formatting and cleaning */
	char *scratch;
	size_t scratch_len;
	char *clean;
	size_t clean_len;
} chat;

static void chat_flush(void);
static void chat_deliver_pending(void);

/* Set the state up on first use. */
static void
chat_init(void)
{
	if (chat.initialised)
		return;
	TAILQ_INIT(&chat.users);
	TAILQ_INIT(&chat.rooms);
	chat.initialised = true;
}

/* The chat settings in force. */
static const struct chat_settings *
chat_settings_of(const struct chat_user *u)
{
	return &u->client->server->config->chat_settings;
}

/* Milliseconds on the monotonic clock. */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Grow a scratch buffer to at least len bytes. */
static char *
scratch_reserve(char **buf, size_t *cap, size_t len)
{
	if (*cap < len) {
		char *grown = realloc(*buf, len);
		if (grown == NULL)
			fatal("realloc");
		*buf = grown;
		*cap = len;
	}
	return *buf;
}

/* Format a line ending in CRLF into the scratch buffer; returns its length. */
static size_t
chat_vformat(const char *fmt, va_list ap)
{
	va_list copy;
	int n;

	va_copy(copy, ap);
	n = vsnprintf(chat.scratch, chat.scratch_len, fmt, copy);
	va_end(copy);
	if (n < 0)
		n = 0;
	if ((size_t)n + 3 > chat.scratch_len) {
		scratch_reserve(&chat.scratch, &chat.scratch_len, (size_t)n + 3);
		n = vsnprintf(chat.scratch, chat.scratch_len, fmt, ap);
	}
	memcpy(chat.scratch + n, "\r\n", 3);
	return (size_t)n + 2;
}

static size_t chat_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static size_t
chat_format(const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	n = chat_vformat(fmt, ap);
	va_end(ap);
	return n;
}

/* Mark a receiver whose queue is full; it is disconnected once delivery is over. */
static void
chat_schedule_drop(struct chat_user *u)
{
	if (u->dropping || u->departed)
		return;
	u->dropping = true;
	u->next_drop = chat.drops;
	chat.drops = u;
}

/*
 * Tell whether u can take more output; schedule a drop if its queue already passed
 * max_output. The queue is checked before the new bytes are added, because one read
 * of a fast sender is delivered as one batch before the loop gets to write: a limit
 * below one batch would drop receivers that keep up. So a queue holds at most
 * max_output plus one batch, and a batch is shared by reference, not copied.
 */
static bool
chat_fits(struct chat_user *u)
{
	if (u->dropping || (u->client->flags & (CLIENT_CLOSED | CLIENT_FIN_SENT)))
		return false;
	if (client_output_length(u->client) > chat_settings_of(u)->max_output) {
		chat_schedule_drop(u);
		return false;
	}
	return true;
}

/* Send raw bytes to one user, after every broadcast queued before them; count them as
 * lines delivered unless they are a telnet reply. */
static void
chat_send_raw(struct chat_user *u, const char *data, size_t len, unsigned lines)
{
	chat_deliver_pending();
	if (!chat_fits(u))
		return;
	client_send(u->client, data, len);
	metrics.chat_lines_delivered += lines;
}

static void chat_send(struct chat_user *u, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Send one formatted line (CRLF added) to one user. */
static void
chat_send(struct chat_user *u, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	chat_deliver_pending();
	va_start(ap, fmt);
	n = chat_vformat(fmt, ap);
	va_end(ap);
	chat_send_raw(u, chat.scratch, n, 1);
}

/* Let go of one reference to a block; the last one frees it. */
static void
chat_block_release(const void *data, size_t len, void *arg)
{
	struct chat_block *block = arg;

	(void)data;
	(void)len;
	if (--block->refs == 0)
		free(block);
}

/* Hand the pending broadcast bytes to every member of their room, by reference. */
static void
chat_deliver_pending(void)
{
	struct chat_block *block = chat.block;
	struct chat_room *room = chat.pending_room;
	struct chat_user *m;
	size_t len;

	if (room == NULL || block == NULL)
		return;
	len = block->len - chat.pending_start;
	TAILQ_FOREACH(m, &room->members, room_entry) {
		if (m == chat.pending_except || !chat_fits(m))
			continue;
		if (len < CHAT_REFERENCE_MIN)
			client_send(m->client, block->data + chat.pending_start, len);
		else {
			block->refs++;
			client_send_reference(m->client, block->data + chat.pending_start, len,
			                      chat_block_release, block);
		}
		metrics.chat_lines_delivered += chat.pending_lines;
	}
	chat.pending_start = block->len;
	chat.pending_lines = 0;
	chat.pending_room = NULL;
	chat.pending_except = NULL;
}

/* Queue a line (with CRLF) for every member of room but except, formatted once. */
static void
chat_broadcast(struct chat_room *room, struct chat_user *except, const char *line, size_t len)
{
	if (chat.pending_room != NULL &&
	    (chat.pending_room != room || chat.pending_except != except))
		chat_deliver_pending();
	if (chat.block == NULL || chat.block->cap - chat.block->len < len) {
		size_t cap = len > CHAT_BLOCK_SIZE ? len : CHAT_BLOCK_SIZE;
		struct chat_block *block;

		chat_deliver_pending();
		block = malloc(sizeof(*block) + cap);
		if (block == NULL)
			fatal("malloc");
		block->refs = 1; /* the batch's own */
		block->len = 0;
		block->cap = cap;
		if (chat.block != NULL)
			chat_block_release(NULL, 0, chat.block);
		chat.block = block;
		chat.pending_start = 0;
		chat.pending_lines = 0;
	}
	memcpy(chat.block->data + chat.block->len, line, len);
	chat.block->len += len;
	chat.pending_lines++;
	chat.pending_room = room;
	chat.pending_except = except;
}

/* Deliver everything pending and disconnect the slow consumers found meanwhile. */
static void
chat_flush(void)
{
	struct chat_user *u;

	if (chat.flushing)
		return;
	chat.flushing = true;
	for (;;) {
		chat_deliver_pending();
		u = chat.drops;
		if (u == NULL)
			break;
		chat.drops = u->next_drop;
		u->next_drop = NULL;
		metrics.chat_slow_consumers++;
		client_close(u->client, CLOSE_SLOW_CONSUMER, "output queue passed max_output");
	}
	chat.flushing = false;
}

/* Find a user by nick, ignoring case. */
static struct chat_user *
chat_find_user(const char *nick)
{
	struct chat_user *u;

	TAILQ_FOREACH(u, &chat.users, all_entry)
		if (!u->departed && strcasecmp(u->nick, nick) == 0)
			return u;
	return NULL;
}

/* Find a room by name, ignoring case. */
static struct chat_room *
chat_find_room(const char *name)
{
	struct chat_room *room;

	TAILQ_FOREACH(room, &chat.rooms, entry)
		if (strcasecmp(room->name, name) == 0)
			return room;
	return NULL;
}

/* Make a new empty room. */
static struct chat_room *
chat_room_create(const char *name, unsigned history)
{
	struct chat_room *room = calloc(1, sizeof(*room));

	if (room == NULL)
		fatal("calloc");
	snprintf(room->name, sizeof(room->name), "%s", name);
	TAILQ_INIT(&room->members);
	room->history_cap = history;
	if (history > 0 && (room->history = calloc(history, sizeof(*room->history))) == NULL)
		fatal("calloc");
	if (cluster_remote_topic(name) != NULL && (room->topic = strdup(cluster_remote_topic(name))) == NULL)
		fatal("strdup");
	TAILQ_INSERT_TAIL(&chat.rooms, room, entry);
	chat.room_count++;
	cluster_room_opened(room->name);
	return room;
}

/* Free a room nobody is in. */
static void
chat_room_free(struct chat_room *room)
{
	cluster_room_closed(room->name);
	TAILQ_REMOVE(&chat.rooms, room, entry);
	chat.room_count--;
	for (unsigned i = 0; i < room->history_cap; i++)
		free(room->history[i]);
	free(room->history);
	free(room->topic);
	free(room);
}

/* Keep a room message for the history replayed to newcomers. */
static void
chat_history_add(struct chat_room *room, const char *line, size_t len)
{
	char *copy;

	if (room->history_cap == 0)
		return;
	copy = malloc(len + 1);
	if (copy == NULL)
		fatal("malloc");
	memcpy(copy, line, len);
	copy[len] = '\0';
	free(room->history[room->history_next]);
	room->history[room->history_next] = copy;
	room->history_next = (room->history_next + 1) % room->history_cap;
	if (room->history_count < room->history_cap)
		room->history_count++;
}

/* The member list being written: "* members of #room (N): a, b, c", cut near the width. */
struct member_list {
	struct chat_user *to;
	const char *room;
	char line[CHAT_LIST_WIDTH + NICK_MAX + 64];
	size_t n;
};

static void
member_list_add(const char *nick, void *arg)
{
	struct member_list *l = arg;

	if (l->n > CHAT_LIST_WIDTH) {
		chat_send(l->to, "%s", l->line);
		l->n = (size_t)snprintf(l->line, sizeof(l->line), "* members of %s (continued):",
		                        l->room);
	}
	l->n += (size_t)snprintf(l->line + l->n, sizeof(l->line) - l->n, "%s %s",
	                         l->line[l->n - 1] == ':' ? "" : ",", nick);
}

/* Send u the members of room, here and on the other nodes of the cluster. */
static void
chat_send_members(struct chat_user *u, struct chat_room *room)
{
	struct member_list l = {.to = u, .room = room->name};
	struct chat_user *m;

	l.n = (size_t)snprintf(l.line, sizeof(l.line), "* members of %s (%u):", room->name,
	                       room->member_count + cluster_remote_count(room->name));
	TAILQ_FOREACH(m, &room->members, room_entry)
		member_list_add(m->nick, &l);
	cluster_each_remote_member(room->name, member_list_add, &l);
	chat_send(u, "%s", l.line);
}

/* Tell u the topic of room. */
static void
chat_send_topic(struct chat_user *u, const struct chat_room *room)
{
	if (room->topic != NULL)
		chat_send(u, "* topic for %s: %s", room->name, room->topic);
	else
		chat_send(u, "* no topic is set for %s", room->name);
}

/* Put u into the room called name (created if need be) and greet it there. */
static void
chat_join(struct chat_user *u, const char *name)
{
	struct chat_room *room = chat_find_room(name);
	size_t n;

	if (room == NULL)
		room = chat_room_create(name, chat_settings_of(u)->history);
	chat_deliver_pending(); /* what was said before the join is not for the newcomer */
	TAILQ_INSERT_TAIL(&room->members, u, room_entry);
	room->member_count++;
	u->room = room;
	n = chat_format("* %s has joined %s", u->nick, room->name);
	chat_broadcast(room, NULL, chat.scratch, n);
	cluster_publish(WIRE_JOIN, u->nick, NULL, room->name, NULL);
	chat_send_topic(u, room);
	chat_send_members(u, room);
	for (unsigned i = 0; i < room->history_count; i++) {
		unsigned slot = (room->history_next + room->history_cap - room->history_count + i) %
		                room->history_cap;
		chat_send_raw(u, room->history[slot], strlen(room->history[slot]), 1);
	}
}

/* Take u out of its room, telling the others with line (may be NULL). */
static void
chat_leave(struct chat_user *u, const char *line, size_t len)
{
	struct chat_room *room = u->room;

	if (room == NULL)
		return;
	if (line != NULL)
		chat_broadcast(room, u, line, len);
	chat_deliver_pending();
	TAILQ_REMOVE(&room->members, u, room_entry);
	room->member_count--;
	u->room = NULL;
	if (room->member_count == 0)
		chat_room_free(room);
}

/* u leaves the chat: the room hears it quit (with the reason, if any), unless the
 * whole server is going down. */
static void
chat_depart(struct chat_user *u, const char *reason)
{
	size_t n = 0;

	if (u->departed)
		return;
	u->departed = true;
	if (!u->client->server->shutting_down) {
		n = reason != NULL && reason[0] != '\0'
		        ? chat_format("* %s has quit (%s)", u->nick, reason)
		        : chat_format("* %s has quit", u->nick);
		if (u->room != NULL)
			cluster_publish(WIRE_QUIT, u->nick, NULL, u->room->name, reason);
		cluster_release_nick(u->nick);
	}
	chat_leave(u, n > 0 ? chat.scratch : NULL, n);
}

/* u is now known as nick: the room here and on every node hears it. */
static void
chat_apply_nick(struct chat_user *u, const char *nick)
{
	char old[NICK_MAX + 1];
	size_t n;

	snprintf(old, sizeof(old), "%s", u->nick);
	snprintf(u->nick, sizeof(u->nick), "%.*s", NICK_MAX, nick);
	n = chat_format("* %s is now known as %s", old, u->nick);
	chat_broadcast(u->room, NULL, chat.scratch, n);
	cluster_publish(WIRE_NICK, old, u->nick, u->room->name, NULL);
	if (strcasecmp(old, u->nick) != 0)
		cluster_release_nick(old);
	log_debug("chat: #%llu %s is now known as %s", (unsigned long long)u->client->id, old,
	          u->nick);
}

/* Tell whether nick is taken by someone but u, here or (as far as known) elsewhere. */
static bool
chat_nick_taken(const struct chat_user *u, const char *nick)
{
	const struct chat_user *other = chat_find_user(nick);

	return (other != NULL && other != u) || cluster_nick_remote(nick);
}

static void
chat_cmd_nick(struct chat_user *u, const char *nick)
{
	if (strcmp(u->nick, nick) == 0) {
		chat_send(u, "! you are already %s", nick);
		return;
	}
	if (u->pending_nick[0] != '\0') {
		chat_send(u, "! wait: your change to %s is not confirmed yet", u->pending_nick);
		return;
	}
	if (chat_nick_taken(u, nick)) {
		chat_send(u, "! the nick %s is taken", nick);
		return;
	}
	/* a case change of one's own nick needs no claim: the claim is case-insensitive */
	if (strcasecmp(u->nick, nick) != 0 && cluster_claim_nick(u->client->id, nick)) {
		snprintf(u->pending_nick, sizeof(u->pending_nick), "%.*s", NICK_MAX, nick);
		return; /* chat_cluster_nick_result finishes it */
	}
	chat_apply_nick(u, nick);
}

/* Give u a fresh guestN nick (unused here and, as far as known, elsewhere). */
static void
chat_pick_guest_nick(struct chat_user *u, char *out, size_t len)
{
	if (chat.guest_counter < cluster_guest_base())
		chat.guest_counter = cluster_guest_base();
	do
		snprintf(out, len, "guest%lu", ++chat.guest_counter);
	while (chat_nick_taken(u, out));
}

static void
chat_cmd_join(struct chat_user *u, const char *name)
{
	size_t n;

	if (strcasecmp(u->room->name, name) == 0) {
		chat_send(u, "! you are already in %s", u->room->name);
		return;
	}
	n = chat_format("* %s has left %s", u->nick, u->room->name);
	chat_broadcast(u->room, NULL, chat.scratch, n);
	cluster_publish(WIRE_PART, u->nick, NULL, u->room->name, NULL);
	chat_leave(u, NULL, 0);
	chat_join(u, name);
}

/* The rooms of /rooms that only other nodes hold: counted, then listed. */
struct remote_rooms {
	struct chat_user *to;
	unsigned count;
	bool list;
};

static void
remote_room_visit(const char *name, unsigned count, const char *topic, void *arg)
{
	struct remote_rooms *r = arg;

	if (chat_find_room(name) != NULL)
		return; /* listed with the local rooms */
	r->count++;
	if (!r->list)
		return;
	if (topic != NULL)
		chat_send(r->to, "* %s (%u): %s", name, count, topic);
	else
		chat_send(r->to, "* %s (%u)", name, count);
}

static void
chat_cmd_rooms(struct chat_user *u)
{
	struct remote_rooms remote = {.to = u};
	struct chat_room *room;
	unsigned total;

	cluster_each_remote_room(remote_room_visit, &remote);
	total = chat.room_count + remote.count;
	chat_send(u, "* %u room%s:", total, total == 1 ? "" : "s");
	TAILQ_FOREACH(room, &chat.rooms, entry) {
		unsigned members = room->member_count + cluster_remote_count(room->name);
		if (room->topic != NULL)
			chat_send(u, "* %s (%u): %s", room->name, members, room->topic);
		else
			chat_send(u, "* %s (%u)", room->name, members);
	}
	remote.list = true;
	cluster_each_remote_room(remote_room_visit, &remote);
}

static void
chat_cmd_msg(struct chat_user *u, const char *nick, const char *text)
{
	struct chat_user *to = chat_find_user(nick);

	if (to == NULL) {
		if (!cluster_send_pm(u->nick, nick, text))
			chat_send(u, "! no such nick: %s", nick);
		return;
	}
	chat_send(to, "*%s* %s", u->nick, text);
}

static void
chat_cmd_topic(struct chat_user *u, const char *text)
{
	struct chat_room *room = u->room;
	char *copy;
	size_t n;

	if (text[0] == '\0') {
		chat_send_topic(u, room);
		return;
	}
	if ((copy = strdup(text)) == NULL)
		fatal("strdup");
	free(room->topic);
	room->topic = copy;
	n = chat_format("* %s set the topic of %s: %s", u->nick, room->name, text);
	chat_broadcast(room, NULL, chat.scratch, n);
	cluster_publish(WIRE_TOPIC, u->nick, NULL, room->name, text);
}

static void
chat_cmd_help(struct chat_user *u)
{
	static const char *const lines[] = {
		"* commands (case-insensitive):",
		"*   /nick NAME         change your nick (1-24 letters, digits, _ or -)",
		"*   /join ROOM         go to another room (created if need be)",
		"*   /part              go back to the default room",
		"*   /rooms             list the rooms",
		"*   /who               list the members of your room",
		"*   /msg NICK TEXT     private message",
		"*   /me TEXT           action",
		"*   /topic [TEXT]      show or set the room's topic",
		"*   /quit [REASON]     leave",
		"*   /help              this list",
		"* any other line goes to your room; start it with // to send a leading /",
	};

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		chat_send(u, "%s", lines[i]);
}

static void
chat_cmd_quit(struct chat_user *u, const char *reason)
{
	chat_send(u, "* bye");
	chat_depart(u, reason);
	client_finish(u->client, CLOSE_QUIT, reason[0] != '\0' ? reason : NULL);
}

/* A room message or action: to the others in the room, and into its history. */
static void
chat_say(struct chat_user *u, bool action, const char *text)
{
	size_t n = action ? chat_format("* %s %s", u->nick, text)
	                  : chat_format("<%s> %s", u->nick, text);

	chat_broadcast(u->room, u, chat.scratch, n);
	chat_history_add(u->room, chat.scratch, n);
	cluster_publish(action ? WIRE_ME : WIRE_MSG, u->nick, NULL, u->room->name, text);
}

/* Clean one input line and act on it. */
static void
chat_handle_line(struct chat_user *u, const unsigned char *raw, size_t len)
{
	struct command cmd;
	size_t n;

	scratch_reserve(&chat.clean, &chat.clean_len, LINE_CLEAN_MAX(len) + 1);
	n = line_clean(raw, len, chat.clean);
	chat.clean[n] = '\0';
	if (n == 0)
		return;
	command_parse(chat.clean, &cmd);
	switch (cmd.type) {
	case CMD_MESSAGE:
		/* a line of blanks is as empty as an empty line */
		if (cmd.text[strspn(cmd.text, " \t")] != '\0')
			chat_say(u, false, cmd.text);
		break;
	case CMD_ME:
		chat_say(u, true, cmd.text);
		break;
	case CMD_NICK:
		chat_cmd_nick(u, cmd.word);
		break;
	case CMD_JOIN:
		chat_cmd_join(u, cmd.word);
		break;
	case CMD_PART:
		if (strcasecmp(u->room->name, chat_settings_of(u)->default_room) == 0)
			chat_send(u, "! you are in %s, the default room, already", u->room->name);
		else
			chat_cmd_join(u, chat_settings_of(u)->default_room);
		break;
	case CMD_ROOMS:
		chat_cmd_rooms(u);
		break;
	case CMD_WHO:
		chat_send_members(u, u->room);
		break;
	case CMD_MSG:
		chat_cmd_msg(u, cmd.word, cmd.text);
		break;
	case CMD_TOPIC:
		chat_cmd_topic(u, cmd.text);
		break;
	case CMD_QUIT:
		chat_cmd_quit(u, cmd.text);
		break;
	case CMD_HELP:
		chat_cmd_help(u);
		break;
	case CMD_UNKNOWN:
		chat_send(u, "! unknown command: /%s (type /help for the commands)", cmd.word);
		break;
	case CMD_INVALID:
		chat_send(u, "! %s", cmd.error);
		break;
	}
}

/* Refuse a telnet option the peer offers or asks for, once per option. */
static void
chat_refuse_option(struct chat_user *u, uint8_t command, uint8_t option)
{
	int which = command == TELNET_DO ? 0 : 1;
	unsigned char reply[3] = {TELNET_IAC, command == TELNET_DO ? TELNET_WONT : TELNET_DONT,
	                          option};

	if (u->telnet_answered[which][option / 8] & (1u << (option % 8)))
		return;
	u->telnet_answered[which][option / 8] |= (uint8_t)(1u << (option % 8));
	chat_send_raw(u, (const char *)reply, sizeof(reply), 0);
}

static void chat_on_rate_timer(evutil_socket_t, short, void *);

/* Stop reading from a flooding client until its bucket has a token again. */
static void
chat_throttle(struct chat_user *u)
{
	struct timeval tv;
	uint64_t ms = bucket_wait_ms(&u->bucket, chat_settings_of(u)->rate);

	if (u->rate_timer == NULL) {
		u->rate_timer = evtimer_new(u->client->server->base, chat_on_rate_timer, u);
		if (u->rate_timer == NULL)
			fatal("evtimer_new");
	}
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	client_pause_reading(u->client, PAUSE_RATE);
	evtimer_add(u->rate_timer, &tv);
}

/* Turn buffered input into lines, as fast as the client's rate allows. */
static void
chat_process_input(struct chat_user *u)
{
	struct client *c = u->client;
	struct evbuffer *in = client_input(c);
	const struct chat_settings *cs = chat_settings_of(u);

	while (!(c->flags & (CLIENT_CLOSED | CLIENT_FINISHING)) && evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec vec;
		struct line_event ev;
		size_t used;

		if (u->pending_nick[0] != '\0') {
			/* the lines after a /nick are the new nick's: they wait for the claim */
			client_pause_reading(c, PAUSE_CLUSTER);
			break;
		}
		if (!bucket_ready(&u->bucket, cs->rate, cs->burst, now_ms())) {
			chat_throttle(u);
			break;
		}
		if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
			break;
		used = line_reader_push(&u->reader, vec.iov_base, vec.iov_len, &ev);
		evbuffer_drain(in, used);
		switch (ev.type) {
		case LINE_COMPLETE:
			metrics.chat_lines_received++;
			bucket_spend(&u->bucket, cs->rate);
			chat_handle_line(u, ev.data, ev.len);
			break;
		case LINE_TOO_LONG:
			chat_send(u, "! line too long (at most %zu bytes): discarded", u->reader.max_line);
			break;
		case LINE_TELNET:
			chat_refuse_option(u, ev.telnet_command, ev.telnet_option);
			break;
		case LINE_NONE:
			break;
		}
	}
}

static void
chat_on_rate_timer(evutil_socket_t fd, short what, void *arg)
{
	struct chat_user *u = arg;

	client_resume_reading(u->client, PAUSE_RATE);
	chat_process_input(u);
	chat_flush();
}

static void
chat_on_read(struct client *c)
{
	struct chat_user *u = c->service_data;

	if (u->client->paused & (PAUSE_RATE | PAUSE_CLUSTER))
		return;
	chat_process_input(u);
	chat_flush();
}

/* The peer sent FIN: a last line without its ending still counts. */
static void
chat_on_eof(struct client *c)
{
	struct chat_user *u = c->service_data;
	struct line_event ev;

	if (line_reader_finish(&u->reader, &ev))
		chat_handle_line(u, ev.data, ev.len);
	client_finish(c, CLOSE_PEER, NULL);
	chat_flush();
}

/* Send the motd, one notice per line ("\n" in the motd key, or the motd_file's lines). */
static void
chat_send_motd(struct chat_user *u)
{
	const struct chat_settings *cs = chat_settings_of(u);
	const char *text = cs->motd_loaded != NULL ? cs->motd_loaded : cs->motd;
	const char *sep = cs->motd_loaded != NULL ? "\n" : "\\n";
	const char *p = text;

	while (*p != '\0') {
		const char *end = strstr(p, sep);
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p), n;

		if (len > 0 && p[len - 1] == '\r')
			len--;
		scratch_reserve(&chat.clean, &chat.clean_len, LINE_CLEAN_MAX(len) + 1);
		n = line_clean((const unsigned char *)p, len, chat.clean);
		chat.clean[n] = '\0';
		chat_send(u, "* %s", chat.clean);
		if (end == NULL)
			break;
		p = end + strlen(sep);
	}
}

/* A new client: welcome, motd, its guest nick, and the default room. */
static void
chat_on_connect(struct client *c)
{
	const struct chat_settings *cs = &c->server->config->chat_settings;
	struct chat_user *u = calloc(1, sizeof(*u));

	chat_init();
	if (u == NULL || line_reader_init(&u->reader, cs->max_line) == -1) {
		free(u);
		client_close(c, CLOSE_ERROR, "out of memory");
		return;
	}
	u->client = c;
	c->service_data = u;
	bucket_init(&u->bucket, cs->burst, now_ms());
	chat_pick_guest_nick(u, u->nick, sizeof(u->nick));
	TAILQ_INSERT_TAIL(&chat.users, u, all_entry);
	chat.user_count++;
	chat_send(u, "* welcome to echochatd %s, %u user%s online", PACKAGE_VERSION,
	          chat.user_count, chat.user_count == 1 ? "" : "s");
	chat_send_motd(u);
	chat_send(u, "* you are %s; type /help for the commands", u->nick);
	chat_join(u, cs->default_room);
	(void)cluster_claim_nick(c->id, u->nick); /* a guest nick is claimed like any */
	chat_flush();
}

/* The client is about to be closed gracefully: tell it why, and the room. */
static void
chat_on_finish(struct client *c)
{
	struct chat_user *u = c->service_data;

	if (u == NULL)
		return;
	switch (c->reason) {
	case CLOSE_SHUTDOWN:
		chat_send(u, "* server shutting down");
		break;
	case CLOSE_IDLE:
		chat_send(u, "! idle timeout: closing");
		chat_depart(u, "idle timeout");
		break;
	case CLOSE_PEER:
		chat_depart(u, NULL);
		break;
	case CLOSE_QUIT:
	case CLOSE_ERROR:
	case CLOSE_SLOW_CONSUMER:
	case CLOSE_SHUTDOWN_TIMEOUT:
		chat_depart(u, client_reason_name(c->reason));
		break;
	}
	chat_flush();
}

/* Unlink u from the list of pending drops, if it is there. */
static void
chat_forget_drop(struct chat_user *u)
{
	struct chat_user **p;

	for (p = &chat.drops; *p != NULL; p = &(*p)->next_drop)
		if (*p == u) {
			*p = u->next_drop;
			break;
		}
}

/* The client is gone: the room hears it quit; free the user. */
static void
chat_on_close(struct client *c)
{
	struct chat_user *u = c->service_data;
	char reason[96];

	if (u == NULL)
		return;
	switch (c->reason) {
	case CLOSE_PEER:
		chat_depart(u, NULL);
		break;
	case CLOSE_ERROR:
		/* as in the log: "connection reset by peer" */
		snprintf(reason, sizeof(reason), "%s", c->reason_detail);
		reason[0] = (char)tolower((unsigned char)reason[0]);
		chat_depart(u, reason);
		break;
	default:
		chat_depart(u, client_reason_name(c->reason));
		break;
	}
	if (u->dropping)
		chat_forget_drop(u);
	if (u->rate_timer != NULL)
		event_free(u->rate_timer);
	line_reader_free(&u->reader);
	TAILQ_REMOVE(&chat.users, u, all_entry);
	chat.user_count--;
	c->service_data = NULL;
	free(u);
	chat_flush();
	if (chat.user_count == 0) {
		/* Nobody left: give back the batch block and the scratch space. */
		if (chat.block != NULL)
			chat_block_release(NULL, 0, chat.block);
		chat.block = NULL;
		chat.pending_start = 0;
		free(chat.scratch);
		free(chat.clean);
		chat.scratch = chat.clean = NULL;
		chat.scratch_len = chat.clean_len = 0;
	}
}

/* How many users are in a room now. */
unsigned
chat_member_count(void)
{
	const struct chat_room *room;
	unsigned n = 0;

	if (!chat.initialised)
		return 0;
	TAILQ_FOREACH(room, &chat.rooms, entry)
		n += room->member_count;
	return n;
}

/* The nick and room of a chat client, for /clients; false if it has none. */
bool
chat_client_info(const struct client *c, const char **nick, const char **room)
{
	const struct chat_user *u = c->service_data;

	if (u == NULL)
		return false;
	*nick = u->nick;
	*room = u->room != NULL ? u->room->name : NULL;
	return true;
}

/* How many rooms exist now. */
unsigned
chat_room_count(void)
{
	return chat.room_count;
}

/* ---- what other nodes of the cluster did (src/cluster.c calls these) ---- */

/* Find the user of a client id, or NULL once it has gone. */
static struct chat_user *
chat_find_client(uint64_t client_id)
{
	struct chat_user *u;

	TAILQ_FOREACH(u, &chat.users, all_entry)
		if (!u->departed && u->client->id == client_id)
			return u;
	return NULL;
}

/* Show a remote event to the local members of its room (m NULL: just deliver). */
void
chat_cluster_event(const struct wire_msg *m)
{
	struct chat_room *room;
	struct chat_user *to;
	size_t n;

	chat_init();
	if (m == NULL) {
		chat_flush();
		return;
	}
	if (m->type == WIRE_PM) {
		if ((to = chat_find_user(m->other)) != NULL)
			chat_send(to, "*%s* %.*s", m->nick, (int)m->text_len, m->text);
		return;
	}
	if ((room = chat_find_room(m->room)) == NULL)
		return;
	switch (m->type) {
	case WIRE_MSG:
	case WIRE_ME:
		n = m->type == WIRE_ME ? chat_format("* %s %.*s", m->nick, (int)m->text_len, m->text)
		                       : chat_format("<%s> %.*s", m->nick, (int)m->text_len, m->text);
		chat_broadcast(room, NULL, chat.scratch, n);
		chat_history_add(room, chat.scratch, n);
		return;
	case WIRE_TOPIC:
		free(room->topic);
		if ((room->topic = strndup(m->text, m->text_len)) == NULL)
			fatal("strndup");
		n = chat_format("* %s set the topic of %s: %s", m->nick, room->name, room->topic);
		break;
	case WIRE_JOIN:
		n = chat_format("* %s has joined %s", m->nick, room->name);
		break;
	case WIRE_PART:
		n = chat_format("* %s has left %s", m->nick, room->name);
		break;
	case WIRE_QUIT:
		n = m->text_len > 0 ? chat_format("* %s has quit (%.*s)", m->nick, (int)m->text_len,
		                                  m->text)
		                    : chat_format("* %s has quit", m->nick);
		break;
	case WIRE_NICK:
		n = chat_format("* %s is now known as %s", m->nick, m->other);
		break;
	case WIRE_PM:
	case WIRE_BYE:
	case WIRE_HB:
	default:
		return;
	}
	chat_broadcast(room, NULL, chat.scratch, n);
}

/* A user of another node is gone with its node: its room here hears it quit. */
void
chat_cluster_quit(const char *nick, const char *room_name, const char *reason)
{
	struct chat_room *room;
	size_t n;

	chat_init();
	if ((room = chat_find_room(room_name)) == NULL)
		return;
	n = chat_format("* %s has quit (%s)", nick, reason);
	chat_broadcast(room, NULL, chat.scratch, n);
}

/* The shared history of a room just opened here, oldest first: for its newcomers. */
void
chat_cluster_replay(const char *room_name, const struct wire_msg *m)
{
	struct chat_room *room;
	size_t n;

	chat_init();
	if ((room = chat_find_room(room_name)) == NULL)
		return;
	n = m->type == WIRE_ME ? chat_format("* %s %.*s", m->nick, (int)m->text_len, m->text)
	                       : chat_format("<%s> %.*s", m->nick, (int)m->text_len, m->text);
	chat_broadcast(room, NULL, chat.scratch, n);
	chat_history_add(room, chat.scratch, n);
	chat_flush();
}

/* Rename u to a fresh guest nick: its own was claimed on another node meanwhile. */
static void
chat_fall_back_to_guest(struct chat_user *u)
{
	char guest[NICK_MAX + 1];

	chat_send(u, "! the nick %s is in use on another server of the cluster", u->nick);
	chat_pick_guest_nick(u, guest, sizeof(guest));
	chat_apply_nick(u, guest);
	(void)cluster_claim_nick(u->client->id, u->nick);
}

/* The cluster's answer to a nick claim made for a client. */
void
chat_cluster_nick_result(uint64_t client_id, const char *nick, bool ok)
{
	struct chat_user *u;

	chat_init();
	u = chat_find_client(client_id);
	if (u == NULL) {
		if (ok)
			cluster_release_nick(nick); /* the client left meanwhile */
		return;
	}
	if (strcmp(u->pending_nick, nick) == 0) {
		/* a /nick: apply it unless someone here took it while the claim was out */
		u->pending_nick[0] = '\0';
		if (ok && chat_find_user(nick) == NULL)
			chat_apply_nick(u, nick);
		else {
			if (ok)
				cluster_release_nick(nick);
			chat_send(u, "! the nick %s is taken", nick);
		}
		/* then the lines that came after the /nick */
		client_resume_reading(u->client, PAUSE_CLUSTER);
		if (!(u->client->paused & PAUSE_RATE))
			chat_process_input(u);
	} else if (strcasecmp(u->nick, nick) == 0) {
		/* the claim of a guest nick, or of a nick taken while Redis was away */
		if (!ok)
			chat_fall_back_to_guest(u);
	} else if (ok)
		cluster_release_nick(nick); /* an answer that came too late to matter */
	chat_flush();
}

/* Every user here, with its room: for the heartbeat's roster and nick claims. */
void
chat_each_user(void (*fn)(uint64_t client_id, const char *nick, const char *room, void *arg),
               void *arg)
{
	struct chat_user *u, *next;

	chat_init();
	TAILQ_FOREACH_SAFE(u, &chat.users, all_entry, next)
		if (!u->departed)
			fn(u->client->id, u->nick, u->room != NULL ? u->room->name : NULL, arg);
}

/* Every room here that has a topic. */
void
chat_each_topic(void (*fn)(const char *room, const char *topic, void *arg), void *arg)
{
	struct chat_room *room;

	chat_init();
	TAILQ_FOREACH(room, &chat.rooms, entry)
		if (room->topic != NULL)
			fn(room->name, room->topic, arg);
}

/* Chat output is bounded by max_output per receiver, not by pausing the sender. */
const struct service chat_service = {
	.name = "chat",
	.id = SERVICE_CHAT,
	.socket_sndbuf = CHAT_SOCKET_SNDBUF,
	.refusal_line = "! too many connections from your address\r\n",
	.on_connect = chat_on_connect,
	.on_read = chat_on_read,
	.on_eof = chat_on_eof,
	.on_finish = chat_on_finish,
	.on_close = chat_on_close,
};
