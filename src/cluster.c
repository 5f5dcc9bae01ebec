/*
 * cluster.c - chat across echochatd instances through Redis pub/sub.
 *
 * Redis is the engine; this module only speaks to it, asynchronously, through hiredis
 * and its libevent adapter on the daemon's own loop. Two connections: "cmd" for
 * commands and publications, "sub" for SUBSCRIBE (a subscribed connection takes
 * nothing else). hiredis 0.14 has no timeouts, so connects and heartbeats are timed by
 * our own timers. See doc/cluster.md for the channels, keys, wire format and guarantees.
 */
#include "cluster.h"

#ifdef HAVE_HIREDIS

#include <arpa/inet.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"
#include "client.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "server.h"

/* Reconnect backoff: from 250 ms, doubling, at most 10 s. */
#define BACKOFF_FIRST_MS 250
#define BACKOFF_MAX_MS 10000
/* A connect that has not completed in this long has failed. */
#define CONNECT_TIMEOUT_S 5
/* The outage queue: at most this many publications, and this many bytes. */
#define QUEUE_MAX_ITEMS 10000
#define QUEUE_MAX_BYTES ((size_t)8 * 1024 * 1024)
/* Warnings about the link or the queue: at most one per this many seconds. */
#define WARN_INTERVAL_MS 30000
/* A room's stream keeps at least this many entries, for catching up after an outage. */
#define STREAM_MIN_LEN 1000
/* Entries read per catch-up: a longer outage than this loses the older ones. */
#define CATCHUP_MAX 1000u
#define KEY_MAX (CLUSTER_NAME_MAX * 2 + ROOM_MAX + 16)
/* The most arguments of a queued command (EVAL of say_script). */
#define QUEUE_MAX_ARGS 9

/* Publish a room message into its capped stream and its channel, as one step, so every
 * node sees it with its stream id (and can later read what it missed after that id). */
static const char say_script[] =
	"local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[2]) "
	"redis.call('PUBLISH', KEYS[2], ARGV[3] .. id .. ARGV[4]) "
	"return id";
/* Take a nick if it is free, ours, or held by a node whose presence has expired. */
static const char claim_script[] =
	"local owner = redis.call('GET', KEYS[1]) "
	"if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. owner) == 1 then "
	"return 0 end "
	"redis.call('SET', KEYS[1], ARGV[1]) return 1";
