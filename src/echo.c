/* echo.c - the echo service (RFC 862): every byte back, in order, with back-pressure. */
#include "echo.h"

#include <event2/buffer.h>

#include "client.h"

/* Send every byte back as it came: straight to the socket when nothing is queued. */
static void
echo_on_data(struct client *c, const unsigned char *data, size_t len)
{
	client_send(c, data, len);
}

/* Before a shutdown's FIN: echo also what the kernel already received from the peer. */
static void
echo_on_finish(struct client *c)
{
	struct evbuffer *pending;

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
	.on_data = echo_on_data,
	.on_finish = echo_on_finish,
};
