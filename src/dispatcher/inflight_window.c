/*-------------------------------------------------------------------------
 *
 * inflight_window.c
 *	  How many requests the dispatcher lets wait on Plivo at once: up to
 *	  plivo_otp.max_inflight while Plivo answers, down to one while it
 *	  does not.
 *
 * A request that got no answer after it was sent (a timeout, a dropped
 * connection) is 'unknown' and never sent again (outcome.c), so every
 * request in flight when Plivo stops answering is a code the user may
 * never get.  The window works as TCP's congestion window does:
 *
 *	no answer at all (timeout, connection refused, dropped or reset)
 *								-> the window drops to 1: one request at
 *								   a time finds out when Plivo is back
 *	an answer that says Plivo is overloaded (429, 5xx)
 *								-> the window halves
 *	any other answer (2xx, 4xx)	-> the window grows by one, up to
 *								   max_inflight (so it doubles per round
 *								   trip, as the answers come back)
 *
 * Only a request started after the window last shrank can shrink it again:
 * the ones started before were sent under the larger window and said
 * nothing new (a timeout of 256 requests at once drops it to one, once).
 * At start, and when a reload changes max_inflight, the window is full:
 * while Plivo answers, max_inflight holds exactly as set.
 *
 * Each shrink is logged, and the return to max_inflight once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "dispatcher.h"

static int	window = 0;			/* requests at once, 1 .. max_inflight */
static int	window_max = 0;		/* max_inflight when last configured */
static TimestampTz shrunk_at = 0;	/* when the window last shrank */

/* At start and at each reload: a changed max_inflight starts a full window. */
void
plivo_otp_window_configure(int max_inflight)
{
	if (window == 0 || max_inflight != window_max)
		window = max_inflight;
	window_max = max_inflight;
}

int
plivo_otp_window(void)
{
	return window;
}

/* What Plivo's answer (or its absence) to a request started at started_at says. */
void
plivo_otp_window_note(PlivoOtpAnswerKind answer, TimestampTz started_at)
{
	int			before = window;

	if (answer == PLIVO_OTP_ANSWERED)
	{
		if (window < window_max && ++window == window_max)
			ereport(LOG,
					(errmsg("plivo_otp dispatcher lets up to %d requests wait on Plivo at once again (plivo_otp.max_inflight)",
							window_max)));
		return;
	}
	if (started_at <= shrunk_at)
		return;
	window = answer == PLIVO_OTP_NO_ANSWER ? 1 : Max(1, window / 2);
	shrunk_at = GetCurrentTimestamp();
	if (window < before)
		ereport(LOG,
				(errmsg("plivo_otp dispatcher lets at most %d request%s wait on Plivo at once",
						window, window == 1 ? "" : "s"),
				 errdetail(answer == PLIVO_OTP_NO_ANSWER ?
						   "A request to Plivo got no answer: the requests in flight when Plivo stops answering are the codes at risk." :
						   "Plivo answered that it is overloaded (429 or 5xx)."),
				 errhint("The window grows back to plivo_otp.max_inflight (%d) by one with each answer.",
						 window_max)));
}