/* Give a nick back, only if it is still ours. */
static const char release_script[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1";

struct remote_user {
	TAILQ_ENTRY(remote_user) entry;
	char nick[NICK_MAX + 1];
	char room[ROOM_MAX + 2];
};

/* Another node, as its heartbeats and events describe it. */
struct remote_node {
	TAILQ_ENTRY(remote_node) entry;
	char id[CLUSTER_NAME_MAX + 1];
	unsigned long long epoch;
	uint64_t last_seen_ms;
	TAILQ_HEAD(, remote_user) users;
};

struct remote_topic {
	TAILQ_ENTRY(remote_topic) entry;
	char room[ROOM_MAX + 2];
	char *text;
};

/* A payload that arrived while its room was catching up from the stream. */
struct held_message {
	STAILQ_ENTRY(held_message) entry;
	size_t len;
	char payload[];
};

/* A room with local members: its channel is subscribed. */
struct cluster_room {
	TAILQ_ENTRY(cluster_room) entry;
	char name[ROOM_MAX + 2];
	char last_id[WIRE_ID_MAX + 1]; /* the newest stream entry delivered here, or "" */
	bool catching_up;              /* a stream read is in flight: live messages wait */
	unsigned own_unread;           /* our messages to it since it opened, before the first read */
	STAILQ_HEAD(, held_message) held;
};

/* A publication waiting for Redis to come back. */
struct queued_command {
	STAILQ_ENTRY(queued_command) entry;
	int argc;
	size_t bytes;
	char *argv[QUEUE_MAX_ARGS];
	size_t argvlen[QUEUE_MAX_ARGS];
};

static struct {
	bool active;
	struct server *server;
	struct event_base *base;
	char node[CLUSTER_NAME_MAX + 1];
	char prefix[CLUSTER_NAME_MAX + 1];
	char redis[256];
	char host[256];
	int port;
	bool unix_socket;
	unsigned heartbeat;
	unsigned long long epoch;
	unsigned history;
	redisAsyncContext *cmd, *sub;
	bool cmd_up, sub_up;
	bool linked;   /* both connections up and subscribed: publish directly */
	bool freeing;  /* we are freeing a context: its disconnect callback is ours */
	bool hb_pending;
	unsigned backoff_ms;
	struct event *retry_timer, *connect_timer, *heartbeat_timer;
	struct event *flush_event; /* delivers what a batch of Redis replies queued */
	struct evdns_base *dns;
	struct evdns_getaddrinfo_request *dns_request;
	uint64_t last_warning_ms;
	unsigned long warnings_suppressed;
	uint64_t last_queue_warning_ms;
	unsigned long queue_drops_unlogged;
	TAILQ_HEAD(, remote_node) nodes;
	TAILQ_HEAD(, remote_topic) topics;
	TAILQ_HEAD(, cluster_room) rooms;
	STAILQ_HEAD(, queued_command) queue;
	size_t queue_items, queue_bytes;
} cl;

static void cluster_connect(void);
static void cluster_link_lost(const char *why);

/* Milliseconds on the monotonic clock. */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* "PREFIXkindNAME", with NAME lowercased: rooms and nicks are case-insensitive. */
static size_t
cluster_key(char *out, size_t len, const char *kind, const char *name)
{
	int n = snprintf(out, len, "%s%s", cl.prefix, kind);
	size_t at = n > 0 && (size_t)n < len ? (size_t)n : 0;

	for (const char *p = name; *p != '\0' && at + 1 < len; p++)
		out[at++] = (char)tolower((unsigned char)*p);
	out[at] = '\0';
	return at;
}

bool
cluster_active(void)
{
	return cl.active;
}

/*
 * Where this node's guest numbers start: every node counting from guest1 would make the
 * first guests of each node collide (the claim would then rename them). A hash of the
 * node id spreads the nodes a thousand apart; a collision is still caught by the claim.
 */
unsigned long
cluster_guest_base(void)
{
	uint32_t hash = 2166136261u; /* FNV-1a */

	if (!cl.active)
		return 0;
	for (const char *p = cl.node; *p != '\0'; p++)
		hash = (hash ^ (unsigned char)*p) * 16777619u;
	return (unsigned long)(hash % 900 + 100) * 1000;
}

/* ---- the remote roster ---- */

static struct remote_node *
node_find(const char *id)
{
	struct remote_node *n;

	TAILQ_FOREACH(n, &cl.nodes, entry)
		if (strcmp(n->id, id) == 0)
			return n;
	return NULL;
}

/* The node called id, created on first sight; its presence is renewed. */
static struct remote_node *
node_touch(const char *id)
{
	struct remote_node *n = node_find(id);

	if (n == NULL) {
		if ((n = calloc(1, sizeof(*n))) == NULL)
			fatal("calloc");
		snprintf(n->id, sizeof(n->id), "%s", id);
		TAILQ_INIT(&n->users);
		TAILQ_INSERT_TAIL(&cl.nodes, n, entry);
		metrics.cluster_nodes++;
		log_info("cluster: node %s seen", id);
	}
	n->last_seen_ms = now_ms();
	return n;
}

static struct remote_user *
node_user(struct remote_node *n, const char *nick)
{
	struct remote_user *u;

	TAILQ_FOREACH(u, &n->users, entry)
		if (strcasecmp(u->nick, nick) == 0)
			return u;
	return NULL;
}

/* Put nick in room on node n (adding the user if new). */
static void
node_set_user(struct remote_node *n, const char *nick, const char *room)
{
	struct remote_user *u = node_user(n, nick);

	if (u == NULL) {
		if ((u = calloc(1, sizeof(*u))) == NULL)
			fatal("calloc");
		snprintf(u->nick, sizeof(u->nick), "%s", nick);
		TAILQ_INSERT_TAIL(&n->users, u, entry);
	}
	snprintf(u->room, sizeof(u->room), "%s", room);
}

static void
node_remove_user(struct remote_node *n, struct remote_user *u)
{
	TAILQ_REMOVE(&n->users, u, entry);
	free(u);
}

/* Forget every user of n; with a reason, the local members of their rooms see them quit. */
static void
node_clear_users(struct remote_node *n, const char *reason)
{
	struct remote_user *u, *next;

	/* freed in a FOREACH_SAFE, then the head reset: clang's analyzer misreads the
	 * while (TAILQ_FIRST) { TAILQ_REMOVE; free } idiom as a use after free */
	TAILQ_FOREACH_SAFE(u, &n->users, entry, next) {
		if (reason != NULL)
			chat_cluster_quit(u->nick, u->room, reason);
		free(u);
	}
	TAILQ_INIT(&n->users);
}

/* A node is gone (expired, or said bye): its users quit everywhere here. */
static void
node_lost(struct remote_node *n, const char *reason)
{
	log_notice("cluster: node %s is gone (%s)", n->id, reason);
	node_clear_users(n, reason);
	TAILQ_REMOVE(&cl.nodes, n, entry);
	metrics.cluster_nodes--;
	free(n);
}

/* Remember (or forget, with text NULL) the topic of a room held elsewhere. */
static void
topic_set(const char *room, const char *text, size_t len)
{
	struct remote_topic *t;

	TAILQ_FOREACH(t, &cl.topics, entry)
		if (strcasecmp(t->room, room) == 0)
			break;
	if (t == NULL) {
		if ((t = calloc(1, sizeof(*t))) == NULL)
			fatal("calloc");
		snprintf(t->room, sizeof(t->room), "%s", room);
		TAILQ_INSERT_TAIL(&cl.topics, t, entry);
	}
	free(t->text);
	if ((t->text = strndup(text, len)) == NULL)
		fatal("strndup");
}

const char *
cluster_remote_topic(const char *room)
{
	struct remote_topic *t;

	if (!cl.active)
		return NULL;
	TAILQ_FOREACH(t, &cl.topics, entry)
		if (strcasecmp(t->room, room) == 0)
			return t->text;
	return NULL;
}

/* A heartbeat: the node's whole roster replaces what was known of it. */
static void
node_heartbeat(const struct wire_msg *m)
{
	struct remote_node *n = node_find(m->node);
	const char *p = m->text, *end = m->text + m->text_len;
	struct wire_roster_entry e;

	if (n != NULL && n->epoch != 0 && n->epoch != m->epoch)
		node_clear_users(n, "node restarted"); /* its old users are gone */
	n = node_touch(m->node);
	n->epoch = m->epoch;
	node_clear_users(n, NULL);
	while (wire_roster_next(&p, end, &e)) {
		if (e.is_topic)
			topic_set(e.room, e.topic, e.topic_len);
		else
			node_set_user(n, e.nick, e.room);
	}
}

bool
cluster_nick_remote(const char *nick)
{
	struct remote_node *n;

	if (!cl.active)
		return false;
	TAILQ_FOREACH(n, &cl.nodes, entry)
		if (node_user(n, nick) != NULL)
			return true;
	return false;
}

unsigned
cluster_remote_count(const char *room)
{
	struct remote_node *n;
	struct remote_user *u;
	unsigned count = 0;

	if (!cl.active)
		return 0;
	TAILQ_FOREACH(n, &cl.nodes, entry)
		TAILQ_FOREACH(u, &n->users, entry)
			count += strcasecmp(u->room, room) == 0;
	return count;
}

void
cluster_each_remote_member(const char *room, void (*fn)(const char *nick, void *arg), void *arg)
{
	struct remote_node *n;
	struct remote_user *u;

	if (!cl.active)
		return;
	TAILQ_FOREACH(n, &cl.nodes, entry)
		TAILQ_FOREACH(u, &n->users, entry)
			if (strcasecmp(u->room, room) == 0)
				fn(u->nick, arg);
}

/* Every room held on other nodes, once each, with its remote member count. */
void
cluster_each_remote_room(void (*fn)(const char *room, unsigned count, const char *topic,
                                    void *arg),
                         void *arg)
{
	struct remote_node *n, *earlier;
	struct remote_user *u, *v;

	if (!cl.active)
		return;
	TAILQ_FOREACH(n, &cl.nodes, entry)
		TAILQ_FOREACH(u, &n->users, entry) {
			bool seen = false;
			/* report a room at its first member only: quadratic, but rosters are small
			 * next to the cost of the /rooms output itself */
			TAILQ_FOREACH(earlier, &cl.nodes, entry) {
				TAILQ_FOREACH(v, &earlier->users, entry) {
					if (v == u)
						break;
					if (strcasecmp(v->room, u->room) == 0) {
						seen = true;
						break;
					}
				}
				if (seen || v == u)
					break;
			}
			if (!seen)
				fn(u->room, cluster_remote_count(u->room), cluster_remote_topic(u->room),
				   arg);
		}
}

/* ---- rooms and their streams ---- */

static struct cluster_room *
room_find(const char *name)
{
	struct cluster_room *r;

	TAILQ_FOREACH(r, &cl.rooms, entry)
		if (strcasecmp(r->name, name) == 0)
			return r;
	return NULL;
}

static void
room_drop_held(struct cluster_room *r)
{
	struct held_message *h;

	while ((h = STAILQ_FIRST(&r->held)) != NULL) {
		STAILQ_REMOVE_HEAD(&r->held, entry);
		free(h);
	}
}

/* Compare two stream ids "MS-SEQ" numerically; "" is older than any. */
static int
id_compare(const char *a, const char *b)
{
	unsigned long long ams, aseq, bms, bseq;
	char *end;

	if (a[0] == '\0' || b[0] == '\0')
		return (a[0] != '\0') - (b[0] != '\0');
	/* both were checked by wire_id_valid (or are "0-0") */
	ams = strtoull(a, &end, 10);
	aseq = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
	bms = strtoull(b, &end, 10);
	bseq = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
	if (ams != bms)
		return ams < bms ? -1 : 1;
	return aseq < bseq ? -1 : aseq > bseq;
}

/* ---- talking to Redis ---- */

/* Send a command on the cmd connection; false when it cannot be sent now. */
static bool
command_send(redisCallbackFn *fn, void *privdata, int argc, const char **argv,
             const size_t *argvlen)
{
	if (cl.cmd == NULL || !cl.cmd_up)
		return false;
	if (redisAsyncCommandArgv(cl.cmd, fn, privdata, argc, argv, argvlen) != REDIS_OK)
		return false;
	metrics.cluster_published++;
	return true;
}

/* Warn that the queue overflowed, at most once per WARN_INTERVAL_MS. */
static void
queue_warn_drop(void)
{
	uint64_t now = now_ms();

	metrics.cluster_queue_dropped++;
	cl.queue_drops_unlogged++;
	if (now - cl.last_queue_warning_ms < WARN_INTERVAL_MS && cl.last_queue_warning_ms != 0)
		return;
	cl.last_queue_warning_ms = now;
	log_warnx("cluster: redis unreachable and the outage queue is full (%u messages or %zu "
	          "bytes): %lu publication%s dropped",
	          QUEUE_MAX_ITEMS, QUEUE_MAX_BYTES, cl.queue_drops_unlogged,
	          cl.queue_drops_unlogged == 1 ? "" : "s");
	cl.queue_drops_unlogged = 0;
}

/* Keep a publication for when Redis is back; the oldest are kept, the overflow counted. */
static void
queue_add(int argc, const char **argv, const size_t *argvlen)
{
	struct queued_command *q;
	size_t bytes = 0;

	for (int i = 0; i < argc; i++)
		bytes += argvlen[i];
	if (cl.queue_items >= QUEUE_MAX_ITEMS || cl.queue_bytes + bytes > QUEUE_MAX_BYTES) {
		queue_warn_drop();
		return;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL)
		fatal("calloc");
	q->argc = argc;
	q->bytes = bytes;
	for (int i = 0; i < argc; i++) {
		if ((q->argv[i] = malloc(argvlen[i] + 1)) == NULL)
			fatal("malloc");
		memcpy(q->argv[i], argv[i], argvlen[i]);
		q->argv[i][argvlen[i]] = '\0';
		q->argvlen[i] = argvlen[i];
	}
	STAILQ_INSERT_TAIL(&cl.queue, q, entry);
	cl.queue_items++;
	cl.queue_bytes += bytes;
	metrics.cluster_queue_length = cl.queue_items;
}

static void
queued_free(struct queued_command *q)
{
	for (int i = 0; i < q->argc; i++)
		free(q->argv[i]);
	free(q);
}

/* Send now, or queue while Redis is away: publications are never dropped silently. */
static void
command_send_or_queue(int argc, const char **argv, const size_t *argvlen)
{
	if (!cl.linked || !command_send(NULL, NULL, argc, argv, argvlen))
		queue_add(argc, argv, argvlen);
}

/* Publish what waited for Redis, in order. */
static void
queue_flush(void)
{
	struct queued_command *q;
	size_t sent = 0;

	while ((q = STAILQ_FIRST(&cl.queue)) != NULL) {
		if (!command_send(NULL, NULL, q->argc, (const char **)q->argv, q->argvlen))
			break;
		STAILQ_REMOVE_HEAD(&cl.queue, entry);
		cl.queue_items--;
		cl.queue_bytes -= q->bytes;
		queued_free(q);
		sent++;
	}
	metrics.cluster_queue_length = cl.queue_items;
	if (sent > 0)
		log_notice("cluster: published %zu message%s queued during the outage", sent,
		           sent == 1 ? "" : "s");
}

/* Publish a payload on PREFIXkindNAME (queued while Redis is away). */
static void
publish(const char *kind, const char *name, const char *payload, size_t len)
{
	char channel[KEY_MAX];
	const char *argv[3] = {"PUBLISH", channel, payload};
	size_t argvlen[3] = {7, 0, len};

	argvlen[1] = cluster_key(channel, sizeof(channel), kind, name);
	command_send_or_queue(3, argv, argvlen);
}

/* A room message or action: into the room's stream and onto its channel, in one step. */
static void
publish_say(const struct wire_msg *m)
{
	char stream[KEY_MAX], channel[KEY_MAX], maxlen[16], *payload;
	struct cluster_room *room;
	unsigned cap = cl.history > STREAM_MIN_LEN ? cl.history : STREAM_MIN_LEN;
	size_t len, id_at;
	const char *argv[QUEUE_MAX_ARGS];
	size_t argvlen[QUEUE_MAX_ARGS];

	/* the stream keeps the payload with "-" for the id; the channel gets the id the
	 * stream gave it, spliced in by the script between the two halves around the "-" */
	room = room_find(m->room);
	if (room != NULL && room->last_id[0] == '\0' && !room->catching_up)
		room->own_unread++; /* the first read will see it: it is not history to replay */
	payload = wire_encode(m, &len);
	id_at = 2 + strlen(wire_type_name(m->type)) + 1 + strlen(m->node) + 1;
	snprintf(maxlen, sizeof(maxlen), "%u", cap);
	argv[0] = "EVAL";
	argvlen[0] = 4;
	argv[1] = say_script;
	argvlen[1] = sizeof(say_script) - 1;
	argv[2] = "2";
	argvlen[2] = 1;
	argv[3] = stream;
	argvlen[3] = cluster_key(stream, sizeof(stream), "history:", m->room);
	argv[4] = channel;
	argvlen[4] = cluster_key(channel, sizeof(channel), "room:", m->room);
	argv[5] = maxlen;
	argvlen[5] = strlen(maxlen);
	argv[6] = payload;
	argvlen[6] = len;
	argv[7] = payload;
	argvlen[7] = id_at;
	argv[8] = payload + id_at + 1;
	argvlen[8] = len - id_at - 1;
	command_send_or_queue(9, argv, argvlen);
	free(payload);
}

/* What a local user did, for the other nodes. */
void
cluster_publish(enum wire_type type, const char *nick, const char *other, const char *room,
                const char *text)
{
	struct wire_msg m;
	char *payload;
	size_t len;

	if (!cl.active)
		return;
	memset(&m, 0, sizeof(m));
	m.type = type;
	snprintf(m.node, sizeof(m.node), "%s", cl.node);
	snprintf(m.nick, sizeof(m.nick), "%s", nick != NULL ? nick : "");
	snprintf(m.other, sizeof(m.other), "%s", other != NULL ? other : "");
	snprintf(m.room, sizeof(m.room), "%s", room != NULL ? room : "");
	m.text = text != NULL ? text : "";
	m.text_len = strlen(m.text);
	if (type == WIRE_MSG || type == WIRE_ME) {
		publish_say(&m);
		return;
	}
	payload = wire_encode(&m, &len);
	if (type == WIRE_TOPIC)
		publish("room:", room, payload, len);
	else
		publish("ctl", "", payload, len);
	free(payload);
}

/* A private message for a user of another node; false when nobody has that nick. */
bool
cluster_send_pm(const char *from, const char *to, const char *text)
{
	struct remote_node *n;
	struct wire_msg m;
	char *payload;
	size_t len;

	if (!cl.active || !cl.linked)
		return false; /* private messages are not queued: see doc/cluster.md */
	TAILQ_FOREACH(n, &cl.nodes, entry)
		if (node_user(n, to) != NULL)
			break;
	if (n == NULL)
		return false;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_PM;
	snprintf(m.node, sizeof(m.node), "%s", cl.node);
	snprintf(m.nick, sizeof(m.nick), "%s", from);
	snprintf(m.other, sizeof(m.other), "%s", to);
	m.text = text;
	m.text_len = strlen(text);
	payload = wire_encode(&m, &len);
	publish("node:", n->id, payload, len);
	free(payload);
	return true;
}

struct nick_claim {
	uint64_t client_id;
	char nick[NICK_MAX + 1];
};

static void
on_claim_reply(redisAsyncContext *ac, void *r, void *privdata)
{
	redisReply *reply = r;
	struct nick_claim *claim = privdata;
	/* no answer (the link went down): decide locally; the claim is made again on reconnect */
	bool ok = reply == NULL || reply->type != REDIS_REPLY_INTEGER || reply->integer == 1;

	if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
		log_warnx("cluster: claiming nick %s: %s", claim->nick, reply->str);
	chat_cluster_nick_result(claim->client_id, claim->nick, ok);
	free(claim);
}

/*
 * Claim nick in Redis for a local client; the answer comes to chat_cluster_nick_result.
 * False when it cannot be asked now (no cluster, or Redis away): the chat decides alone.
 */
bool
cluster_claim_nick(uint64_t client_id, const char *nick)
{
	char key[KEY_MAX], presence[KEY_MAX];
	const char *argv[6] = {"EVAL", claim_script, "1", key, cl.node, presence};
	size_t argvlen[6] = {4, sizeof(claim_script) - 1, 1, 0, strlen(cl.node), 0};
	struct nick_claim *claim;

	if (!cl.active || !cl.linked)
		return false;
	argvlen[3] = cluster_key(key, sizeof(key), "nick:", nick);
	argvlen[5] = (size_t)snprintf(presence, sizeof(presence), "%snode:", cl.prefix);
	if ((claim = calloc(1, sizeof(*claim))) == NULL)
		fatal("calloc");
	claim->client_id = client_id;
	snprintf(claim->nick, sizeof(claim->nick), "%s", nick);
	if (!command_send(on_claim_reply, claim, 6, argv, argvlen)) {
		free(claim);
		return false;
	}
	return true;
}

void
cluster_release_nick(const char *nick)
{
	char key[KEY_MAX];
	const char *argv[5] = {"EVAL", release_script, "1", key, cl.node};
	size_t argvlen[5] = {4, sizeof(release_script) - 1, 1, 0, strlen(cl.node)};

	if (!cl.active)
		return;
	argvlen[3] = cluster_key(key, sizeof(key), "nick:", nick);
	command_send_or_queue(5, argv, argvlen);
}

/* ---- receiving ---- */

static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata);

