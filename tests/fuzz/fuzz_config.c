/*
 * fuzz_config.c - libFuzzer target for the configuration code (src/config.c).
 *
 * The input is INI text. It goes through the same steps as "echochatd -T -c FILE -o ...":
 *
 *   1. config_load_text() on the whole input, as a file called "fuzz.ini";
 *   2. config_set() for up to MAX_OVERRIDES lines of the input that look like -o
 *      overrides: a line containing '.' and '=' (after leading blanks and one ';' or '#'
 *      comment prefix are skipped, so "; chat.motd=hi" is a comment for the INI loader
 *      and the override "chat.motd=hi" here); a NUL byte in such a line stands for a
 *      newline, which an -o argument can hold;
 *   3. config_validate().
 *
 * Properties checked (abort() when one does not hold):
 *
 *   - a rejected override leaves the configuration untouched (its dump is unchanged);
 *   - the dump round-trip: when config_validate() reports no error, the output of
 *     config_dump() (what -T prints, "INI the daemon accepts") loads into a fresh
 *     configuration with zero errors, validates, and dumps byte for byte the same.
 *
 * Errors from the load or from overrides do not stop the round-trip check: a rejected
 * line or override changes nothing (for overrides this is checked above; the loader
 * skips a rejected line, or the keys of a rejected section), so the configuration is
 * the one that the same file and -o options without the rejected ones give, and which
 * the daemon accepts. Without this, every override line (which the loader also sees,
 * and rejects when it is not a comment or is longer than 198 bytes) would switch the
 * check off.
 *
 * Note: [chat] motd_file reads the file it names (most paths the fuzzer makes up do
 * not exist); scripts/fuzz runs the target with stdin from /dev/null.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define MAX_OVERRIDES 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Print what broke, then abort() so that libFuzzer keeps the input. */
__attribute__((noreturn)) static void
fail(const char *what, const struct config_errors *errors, const char *a, size_t alen,
     const char *b, size_t blen)
{
	fprintf(stderr, "fuzz_config: %s\n", what);
	if (errors != NULL)
		for (size_t i = 0; i < errors->count; i++)
			fprintf(stderr, "  error: %s\n", errors->messages[i]);
	if (a != NULL)
		fprintf(stderr, "---- first:\n%.*s---- end\n", (int)alen, a);
	if (b != NULL)
		fprintf(stderr, "---- second:\n%.*s---- end\n", (int)blen, b);
	abort();
}

/* config_dump() into a malloc'ed buffer. */
static char *
dump(const struct config *cfg, size_t *len)
{
	char *buf = NULL;
	FILE *fp = open_memstream(&buf, len);

	if (fp == NULL)
		abort();
	config_dump(cfg, fp);
	if (fclose(fp) != 0)
		abort();
	return buf;
}

/* Tell whether a line (NUL-terminated) looks like an override; set *assignment. */
static int
override_of(char *line, char **assignment)
{
	char *p = line;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == ';' || *p == '#') {
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
	}
	if (strchr(p, '.') == NULL || strchr(p, '=') == NULL)
		return 0;
	*assignment = p;
	return 1;
}

/* Apply the override lines of text (a modifiable copy, NUL-terminated). */
static void
apply_overrides(struct config *cfg, char *text, size_t len)
{
	size_t applied = 0, cur_len = 0;
	char *line = text, *end = text + len, *cur = NULL;

	while (line < end && applied < MAX_OVERRIDES) {
		char *nl = memchr(line, '\n', (size_t)(end - line));
		char *assignment;

		if (nl == NULL)
			nl = end; /* the copy is NUL-terminated there */
		*nl = '\0';
		/* argv cannot hold a NUL but can hold a newline: a NUL stands for one. */
		for (char *p = line; p < nl; p++)
			if (*p == '\0')
				*p = '\n';
		if (override_of(line, &assignment)) {
			struct config_errors errors;
			size_t after_len;
			char *after;

			if (cur == NULL)
				cur = dump(cfg, &cur_len);
			config_errors_init(&errors);
			applied++;
			if (config_set(cfg, assignment, &errors) != (int)errors.count)
				fail("config_set: returned count differs from errors added", &errors,
				     NULL, 0, NULL, 0);
			after = dump(cfg, &after_len);
			if (errors.count > 0 &&
			    (cur_len != after_len || memcmp(cur, after, cur_len) != 0))
				fail("a rejected override changed the configuration", &errors, cur,
				     cur_len, after, after_len);
			free(cur);
			cur = after;
			cur_len = after_len;
			config_errors_clear(&errors);
		}
		line = nl + 1;
	}
	free(cur);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_errors errors, errors2;
	struct config *cfg, *cfg2;
	char *text, *copy, *out1, *out2;
	size_t len1, len2;
	int n;

	/* An exact-size copy, not NUL-terminated: ASan sees any read past len. */
	text = malloc(size ? size : 1);
	if (text == NULL)
		return 0;
	if (size > 0)
		memcpy(text, data, size);

	config_errors_init(&errors);
	cfg = config_new();
	n = config_load_text(cfg, "fuzz.ini", text, size, &errors);
	if (n != (int)errors.count)
		fail("config_load_text: returned count differs from errors added", &errors, NULL, 0,
		     NULL, 0);
	free(text);

	copy = malloc(size + 1);
	if (copy == NULL)
		abort();
	if (size > 0)
		memcpy(copy, data, size);
	copy[size] = '\0';
	apply_overrides(cfg, copy, size);
	free(copy);

	if (config_validate(cfg, &errors) == 0) {
		out1 = dump(cfg, &len1);

		config_errors_init(&errors2);
		cfg2 = config_new();
		if (config_load_text(cfg2, "dump.ini", out1, len1, &errors2) != 0 ||
		    errors2.count != 0)
			fail("the dump does not load without errors", &errors2, out1, len1, NULL, 0);
		if (config_validate(cfg2, &errors2) != 0)
			fail("the reloaded dump does not validate", &errors2, out1, len1, NULL, 0);
		out2 = dump(cfg2, &len2);
		if (len1 != len2 || memcmp(out1, out2, len1) != 0)
			fail("the reloaded dump dumps differently", NULL, out1, len1, out2, len2);
		free(out2);
		free(out1);
		config_free(cfg2);
		config_errors_clear(&errors2);
	}
	config_free(cfg);
	config_errors_clear(&errors);
	return 0;
}
