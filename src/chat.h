/* chat.h - what the rest of the daemon may ask the chat service. */
#ifndef ECHOCHATD_CHAT_H
#define ECHOCHATD_CHAT_H

unsigned chat_room_count(void);

#endif
