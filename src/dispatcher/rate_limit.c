/*-------------------------------------------------------------------------
 *
 * rate_limit.c
 *	  The token bucket of plivo_otp.max_requests_per_second.
 *
 * Its burst is a tenth of a second's worth (at least one request): any
 * one-second window then holds at most rate + burst requests, also as
 * Plivo sees them with some network jitter.  A burst of a whole second
 * would allow almost twice the rate.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "dispatcher.h"

static double tokens;
static TimestampTz tokens_at;

static double
rate_burst(void)
{
	return Max(1.0, plivo_otp_max_requests_per_second / 10.0);
}

/* A full bucket, as at start and after a reload. */
void
plivo_otp_rate_reset(TimestampTz now)
{
	tokens = rate_burst();
	tokens_at = now;
}

/* Refill the bucket up to now; how many requests may start at once. */
int
plivo_otp_rate_available(TimestampTz now)
{
	double		rate = plivo_otp_max_requests_per_second;

	tokens = Min(rate_burst(), tokens + rate * (double) (now - tokens_at) / USECS_PER_SEC);
	tokens_at = now;
	return (int) tokens;
}

/* One request started. */
void
plivo_otp_rate_take(void)
{
	tokens -= 1;
}

/* Milliseconds until a request may start (0 if one may now). */
long
plivo_otp_rate_wait_ms(void)
{
	if (tokens >= 1)
		return 0;
	return (long) ((1 - tokens) * 1000 / plivo_otp_max_requests_per_second) + 1;
}
