/* command.c - parsing chat input lines into commands; nick and room rules (pure). */
#include "command.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	enum command_type type;
} command_names[] = {
	{"nick", CMD_NICK}, {"join", CMD_JOIN}, {"part", CMD_PART}, {"rooms", CMD_ROOMS},
	{"who", CMD_WHO},   {"msg", CMD_MSG},   {"me", CMD_ME},     {"topic", CMD_TOPIC},
	{"quit", CMD_QUIT}, {"help", CMD_HELP},
};

#define NICK_RULE "a nick is 1-24 letters, digits, _ or -, starting with a letter"
#define ROOM_RULE "a room name is # (optional) and 1-32 letters, digits, _ or -"

/* Tell whether nick follows the rule: 1-24 of [A-Za-z0-9_-], starting with a letter. */
bool
nick_valid(const char *nick, size_t len)
{
	if (len == 0 || len > NICK_MAX || !isalpha((unsigned char)nick[0]))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)nick[i]) && nick[i] != '_' && nick[i] != '-')
			return false;
	return true;
}

/*
 * Write into out (NICK_MAX + 1 bytes) the key two nicks share when they would be taken for
 * one another: letters are folded to lower case and the ASCII look-alikes I/l/1 and O/0
 * to one letter each. Nick uniqueness compares these keys, never the nicks themselves.
 */
void
nick_fold(const char *nick, char out[NICK_MAX + 1])
{
	size_t i;

	for (i = 0; i < NICK_MAX && nick[i] != '\0'; i++) {
		char ch = (char)tolower((unsigned char)nick[i]);
		if (ch == 'i' || ch == '1')
			ch = 'l';
		else if (ch == '0')
			ch = 'o';
		out[i] = ch;
	}
	out[i] = '\0';
}

/* Tell whether two nicks would be taken for one another (see nick_fold). */
bool
nick_same(const char *a, const char *b)
{
	char fa[NICK_MAX + 1], fb[NICK_MAX + 1];

	nick_fold(a, fa);
	nick_fold(b, fb);
	return strcmp(fa, fb) == 0;
}

/* Write "#name" into out if name (with or without its '#') is a valid room name. */
bool
room_normalize(const char *name, size_t len, char *out, size_t outlen)
{
	if (len > 0 && name[0] == '#') {
		name++;
		len--;
	}
	if (len == 0 || len > ROOM_MAX || outlen < len + 2)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '-')
			return false;
	out[0] = '#';
	memcpy(out + 1, name, len);
	out[len + 1] = '\0';
	return true;
}

/* Skip spaces and tabs. */
static const char *
skip_blanks(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* Split off the next word: its start and length; returns what follows it. */
static const char *
next_word(const char *p, const char **word, size_t *len)
{
	p = skip_blanks(p);
	*word = p;
	while (*p != '\0' && *p != ' ' && *p != '\t')
		p++;
	*len = (size_t)(p - *word);
	return skip_blanks(p);
}

/* Copy a word into dst, cut (if it must be) at a UTF-8 character boundary, so that a
 * long name echoed in an error line stays valid UTF-8. */
static void
copy_word(char *dst, size_t dstlen, const char *word, size_t len)
{
	if (len >= dstlen) {
		len = dstlen - 1;
		while (len > 0 && ((unsigned char)word[len] & 0xC0) == 0x80)
			len--;
	}
	memcpy(dst, word, len);
	dst[len] = '\0';
}

/* Mark cmd as a known command used wrongly. */
static void
command_invalid(struct command *cmd, const char *error)
{
	cmd->type = CMD_INVALID;
	cmd->error = error;
}

/*
 * Parse one cleaned input line. A line not starting with '/' is a message; "//text"
 * is the message "/text"; command names are case-insensitive.
 */
void
command_parse(const char *line, struct command *cmd)
{
	const char *name, *arg, *rest;
	size_t name_len, arg_len;

	memset(cmd, 0, sizeof(*cmd));
	cmd->text = "";
	if (line[0] != '/' || line[1] == '/') {
		cmd->type = CMD_MESSAGE;
		cmd->text = line[0] == '/' ? line + 1 : line;
		return;
	}
	rest = next_word(line + 1, &name, &name_len);
	cmd->type = CMD_UNKNOWN;
	copy_word(cmd->word, sizeof(cmd->word), name, name_len);
	for (size_t i = 0; i < sizeof(command_names) / sizeof(command_names[0]); i++)
		if (strlen(command_names[i].name) == name_len &&
		    strncasecmp(command_names[i].name, name, name_len) == 0)
			cmd->type = command_names[i].type;

	switch (cmd->type) {
	case CMD_NICK:
		rest = next_word(rest, &arg, &arg_len);
		if (arg_len == 0)
			command_invalid(cmd, "usage: /nick NAME (" NICK_RULE ")");
		else if (*rest != '\0' || !nick_valid(arg, arg_len))
			command_invalid(cmd, NICK_RULE);
		else
			snprintf(cmd->word, sizeof(cmd->word), "%.*s", (int)arg_len, arg);
		break;
	case CMD_JOIN:
		rest = next_word(rest, &arg, &arg_len);
		if (arg_len == 0)
			command_invalid(cmd, "usage: /join ROOM (" ROOM_RULE ")");
		else if (*rest != '\0' || !room_normalize(arg, arg_len, cmd->word, sizeof(cmd->word)))
			command_invalid(cmd, ROOM_RULE);
		break;
	case CMD_MSG:
		rest = next_word(rest, &arg, &arg_len);
		if (arg_len == 0 || *rest == '\0')
			command_invalid(cmd, "usage: /msg NICK TEXT");
		else if (!nick_valid(arg, arg_len))
			command_invalid(cmd, NICK_RULE);
		else {
			snprintf(cmd->word, sizeof(cmd->word), "%.*s", (int)arg_len, arg);
			cmd->text = rest;
		}
		break;
	case CMD_ME:
		if (*rest == '\0')
			command_invalid(cmd, "usage: /me TEXT");
		else
			cmd->text = rest;
		break;
	case CMD_TOPIC:
	case CMD_QUIT:
		cmd->text = rest;
		break;
	case CMD_PART:
	case CMD_ROOMS:
	case CMD_WHO:
	case CMD_HELP:
	case CMD_UNKNOWN:
	case CMD_MESSAGE:
	case CMD_INVALID:
		break;
	}
}