/* SUBSCRIBE or UNSUBSCRIBE (command) PREFIXkindNAME on the sub connection, if it is up. */
static void
subscription(const char *command, const char *kind, const char *name)
{
	char channel[KEY_MAX];
	const char *argv[2] = {command, channel};
	size_t argvlen[2] = {strlen(command), 0};

	argvlen[1] = cluster_key(channel, sizeof(channel), kind, name);
	if (cl.sub != NULL && cl.sub_up)
		redisAsyncCommandArgv(cl.sub, on_sub_reply, NULL, 2, argv, argvlen);
}

/* A room message from another node, live or read back from the stream. */
static void
deliver_say(struct cluster_room *r, const struct wire_msg *m)
{
	if (m->id[0] != '-' && r != NULL) {
		if (id_compare(m->id, r->last_id) <= 0)
			return; /* delivered already (the live copy and the stream's overlap) */
		snprintf(r->last_id, sizeof(r->last_id), "%s", m->id);
	}
	chat_cluster_event(m);
}

/* Act on one payload from a channel; malformed ones are counted and dropped. */
static void
handle_payload(const char *payload, size_t len)
{
	struct wire_msg m;
	struct remote_node *n;
	struct remote_user *u;
	struct cluster_room *r;

	metrics.cluster_received++;
	if (wire_decode(payload, len, &m) == -1) {
		metrics.cluster_dropped++;
		log_debug("cluster: dropped a malformed message of %zu bytes", len);
		return;
	}
	if (strcmp(m.node, cl.node) == 0)
		return; /* our own publication */
	switch (m.type) {
	case WIRE_HB:
		node_heartbeat(&m);
		return;
	case WIRE_BYE:
		if ((n = node_find(m.node)) != NULL)
			node_lost(n, "server shutting down");
		return;
	case WIRE_MSG:
	case WIRE_ME:
		r = room_find(m.room);
		if (r != NULL && r->catching_up) {
			struct held_message *h = malloc(sizeof(*h) + len);
			if (h == NULL)
				fatal("malloc");
			h->len = len;
			memcpy(h->payload, payload, len);
			STAILQ_INSERT_TAIL(&r->held, h, entry);
			return;
		}
		deliver_say(r, &m);
		return;
	case WIRE_JOIN:
		node_set_user(node_touch(m.node), m.nick, m.room);
		break;
	case WIRE_PART:
		(void)node_touch(m.node);
		break;
	case WIRE_QUIT:
		n = node_touch(m.node);
		if ((u = node_user(n, m.nick)) != NULL)
			node_remove_user(n, u);
		break;
	case WIRE_NICK:
		n = node_touch(m.node);
		if ((u = node_user(n, m.nick)) != NULL)
			snprintf(u->nick, sizeof(u->nick), "%s", m.other);
		else
			node_set_user(n, m.other, m.room);
		break;
	case WIRE_TOPIC:
		(void)node_touch(m.node);
		topic_set(m.room, m.text, m.text_len);
		break;
	case WIRE_PM:
		break;
	}
	chat_cluster_event(&m);
}

