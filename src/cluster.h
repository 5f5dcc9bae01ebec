/* cluster.h - chat across echochatd instances through Redis pub/sub (see doc/cluster.md). */
#ifndef ECHOCHATD_CLUSTER_H
#define ECHOCHATD_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "wire.h"

struct server;

/* The daemon's side: start with the server, follow reloads, stop on shutdown. */
int cluster_start(struct server *s);
void cluster_reload(struct server *s);
void cluster_stop(void);
bool cluster_active(void);
unsigned long cluster_guest_base(void);

/* The chat's side: what its users do that other nodes must hear. */
void cluster_room_opened(const char *room);
void cluster_room_closed(const char *room);
void cluster_publish(enum wire_type type, const char *nick, const char *other, const char *room,
                     const char *text);
bool cluster_claim_nick(uint64_t client_id, const char *nick);
void cluster_release_nick(const char *nick);
bool cluster_send_pm(const char *from, const char *to, const char *text);

/* What the chat asks about the users of other nodes. */
bool cluster_nick_remote(const char *nick);
unsigned cluster_remote_count(const char *room);
void cluster_each_remote_member(const char *room, void (*fn)(const char *nick, void *arg),
                                void *arg);
void cluster_each_remote_room(void (*fn)(const char *room, unsigned count, const char *topic,
                                         void *arg),
                              void *arg);
const char *cluster_remote_topic(const char *room);

#endif
