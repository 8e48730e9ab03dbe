/*-------------------------------------------------------------------------
 *
 * rate_limit.c
 *	  The dispatcher's token buckets: one for Send Message requests
 *	  (plivo_otp.max_requests_per_second), one for Make Call requests
 *	  (plivo_otp.max_calls_per_second).  Plivo limits the two APIs apart,
 *	  so a backlog of one kind never holds up the other.
 *
 * A bucket's burst is a tenth of a second's worth (at least one request):
 * any one-second window then holds at most rate + burst requests, also as
 * Plivo sees them with some network jitter.  A burst of a whole second
 * would allow almost twice the rate.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "dispatcher.h"

typedef struct RateBucket
{
	int		   *rate;			/* the setting: requests per second */
	double		tokens;
	TimestampTz tokens_at;
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
	return (int) b->tokens;
}

/* One request of this kind started. */
void
plivo_otp_rate_take(PlivoOtpRateKind kind)
{
	buckets[kind].tokens -= 1;
}

/* Milliseconds from now until a request of this kind may start (0 if one may now). */
long
plivo_otp_rate_wait_ms(PlivoOtpRateKind kind, TimestampTz now)
{
	RateBucket *b = &buckets[kind];
	double		tokens = tokens_at(b, now);

	if (tokens >= 1)
		return 0;
	return (long) ((1 - tokens) * 1000 / *b->rate) + 1;
}