static void
on_flush_event(evutil_socket_t fd, short what, void *arg)
{
	chat_cluster_event(NULL);
}

/*
 * Deliver to the local users once hiredis has handled every reply of this read: one
 * flush per message would write each line to each receiver alone (a write(2) per line
 * and receiver), where a batch writes all the lines a receiver is owed at once. The
 * event runs after the current callback, in the same loop turn.
 */
static void
schedule_flush(void)
{
	if (!event_pending(cl.flush_event, EV_TIMEOUT, NULL))
		event_active(cl.flush_event, EV_TIMEOUT, 0);
}

/* A stream entry [id, [field, value, ...]]: its payload, or NULL. */
static const redisReply *
stream_entry_payload(const redisReply *entry, const char **id)
{
	const redisReply *fields;

	if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
	    entry->element[0]->type != REDIS_REPLY_STRING)
		return NULL;
	*id = entry->element[0]->str;
	fields = entry->element[1];
	if (fields->type != REDIS_REPLY_ARRAY || fields->elements < 2 ||
	    fields->element[1]->type != REDIS_REPLY_STRING)
		return NULL;
	return fields->element[1];
}

/* Decode a stream entry into m, with the entry's id; false if it is malformed. */
static bool
stream_entry_decode(const redisReply *entry, struct wire_msg *m)
{
	const char *id = NULL;
	const redisReply *payload = stream_entry_payload(entry, &id);

	if (payload == NULL || wire_decode(payload->str, payload->len, m) == -1 ||
	    (m->type != WIRE_MSG && m->type != WIRE_ME) || !wire_id_valid(id, strlen(id))) {
		metrics.cluster_dropped++;
		return false;
	}
	snprintf(m->id, sizeof(m->id), "%s", id);
	return true;
}

