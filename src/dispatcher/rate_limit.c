/*-------------------------------------------------------------------------
 *
 * rate_limit.c
 *	  The dispatcher's rate limits: one for Send Message requests
 *	  (plivo_otp.max_requests_per_second), one for Make Call requests
 *	  (plivo_otp.max_calls_per_second).  Plivo limits the two APIs apart,
 *	  so a backlog of one kind never holds up the other.
 *
 * Plivo does not document how it counts a second, so each kind is held
 * by two rules at once:
 *
 * - a token bucket whose burst is a tenth of a second's worth (at least
 *	 one request): requests never come closer together than that, after
 *	 an idle spell as in a backlog;
 * - a window: no WINDOW_US (a second and 10 ms), wherever it starts,
 *	 holds more starts than the rate.
 *	 The start times of the last second's requests are kept (at most the
 *	 rate of them, oldest first), and a request may start only when fewer
 *	 than the rate started within the last WINDOW_US.  Without it a
 *	 backlog's first second held the burst on top of the rate: 1,100
 *	 requests at 1,000/s, which a counter per clock second answers with
 *	 100 429s.
 *
 * Both count a request when it starts (after its claim committed), not
 * when it is claimed: a claim's durable commit can take tens of
 * milliseconds, and counting at the claim let the requests of several
 * claims leave together.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "dispatcher.h"

/*
 * The window is a little longer than a second: requests reach Plivo a
 * little apart from when they start (a connection, a busy loopback), and
 * a second as Plivo counts it must still hold no more than the rate.
 */
#define WINDOW_US	(USECS_PER_SEC + 10 * 1000)

typedef struct RateBucket
{
	int		   *rate;			/* the setting: requests per second */
	double		tokens;
	TimestampTz tokens_at;
	/* the window: start times of the requests within it, a ring, oldest first */
	TimestampTz *starts;
	int			capacity;		/* = the rate it was sized for */
	int			oldest;
	int			count;
} RateBucket;

static RateBucket buckets[PLIVO_OTP_NUM_RATES] = {
	[PLIVO_OTP_RATE_MESSAGES] = {&plivo_otp_max_requests_per_second},
	[PLIVO_OTP_RATE_CALLS] = {&plivo_otp_max_calls_per_second},
};

static double
rate_burst(const RateBucket *b)
{
	return Max(1.0, *b->rate / 10.0);
}

/* What the bucket holds at now (not stored). */
static double
tokens_at(const RateBucket *b, TimestampTz now)
{
	double		refill = *b->rate * (double) (now - b->tokens_at) / USECS_PER_SEC;

	return Min(rate_burst(b), b->tokens + Max(refill, 0.0));
}

/*
 * Size a window for the current rate, keeping its newest starts (after a
 * reload that lowered the rate, the window is full until they age out).
 */
static void
window_resize(RateBucket *b)
{
	int			capacity = Max(*b->rate, 1);
	TimestampTz *starts;
	int			keep;

	if (capacity == b->capacity)
		return;
	starts = MemoryContextAlloc(TopMemoryContext, sizeof(TimestampTz) * capacity);
	keep = Min(b->count, capacity);
	for (int i = 0; i < keep; i++)
		starts[i] = b->starts[(b->oldest + b->count - keep + i) % b->capacity];
	if (b->starts)
		pfree(b->starts);
	b->starts = starts;
	b->capacity = capacity;
	b->oldest = 0;
	b->count = keep;
}

/* Forget the starts that left the window by now. */
static void
window_advance(RateBucket *b, TimestampTz now)
{
	if (b->capacity != Max(*b->rate, 1))
		window_resize(b);		/* (first use, or a reload) */
	while (b->count > 0 && b->starts[b->oldest] <= now - WINDOW_US)
	{
		b->oldest = (b->oldest + 1) % b->capacity;
		b->count--;
	}
}

/* How many more may start within the window at now. */
static int
window_room(RateBucket *b, TimestampTz now)
{
	window_advance(b, now);
	return b->capacity - b->count;
}

/* Full buckets, as at start and after a reload. */
void
plivo_otp_rate_reset(TimestampTz now)
{
	for (int i = 0; i < PLIVO_OTP_NUM_RATES; i++)
	{
		buckets[i].tokens = rate_burst(&buckets[i]);
		buckets[i].tokens_at = now;
	}
}

/* Refill a bucket up to now; how many requests of its kind may start at once. */
int
plivo_otp_rate_available(PlivoOtpRateKind kind, TimestampTz now)
{
	RateBucket *b = &buckets[kind];

	b->tokens = tokens_at(b, now);
	b->tokens_at = now;
	return Min((int) b->tokens, window_room(b, now));
}

/*
 * One request of this kind starts now.  It was claimed within what
 * plivo_otp_rate_available allowed, and the time since only added tokens
 * and room, so neither runs out here.
 */
void
plivo_otp_rate_take(PlivoOtpRateKind kind, TimestampTz now)
{
	RateBucket *b = &buckets[kind];

	b->tokens = tokens_at(b, now) - 1;
	b->tokens_at = now;
	window_advance(b, now);
	if (b->count < b->capacity)
	{
		b->starts[(b->oldest + b->count) % b->capacity] = now;
		b->count++;
	}
}

/* Milliseconds from now until a request of this kind may start (0 if one may now). */
long
plivo_otp_rate_wait_ms(PlivoOtpRateKind kind, TimestampTz now)
{
	RateBucket *b = &buckets[kind];
	double		tokens = tokens_at(b, now);
	long		wait_ms = 0;

	if (tokens < 1)
		wait_ms = (long) ((1 - tokens) * 1000 / *b->rate) + 1;
	if (window_room(b, now) <= 0)
		wait_ms = Max(wait_ms, (long) ((b->starts[b->oldest] + WINDOW_US - now) / 1000) + 1);
	return wait_ms;
}
