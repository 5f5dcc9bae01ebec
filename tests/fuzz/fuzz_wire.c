/*
 * fuzz_wire.c - libFuzzer target for the cluster wire format: every byte a node gets
 * from Redis goes through wire_decode first.
 *
 * Properties checked (abort() when one does not hold):
 *   - wire_decode never reads outside the payload and accepts only what it can describe;
 *   - an accepted message, encoded again, decodes to the same fields (a round trip);
 *   - an accepted heartbeat's roster can be walked to its end, line by line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_msg m, again;
	char *copy, *encoded;
	size_t len;

	/* an exact-size heap copy, so ASan sees any read past the end */
	if ((copy = malloc(size ? size : 1)) == NULL)
		return 0;
	memcpy(copy, data, size);
	if (wire_decode(copy, size, &m) == 0) {
		if (m.type == WIRE_HB) {
			struct wire_roster_entry e;
			const char *p = m.text, *end = m.text + m.text_len;
			while (p < end)
				if (!wire_roster_next(&p, end, &e))
					abort(); /* decode checked every line */
		} else {
			encoded = wire_encode(&m, &len);
			if (wire_decode(encoded, len, &again) != 0 || again.type != m.type ||
			    strcmp(again.node, m.node) != 0 || strcmp(again.nick, m.nick) != 0 ||
			    strcmp(again.other, m.other) != 0 || strcmp(again.room, m.room) != 0 ||
			    strcmp(again.id, m.id) != 0 || again.text_len != m.text_len ||
			    (m.text_len > 0 && memcmp(again.text, m.text, m.text_len) != 0))
				abort();
			free(encoded);
		}
	}
	free(copy);
	return 0;
}