/* The room's stream was read: deliver it, then what arrived live meanwhile. */
static void
on_stream_reply(redisAsyncContext *ac, void *r, void *privdata)
{
	redisReply *reply = r;
	char *room_name = privdata;
	struct cluster_room *room = room_find(room_name);
	bool newest_first = room_name[strlen(room_name) + 1] == 'R';
	struct held_message *h;
	struct wire_msg m;

	free(room_name);
	if (room == NULL || !room->catching_up)
		return;
	room->catching_up = false;
	if (reply == NULL) {
		room_drop_held(room); /* the link is down: read again after the next connect */
		return;
	}
	if (reply->type == REDIS_REPLY_ARRAY) {
		if (newest_first) {
			/*
			 * A first subscription: the history replay for the newcomers here. Our
			 * own newest entries were said here since the room opened (the cmd
			 * connection is in order: they came before this read): the members
			 * have them already.
			 */
			size_t skip_own = room->own_unread, replayable = 0;
			/* per entry: -1 malformed (counted once), 0 not replayed, 1 replayed */
			signed char *fate = calloc(reply->elements + 1, sizeof(*fate));

			if (fate == NULL)
				fatal("calloc");
			for (size_t i = 0; i < reply->elements; i++) {
				bool ours;
				if (!stream_entry_decode(reply->element[i], &m)) {
					fate[i] = -1;
					continue;
				}
				ours = skip_own > 0 && strcmp(m.node, cl.node) == 0;
				skip_own -= ours;
				/* said here since the room opened, or older than the history: not replayed */
				fate[i] = (!ours && ++replayable <= cl.history) ? 1 : 0;
			}
			for (size_t i = reply->elements; i-- > 0;) {
				if (fate[i] < 0 || !stream_entry_decode(reply->element[i], &m))
					continue;
				if (id_compare(m.id, room->last_id) > 0)
					snprintf(room->last_id, sizeof(room->last_id), "%s", m.id);
				if (fate[i] > 0)
					chat_cluster_replay(room->name, &m);
			}
			free(fate);
			room->own_unread = 0;
			if (room->last_id[0] == '\0')
				snprintf(room->last_id, sizeof(room->last_id), "0-0");
		} else {
			size_t missed = 0;
			for (size_t i = 0; i < reply->elements; i++) {
				if (!stream_entry_decode(reply->element[i], &m))
					continue;
				if (strcmp(m.node, cl.node) == 0) {
					if (id_compare(m.id, room->last_id) > 0)
						snprintf(room->last_id, sizeof(room->last_id), "%s", m.id);
					continue;
				}
				missed++;
				deliver_say(room, &m);
			}
			if (missed > 0)
				log_info("cluster: %s: delivered %zu message%s missed during the outage",
				         room->name, missed, missed == 1 ? "" : "s");
		}
	} else if (reply->type == REDIS_REPLY_ERROR)
		log_warnx("cluster: reading the history of %s: %s", room->name, reply->str);
	while ((h = STAILQ_FIRST(&room->held)) != NULL) {
		STAILQ_REMOVE_HEAD(&room->held, entry);
		if (wire_decode(h->payload, h->len, &m) == 0)
			deliver_say(room, &m);
		free(h);
	}
	schedule_flush();
}

/*
 * The room's channel is subscribed: from now on nothing published is missed, so read
 * the stream up to now. With a known last id: what was missed since (an outage);
 * without: the newest entries, the history replayed to whoever just joined here.
 * Live messages wait meanwhile, so the stream's copies come first, in order.
 */
static void
room_read_stream(struct cluster_room *room)
{
	char stream[KEY_MAX], start[WIRE_ID_MAX + 2], count[16], *context;
	const char *argv[6];
	size_t argvlen[6], namelen = strlen(room->name);
	bool newest_first = room->last_id[0] == '\0';

	/* the callback gets the room name, then 'R' for a reverse (newest first) read */
	if ((context = malloc(namelen + 3)) == NULL)
		fatal("malloc");
	memcpy(context, room->name, namelen + 1);
	context[namelen + 1] = newest_first ? 'R' : 'F';
	context[namelen + 2] = '\0';
	argvlen[1] = cluster_key(stream, sizeof(stream), "history:", room->name);
	argv[1] = stream;
	if (newest_first) {
		snprintf(count, sizeof(count), "%u", cl.history + room->own_unread + 1);
		argv[0] = "XREVRANGE";
		argv[2] = "+";
		argv[3] = "-";
	} else {
		snprintf(start, sizeof(start), "(%s", room->last_id);
		snprintf(count, sizeof(count), "%u", CATCHUP_MAX);
		argv[0] = "XRANGE";
		argv[2] = start;
		argv[3] = "+";
	}
	argv[4] = "COUNT";
	argv[5] = count;
	for (int i = 0; i < 6; i++)
		if (i != 1)
			argvlen[i] = strlen(argv[i]);
	room->catching_up = true;
	if (!command_send(on_stream_reply, context, 6, argv, argvlen)) {
		room->catching_up = false;
		free(context);
	}
}

