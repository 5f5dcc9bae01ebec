/* echo.c - the echo service (RFC 862): every byte back, in order, with back-pressure. */
#include "echo.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "client.h"

/*
 * Send everything read back, moving the buffer's chains instead of copying bytes. When
 * libevent's read was full (its cap is 4 KiB per wake-up), the socket likely holds more:
 * read it in large readv calls into a batch behind what was read, then send the batch
 * with one writev, so a bulk transfer is not paced by 4 KiB and is written in one call.
 */
static void
echo_on_read(struct client *c)
{
	struct evbuffer *input = client_input(c), *batch;
	size_t got = evbuffer_get_length(input), pending = client_output_length(c);

	/* a short read means the socket is empty: save the syscall and the batch */
	if (got < ECHO_LIBEVENT_READ || pending + got >= ECHO_HIGH_WATER ||
	    (batch = evbuffer_new()) == NULL) {
		client_send_buffer(c, input);
		return;
	}
	/* the input's tail is frozen outside libevent's own read: gather in the batch */
	evbuffer_add_buffer(batch, input);
	client_read_more(c, batch, ECHO_HIGH_WATER - pending - got);
	client_send_buffer(c, batch);
	evbuffer_free(batch);
}

/* Before a shutdown's FIN: echo also what the kernel already received from the peer. */
static void
echo_on_finish(struct client *c)
{
	struct evbuffer *pending;

	echo_on_read(c);
	if (c->reason != CLOSE_SHUTDOWN || (pending = evbuffer_new()) == NULL)
		return;
	client_read_pending(c, pending);
	client_send_buffer(c, pending);
	evbuffer_free(pending);
}

/*
 * The back-pressure of echo lives in the client's generic read pause: past the high
 * mark of pending output the client is not read from, so one that writes and never
 * reads holds at most about ECHO_HIGH_WATER plus one read of memory.
 */
const struct service echo_service = {
	.name = "echo",
	.id = SERVICE_ECHO,
	.output_high_water = ECHO_HIGH_WATER,
	.output_low_water = ECHO_LOW_WATER,
	.on_read = echo_on_read,
	.on_finish = echo_on_finish,
};
