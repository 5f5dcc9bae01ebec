/* bucket.h - a token bucket for per-client flood control (pure, unit-tested). */
#ifndef ECHOCHATD_BUCKET_H
#define ECHOCHATD_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

struct token_bucket {
	double tokens;
	uint64_t last_ms; /* monotonic time of the last refill */
};

/* Start full: a new client may send its burst at once. */
static inline void
bucket_init(struct token_bucket *b, unsigned burst, uint64_t now_ms)
{
	b->tokens = burst;
	b->last_ms = now_ms;
}

/* Add the tokens earned since the last refill; tell whether one is there (rate 0: always). */
static inline bool
bucket_ready(struct token_bucket *b, unsigned rate, unsigned burst, uint64_t now_ms)
{
	if (rate == 0)
		return true;
	if (now_ms > b->last_ms) {
		b->tokens += (double)(now_ms - b->last_ms) * rate / 1000.0;
		if (b->tokens > burst)
			b->tokens = burst;
		b->last_ms = now_ms;
	}
	return b->tokens >= 1.0;
}

/* Spend one token (after bucket_ready said there is one). */
static inline void
bucket_spend(struct token_bucket *b, unsigned rate)
{
	if (rate != 0)
		b->tokens -= 1.0;
}

/* Milliseconds until a token will be there (at least 1). */
static inline uint64_t
bucket_wait_ms(const struct token_bucket *b, unsigned rate)
{
	double missing = 1.0 - b->tokens;
	uint64_t ms;

	if (rate == 0 || missing <= 0)
		return 1;
	ms = (uint64_t)(missing * 1000.0 / rate) + 1;
	return ms;
}

#endif