/* Everything the sub connection gets: messages, and subscription confirmations. */
static void
on_sub_reply(redisAsyncContext *ac, void *r, void *privdata)
{
	redisReply *reply = r;
	const redisReply *kind, *channel;
	size_t prefix_len = strlen(cl.prefix);

	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
		return;
	kind = reply->element[0];
	channel = reply->element[1];
	if (kind->type != REDIS_REPLY_STRING || channel->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(kind->str, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING) {
		handle_payload(reply->element[2]->str, reply->element[2]->len);
		schedule_flush();
	} else if (strcmp(kind->str, "subscribe") == 0 && channel->len > prefix_len + 5 &&
	           memcmp(channel->str + prefix_len, "room:", 5) == 0) {
		struct cluster_room *room = room_find(channel->str + prefix_len + 5);
		if (room != NULL && !room->catching_up)
			room_read_stream(room);
	}
}

/* A local room got its first member: hear its channel. */
void
cluster_room_opened(const char *name)
{
	struct cluster_room *r;

	if (!cl.active || room_find(name) != NULL)
		return;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		fatal("calloc");
	snprintf(r->name, sizeof(r->name), "%s", name);
	STAILQ_INIT(&r->held);
	TAILQ_INSERT_TAIL(&cl.rooms, r, entry);
	subscription("SUBSCRIBE", "room:", name);
}

/* A local room lost its last member: stop hearing its channel. */
void
cluster_room_closed(const char *name)
{
	struct cluster_room *r;

	if (!cl.active || (r = room_find(name)) == NULL)
		return;
	subscription("UNSUBSCRIBE", "room:", name);
	room_drop_held(r);
	TAILQ_REMOVE(&cl.rooms, r, entry);
	free(r);
}

/* ---- presence ---- */

struct roster_builder {
	struct evbuffer *buf;
};

static void
roster_add_user(uint64_t client_id, const char *nick, const char *room, void *arg)
{
	struct roster_builder *b = arg;

	if (room != NULL)
		evbuffer_add_printf(b->buf, "\n%s\t%s", nick, room);
}

static void
roster_add_topic(const char *room, const char *topic, void *arg)
{
	struct roster_builder *b = arg;

	evbuffer_add_printf(b->buf, "\nT\t%s\t%s", room, topic);
}

static void
on_presence_reply(redisAsyncContext *ac, void *r, void *privdata)
{
	redisReply *reply = r;

	if (reply == NULL)
		return;
	cl.hb_pending = false;
	if (reply->type == REDIS_REPLY_ERROR)
		log_warnx("cluster: renewing presence: %s", reply->str);
}

/* Renew our presence key and tell every node our whole roster. */
static void
send_heartbeat(void)
{
	struct roster_builder b;
	struct wire_msg m;
	char key[KEY_MAX], ttl[16], channel[KEY_MAX], *header;
	const char *argv[5] = {"SET", key, "", "EX", ttl};
	size_t argvlen[5], len;
	char epoch[24];

	snprintf(epoch, sizeof(epoch), "%llu", cl.epoch);
	argv[2] = epoch;
	argvlen[0] = 3;
	argvlen[1] = cluster_key(key, sizeof(key), "node:", cl.node);
	argvlen[2] = strlen(epoch);
	argvlen[3] = 2;
	argvlen[4] = (size_t)snprintf(ttl, sizeof(ttl), "%u", 3 * cl.heartbeat);
	if (!command_send(on_presence_reply, NULL, 5, argv, argvlen))
		return;
	cl.hb_pending = true;

	memset(&m, 0, sizeof(m));
	m.type = WIRE_HB;
	snprintf(m.node, sizeof(m.node), "%s", cl.node);
	m.epoch = cl.epoch;
	header = wire_encode(&m, &len);
	if ((b.buf = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	evbuffer_add(b.buf, header, len);
	free(header);
	chat_each_user(roster_add_user, &b);
	chat_each_topic(roster_add_topic, &b);
	{
		const char *pargv[3] = {"PUBLISH", channel, NULL};
		size_t pargvlen[3] = {7, 0, evbuffer_get_length(b.buf)};
		pargvlen[1] = cluster_key(channel, sizeof(channel), "ctl", "");
		pargv[2] = (const char *)evbuffer_pullup(b.buf, -1);
		(void)command_send(NULL, NULL, 3, pargv, pargvlen);
	}
	evbuffer_free(b.buf);
}

/* Every heartbeat: renew presence, notice a silent Redis, expire silent nodes. */
static void
on_heartbeat_timer(evutil_socket_t fd, short what, void *arg)
{
	struct remote_node *n, *next;
	uint64_t now = now_ms(), limit = (uint64_t)cl.heartbeat * 3000;

	if (!cl.linked)
		return;
	if (cl.hb_pending) {
		/* hiredis has no command timeout: the last renewal got no answer in a beat */
		cluster_link_lost("redis does not answer");
		return;
	}
	send_heartbeat();
	TAILQ_FOREACH_SAFE(n, &cl.nodes, entry, next)
		if (now - n->last_seen_ms > limit)
			node_lost(n, "node lost");
	chat_cluster_event(NULL);
}

/* Schedule the heartbeat timer at the configured period. */
static void
heartbeat_schedule(void)
{
	struct timeval tv = {(time_t)cl.heartbeat, 0};

	event_del(cl.heartbeat_timer);
	event_add(cl.heartbeat_timer, &tv);
}

/* ---- the connections ---- */

static void
reclaim_user(uint64_t client_id, const char *nick, const char *room, void *arg)
{
	if (!cluster_claim_nick(client_id, nick))
		chat_cluster_nick_result(client_id, nick, true);
}

/* Both connections are up: subscribe, announce ourselves, publish what waited. */
static void
cluster_on_linked(void)
{
	struct cluster_room *r;
	struct remote_node *n;

	event_del(cl.connect_timer);
	cl.backoff_ms = 0;
	cl.linked = true;
	cl.hb_pending = false;
	metrics.cluster_connected = 1;
	log_notice("cluster: connected to redis %s as node %s", cl.redis, cl.node);
	if (cl.warnings_suppressed > 0)
		log_notice("cluster: %lu more connection failure%s not logged",
		           cl.warnings_suppressed, cl.warnings_suppressed == 1 ? " was" : "s were");
	cl.warnings_suppressed = 0;
	cl.last_warning_ms = 0;
	subscription("SUBSCRIBE", "ctl", "");
	subscription("SUBSCRIBE", "node:", cl.node);
	TAILQ_FOREACH(r, &cl.rooms, entry)
		subscription("SUBSCRIBE", "room:", r->name);
	/* the others may have gone quiet only because we could not hear them */
	TAILQ_FOREACH(n, &cl.nodes, entry)
		n->last_seen_ms = now_ms();
	send_heartbeat();
	chat_each_user(reclaim_user, NULL);
	queue_flush();
	chat_cluster_event(NULL);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
	if (status != REDIS_OK) {
		/* hiredis frees the context when this returns */
		char why[256];
		snprintf(why, sizeof(why), "%s", ac->errstr[0] ? ac->errstr : "cannot connect");
		if (ac == cl.cmd)
			cl.cmd = NULL;
		else if (ac == cl.sub)
			cl.sub = NULL;
		cluster_link_lost(why);
		return;
	}
	if (ac == cl.cmd)
		cl.cmd_up = true;
	else if (ac == cl.sub)
		cl.sub_up = true;
	if (cl.cmd_up && cl.sub_up)
		cluster_on_linked();
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
	char why[256];

	/* hiredis frees the context when this returns */
	if (ac == cl.cmd) {
		cl.cmd = NULL;
		cl.cmd_up = false;
	} else if (ac == cl.sub) {
		cl.sub = NULL;
		cl.sub_up = false;
	}
	if (cl.freeing)
		return;
	snprintf(why, sizeof(why), "%s",
	         status == REDIS_OK ? "connection closed" : (ac->errstr[0] ? ac->errstr : "lost"));
	cluster_link_lost(why);
}

/* Drop both connections (their pending callbacks run with no reply). */
static void
cluster_drop_connections(void)
{
	redisAsyncContext *cmd = cl.cmd, *sub = cl.sub;

	cl.freeing = true;
	cl.cmd = cl.sub = NULL;
	cl.cmd_up = cl.sub_up = false;
	if (cmd != NULL)
		redisAsyncFree(cmd);
	if (sub != NULL)
		redisAsyncFree(sub);
	cl.freeing = false;
}

/* Redis is unreachable: warn (rate-limited), keep chatting locally, retry later. */
static void
cluster_link_lost(const char *why)
{
	struct timeval tv;
	struct cluster_room *r;
	uint64_t now = now_ms();

	if (!cl.active)
		return;
	if (cl.dns_request != NULL) {
		evdns_getaddrinfo_cancel(cl.dns_request);
		cl.dns_request = NULL;
	}
	cluster_drop_connections();
	if (cl.linked)
		log_warnx("cluster: lost redis %s: %s; local chat goes on, reconnecting", cl.redis,
		          why);
	else if (cl.last_warning_ms == 0 || now - cl.last_warning_ms >= WARN_INTERVAL_MS) {
		log_warnx("cluster: redis %s unreachable: %s; retrying", cl.redis, why);
		cl.last_warning_ms = now;
	} else
		cl.warnings_suppressed++;
	cl.linked = false;
	cl.hb_pending = false;
	metrics.cluster_connected = 0;
	TAILQ_FOREACH(r, &cl.rooms, entry) {
		r->catching_up = false;
		room_drop_held(r);
	}
	event_del(cl.connect_timer);
	if (event_pending(cl.retry_timer, EV_TIMEOUT, NULL))
		return;
	cl.backoff_ms = cl.backoff_ms == 0 ? BACKOFF_FIRST_MS : cl.backoff_ms * 2;
	if (cl.backoff_ms > BACKOFF_MAX_MS)
		cl.backoff_ms = BACKOFF_MAX_MS;
	tv.tv_sec = (time_t)(cl.backoff_ms / 1000);
	tv.tv_usec = (suseconds_t)(cl.backoff_ms % 1000) * 1000;
	event_add(cl.retry_timer, &tv);
}

static void
on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
	cluster_connect();
}

static void
on_connect_timer(evutil_socket_t fd, short what, void *arg)
{
	cluster_link_lost("connect timed out");
}

/* Open one connection to addr (an IP, or a unix socket path). */
static redisAsyncContext *
connect_one(const char *addr)
{
	redisAsyncContext *ac = cl.unix_socket ? redisAsyncConnectUnix(addr)
	                                       : redisAsyncConnect(addr, cl.port);

	if (ac == NULL)
		return NULL;
	if (ac->err) {
		log_debug("cluster: connect: %s", ac->errstr);
		redisAsyncFree(ac);
		return NULL;
	}
	if (redisLibeventAttach(ac, cl.base) != REDIS_OK) {
		redisAsyncFree(ac);
		return NULL;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	return ac;
}

/* Open both connections to a numeric address or a socket path. */
static void
connect_both(const char *addr)
{
	struct timeval tv = {CONNECT_TIMEOUT_S, 0};

	cl.cmd = connect_one(addr);
	cl.sub = cl.cmd != NULL ? connect_one(addr) : NULL;
	if (cl.cmd == NULL || cl.sub == NULL) {
		cluster_link_lost("cannot open a connection");
		return;
	}
	event_add(cl.connect_timer, &tv);
}

static void
on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
	char ip[INET6_ADDRSTRLEN] = "";

	cl.dns_request = NULL;
	if (result == EVUTIL_EAI_CANCEL)
		return;
	if (result != 0 || res == NULL) {
		char why[300];
		snprintf(why, sizeof(why), "cannot resolve %s: %s", cl.host,
		         evutil_gai_strerror(result));
		cluster_link_lost(why);
		return;
	}
	if (res->ai_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr, ip,
		          sizeof(ip));
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)res->ai_addr)->sin6_addr, ip,
		          sizeof(ip));
	evutil_freeaddrinfo(res);
	connect_both(ip);
}

