/* echo.c - the echo service (RFC 862): every byte back, in order, with back-pressure. */
#include "echo.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "client.h"

/*
 * Send everything read back, moving the buffer's chains instead of copying bytes; then
 * read what else the socket holds straight into the output (up to the high mark), so a
 * bulk transfer is not paced by libevent's 4 KiB per wake-up.
 */
static void
echo_on_read(struct client *c)
{
	size_t got = evbuffer_get_length(client_input(c)), pending;

	client_send_buffer(c, client_input(c));
	pending = client_output_length(c);
	/* libevent read less than its 4 KiB cap: the socket is empty, save the syscall */
	if (got >= ECHO_LIBEVENT_READ && pending < ECHO_HIGH_WATER) {
		struct evbuffer *out = bufferevent_get_output(c->bev);
		c->bytes_queued += client_read_more(c, out, ECHO_HIGH_WATER - pending);
	}
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
