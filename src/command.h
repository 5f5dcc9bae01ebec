/* command.h - parsing chat input lines into commands; nick and room rules (pure). */
#ifndef ECHOCHATD_COMMAND_H
#define ECHOCHATD_COMMAND_H

#include <stdbool.h>
#include <stddef.h>

#define NICK_MAX 24
#define ROOM_MAX 32 /* without the '#' */

enum command_type {
	CMD_MESSAGE, /* plain text for the room */
	CMD_NICK,
	CMD_JOIN,
	CMD_PART,
	CMD_ROOMS,
	CMD_WHO,
	CMD_MSG,
	CMD_ME,
	CMD_TOPIC,
	CMD_QUIT,
	CMD_HELP,
	CMD_UNKNOWN, /* word holds the command name */
	CMD_INVALID, /* a known command with a bad argument: error says what is allowed */
};

struct command {
	enum command_type type;
	char word[ROOM_MAX + 2]; /* nick for NICK/MSG, "#room" for JOIN, name for UNKNOWN */
	const char *text;        /* message, reason or topic; "" when absent */
	const char *error;
};

void command_parse(const char *line, struct command *cmd);
bool nick_valid(const char *nick, size_t len);
void nick_fold(const char *nick, char out[NICK_MAX + 1]);
bool nick_same(const char *a, const char *b);
bool room_normalize(const char *name, size_t len, char *out, size_t outlen);

#endif