/*
 * Connect to Redis. A host name is resolved through evdns first: hiredis would call
 * getaddrinfo, which blocks the loop.
 */
static void
cluster_connect(void)
{
	struct evutil_addrinfo hints;
	unsigned char addr[sizeof(struct in6_addr)];

	if (cl.unix_socket || inet_pton(AF_INET, cl.host, addr) == 1 ||
	    inet_pton(AF_INET6, cl.host, addr) == 1) {
		connect_both(cl.host);
		return;
	}
	if (cl.dns == NULL &&
	    (cl.dns = evdns_base_new(cl.base, EVDNS_BASE_INITIALIZE_NAMESERVERS)) == NULL) {
		cluster_link_lost("cannot set up the DNS resolver");
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	cl.dns_request = evdns_getaddrinfo(cl.dns, cl.host, NULL, &hints, on_resolved, NULL);
}

/* Split the redis setting into host and port, or a socket path. */
static void
parse_redis_address(const char *value)
{
	const char *colon;

	snprintf(cl.redis, sizeof(cl.redis), "%s", value);
	cl.unix_socket = value[0] == '/';
	if (cl.unix_socket) {
		snprintf(cl.host, sizeof(cl.host), "%s", value);
		return;
	}
	colon = strrchr(value, ':'); /* validated: HOST:PORT or [V6]:PORT */
	if (value[0] == '[')
		snprintf(cl.host, sizeof(cl.host), "%.*s", (int)(colon - value - 2), value + 1);
	else
		snprintf(cl.host, sizeof(cl.host), "%.*s", (int)(colon - value), value);
	cl.port = (int)strtol(colon + 1, NULL, 10); /* validated: 1..65535 */
}

/* Join the cluster (when enabled); the first connect happens in the loop. */
int
cluster_start(struct server *s)
{
	const struct config *cfg = s->config;
	struct timeval now = {0, 0};
	char host[HOST_NAME_MAX + 1];

	if (!cfg->cluster_enabled)
		return 0;
	memset(&cl, 0, sizeof(cl));
	cl.server = s;
	cl.base = s->base;
	TAILQ_INIT(&cl.nodes);
	TAILQ_INIT(&cl.topics);
	TAILQ_INIT(&cl.rooms);
	STAILQ_INIT(&cl.queue);
	if (cfg->cluster_node[0] != '\0')
		snprintf(cl.node, sizeof(cl.node), "%s", cfg->cluster_node);
	else {
		if (gethostname(host, sizeof(host)) == -1)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		snprintf(cl.node, sizeof(cl.node), "%.50s:%u", host, cfg->chat.port);
		if (!config_valid_node(cl.node, strlen(cl.node))) {
			log_error("cluster: the host name %s does not make a node id: set [cluster] node",
			          host);
			return -1;
		}
	}
	snprintf(cl.prefix, sizeof(cl.prefix), "%s", cfg->cluster_prefix);
	cl.heartbeat = cfg->cluster_heartbeat;
	cl.history = cfg->chat_settings.history;
	parse_redis_address(cfg->cluster_redis);
	cl.epoch = (unsigned long long)time(NULL) * 1000000ULL + (unsigned long long)getpid() % 1000000ULL;
	cl.retry_timer = evtimer_new(cl.base, on_retry_timer, NULL);
	cl.connect_timer = evtimer_new(cl.base, on_connect_timer, NULL);
	cl.heartbeat_timer = event_new(cl.base, -1, EV_PERSIST, on_heartbeat_timer, NULL);
	cl.flush_event = event_new(cl.base, -1, 0, on_flush_event, NULL);
	if (cl.retry_timer == NULL || cl.connect_timer == NULL || cl.heartbeat_timer == NULL ||
	    cl.flush_event == NULL)
		fatalx("cannot create the cluster timers");
	cl.active = true;
	heartbeat_schedule();
	event_add(cl.retry_timer, &now);
	log_notice("cluster: node %s, redis %s, prefix %s", cl.node, cl.redis, cl.prefix);
	return 0;
}

/* A reload: the heartbeat period and the history length may change. */
void
cluster_reload(struct server *s)
{
	if (!cl.active)
		return;
	cl.history = s->config->chat_settings.history;
	if (cl.heartbeat != s->config->cluster_heartbeat) {
		cl.heartbeat = s->config->cluster_heartbeat;
		heartbeat_schedule();
	}
}

static void
release_user(uint64_t client_id, const char *nick, const char *room, void *arg)
{
	cluster_release_nick(nick);
}

/*
 * Leave the cluster (shutdown): say bye so the others drop our users at once, give our
 * nicks and presence back, push that out without waiting, and free everything.
 */
void
cluster_stop(void)
{
	struct remote_node *n, *nnext;
	struct remote_topic *t, *tnext;
	struct cluster_room *r, *rnext;
	struct queued_command *q;

	if (!cl.active)
		return;
	if (cl.linked) {
		char key[KEY_MAX];
		const char *argv[2] = {"DEL", key};
		size_t argvlen[2] = {3, 0};
		cluster_publish(WIRE_BYE, NULL, NULL, NULL, NULL);
		chat_each_user(release_user, NULL);
		argvlen[1] = cluster_key(key, sizeof(key), "node:", cl.node);
		(void)command_send(NULL, NULL, 2, argv, argvlen);
		redisAsyncHandleWrite(cl.cmd); /* a non-blocking write of what is buffered */
	}
	if (cl.queue_items > 0)
		log_warnx("cluster: %zu queued publication%s not sent: redis unreachable at shutdown",
		          cl.queue_items, cl.queue_items == 1 ? "" : "s");
	cl.active = false;
	if (cl.dns_request != NULL)
		evdns_getaddrinfo_cancel(cl.dns_request);
	cl.dns_request = NULL;
	cluster_drop_connections();
	if (cl.dns != NULL)
		evdns_base_free(cl.dns, 0);
	event_free(cl.retry_timer);
	event_free(cl.connect_timer);
	event_free(cl.heartbeat_timer);
	event_free(cl.flush_event);
	/* the lists are freed whole; cl is cleared below */
	TAILQ_FOREACH_SAFE(n, &cl.nodes, entry, nnext) {
		node_clear_users(n, NULL);
		free(n);
	}
	TAILQ_FOREACH_SAFE(t, &cl.topics, entry, tnext) {
		free(t->text);
		free(t);
	}
	TAILQ_FOREACH_SAFE(r, &cl.rooms, entry, rnext) {
		room_drop_held(r);
		free(r);
	}
	while ((q = STAILQ_FIRST(&cl.queue)) != NULL) {
		STAILQ_REMOVE_HEAD(&cl.queue, entry);
		queued_free(q);
	}
	memset(&cl, 0, sizeof(cl));
	metrics.cluster_connected = 0;
	metrics.cluster_nodes = 0;
	metrics.cluster_queue_length = 0;
}

#else /* !HAVE_HIREDIS: the configuration refuses [cluster] enabled = yes */

int
cluster_start(struct server *s)
{
	return 0;
}

void
cluster_reload(struct server *s)
{
}

void
cluster_stop(void)
{
}

bool
cluster_active(void)
{
	return false;
}

void
cluster_room_opened(const char *room)
{
}

void
cluster_room_closed(const char *room)
{
}

void
cluster_publish(enum wire_type type, const char *nick, const char *other, const char *room,
                const char *text)
{
}

bool
cluster_claim_nick(uint64_t client_id, const char *nick)
{
	return false;
}

void
cluster_release_nick(const char *nick)
{
}

bool
cluster_send_pm(const char *from, const char *to, const char *text)
{
	return false;
}

bool
cluster_nick_remote(const char *nick)
{
	return false;
}

unsigned
cluster_remote_count(const char *room)
{
	return 0;
}

void
cluster_each_remote_member(const char *room, void (*fn)(const char *nick, void *arg), void *arg)
{
}

void
cluster_each_remote_room(void (*fn)(const char *room, unsigned count, const char *topic,
                                    void *arg),
                         void *arg)
{
}

const char *
cluster_remote_topic(const char *room)
{
	return NULL;
}

unsigned long
cluster_guest_base(void)
{
	return 0;
}

#endif /* HAVE_HIREDIS */
