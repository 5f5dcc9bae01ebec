/* chat.h - what the rest of the daemon may ask the chat service. */
#ifndef ECHOCHATD_CHAT_H
#define ECHOCHATD_CHAT_H

#include <stdbool.h>

struct client;

unsigned chat_room_count(void);
unsigned chat_member_count(void);
bool chat_client_info(const struct client *c, const char **nick, const char **room);

#endif
