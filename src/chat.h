/* chat.h - what the rest of the daemon may ask the chat service. */
#ifndef ECHOCHATD_CHAT_H
#define ECHOCHATD_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client;
struct wire_msg;

unsigned chat_room_count(void);
unsigned chat_member_count(void);
bool chat_client_info(const struct client *c, const char **nick, const char **room);

/* The cluster layer's way in: what other nodes did, shown to the users here. */
void chat_cluster_event(const struct wire_msg *m);
void chat_cluster_quit(const char *nick, const char *room, const char *reason);
void chat_cluster_replay(const char *room, const struct wire_msg *m);
void chat_cluster_nick_result(uint64_t client_id, const char *nick, bool ok);
void chat_each_user(void (*fn)(uint64_t client_id, const char *nick, const char *room,
                               void *arg),
                    void *arg);
void chat_each_topic(void (*fn)(const char *room, const char *topic, void *arg), void *arg);

#endif
