/*-------------------------------------------------------------------------
 *
 * outcome.c
 *	  What a finished request to Plivo means, and the outcomes waiting to
 *	  be recorded on their rows.
 *
 * The rules (dispatch_state; Plivo's own words go to delivery_status only):
 *	2xx with a message UUID			-> accepted, body wiped
 *	400/401/403/404 and other 4xx	-> refused, body wiped, not retried
 *	429, 5xx, and failures before any byte of the request left (connect,
 *	DNS, TLS) -> pending again after back-off with jitter (Retry-After
 *	honoured), until the code is about to expire -> expired, never late
 *	a failure after the request left (timeout, connection dropped, 2xx
 *	without a UUID), or a stop while a request was in flight
 *									-> unknown, body wiped, never re-sent
 *
 * The last rule makes delivery at most once: Plivo's Message API has no
 * idempotency key, so re-sending after an ambiguous outcome could send the
 * SMS twice.  The code stays valid; the application sees 'unknown' in
 * otp_status and can offer "send again" (a new otp_send).
 *
 * Outcomes wait in a list (their own memory context) until a unit of work
 * has recorded them all; if that fails they stay and are recorded on a
 * later turn of the loop.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "dispatcher.h"

#define MAX_BACKOFF_SECS 60

/* The dispatcher_stats counter of each outcome (none for the others). */
static const PlivoOtpCounter counter_of_state[] = {
	[PLIVO_OTP_DISPATCH_PENDING] = PLIVO_OTP_COUNTER_RETRIED,
	[PLIVO_OTP_DISPATCH_SENDING] = PLIVO_OTP_NUM_COUNTERS,
	[PLIVO_OTP_DISPATCH_ACCEPTED] = PLIVO_OTP_COUNTER_ACCEPTED,
	[PLIVO_OTP_DISPATCH_REFUSED] = PLIVO_OTP_COUNTER_REFUSED,
	[PLIVO_OTP_DISPATCH_EXPIRED] = PLIVO_OTP_COUNTER_EXPIRED,
	[PLIVO_OTP_DISPATCH_UNKNOWN] = PLIVO_OTP_COUNTER_UNKNOWN,
	[PLIVO_OTP_DISPATCH_CANCELED] = PLIVO_OTP_NUM_COUNTERS,
};

static MemoryContext outcome_context = NULL;
static List *outcomes = NIL;

void
plivo_otp_outcomes_init(MemoryContext parent)
{
	outcome_context = AllocSetContextCreate(parent, "plivo_otp outcomes",
											ALLOCSET_DEFAULT_SIZES);
}

/* Count an outcome and keep it for recording; error is sanitised here. */
void
plivo_otp_add_outcome(const pg_uuid_t *id, PlivoOtpDispatchState state,
					  const char *provider_uuid, int http_status, const char *error,
					  TimestampTz next_try_at)
{
	MemoryContext old = MemoryContextSwitchTo(outcome_context);
	Outcome    *o = palloc0(sizeof(Outcome));

	o->id = *id;
	o->state = state;
	o->provider_uuid = provider_uuid ? pstrdup(provider_uuid) : NULL;
	o->http_status = http_status;
	o->error = error ? plivo_otp_sanitize_error(error) : NULL;
	o->next_try_at = next_try_at;
	outcomes = lappend(outcomes, o);
	MemoryContextSwitchTo(old);

	if (counter_of_state[state] != PLIVO_OTP_NUM_COUNTERS)
		plivo_otp_count(counter_of_state[state], 1);
	if (error && state != PLIVO_OTP_DISPATCH_ACCEPTED)
		plivo_otp_set_last_error(o->error);
}

/* Retry later with exponential back-off and jitter, or expire. */
static void
retry_or_expire(InflightMessage *m, int http_status, const char *error, long retry_after)
{
	TimestampTz now = GetCurrentTimestamp();
	double		delay;

	if (retry_after >= 0)
		delay = Max(retry_after, 1);
	else
	{
		delay = Min(MAX_BACKOFF_SECS, 1 << Min(m->tries - 1, 10));
		delay *= 0.5 + 0.5 * pg_prng_double(&pg_global_prng_state);
	}
	if (now + (int64) (delay * USECS_PER_SEC) + PLIVO_MIN_MESSAGE_EXPIRY * USECS_PER_SEC >= m->expires_at)
	{
		plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_EXPIRED, NULL, http_status,
							  psprintf("code expired while retrying: %s", error), 0);
		return;
	}
	plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_PENDING, NULL, http_status, error,
						  now + (int64) (delay * USECS_PER_SEC));
}

/* A transfer that failed without an HTTP answer. */
static void
judge_failed_transfer(HttpTransfer *t)
{
	InflightMessage *m = (InflightMessage *) t->owner;
	const char *what = t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result);

	if (t->request_sent)
		plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_UNKNOWN, NULL, 0,
							  psprintf("no answer after the request was sent (%s); not re-sent", what), 0);
	else
		retry_or_expire(m, 0, psprintf("request not sent: %s", what), -1);
}

/* Decide what a finished request means; see the rules at the top. */
void
plivo_otp_judge_transfer(HttpTransfer *t)
{
	InflightMessage *m = (InflightMessage *) t->owner;
	char	   *uuid = NULL;
	char	   *error = NULL;
	long		status = t->http_status;
	char	   *text;

	if (t->result != CURLE_OK)
	{
		judge_failed_transfer(t);
		return;
	}

	(void) plivo_otp_parse_send_response(t->response, &uuid, &error);
	text = psprintf("HTTP %ld%s%s", status, error ? ": " : "", error ? error : "");
	if (status >= 200 && status < 300)
	{
		if (uuid)
			plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_ACCEPTED, uuid, status, NULL, 0);
		else
			plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_UNKNOWN, NULL, status,
								  "Plivo answered without a message UUID; not re-sent", 0);
	}
	else if (status == 429 || status >= 500)
		retry_or_expire(m, status, text, status == 429 ? t->retry_after : -1);
	else
	{
		ereport(LOG,
				(errmsg("plivo_otp dispatcher: Plivo refused the message to %s", m->masked_phone),
				 errdetail_internal("%s", plivo_otp_sanitize_error(text))));
		plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_REFUSED, NULL, status, text, 0);
	}
}

/* At a stop: requests that had not left go back to the queue. */
void
plivo_otp_abandon_transfer(HttpTransfer *t)
{
	InflightMessage *m = (InflightMessage *) t->owner;

	if (t->request_sent)
		plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_UNKNOWN, NULL, 0,
							  "dispatcher stopped after the request was sent; not re-sent", 0);
	else
		plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_PENDING, NULL, 0,
							  "dispatcher stopped before sending", GetCurrentTimestamp());
	plivo_otp_free_transfer(t);
}

/* Free a transfer and what the dispatcher keeps about its message. */
void
plivo_otp_free_transfer(HttpTransfer *t)
{
	InflightMessage *m = (InflightMessage *) t->owner;

	if (m)
	{
		pfree(m->masked_phone);
		pfree(m);
	}
	plivo_otp_http_free(t);
}

int
plivo_otp_outcomes_waiting(void)
{
	return list_length(outcomes);
}

/* Forget the outcomes added after the first n (judged in a claim that rolled back). */
void
plivo_otp_outcomes_truncate(int n)
{
	outcomes = list_truncate(outcomes, n);
}

/* The unit of work of plivo_otp_record_outcomes; arg is its next_due. */
static void
record_outcomes_work(void *arg)
{
	TimestampTz *next_due = (TimestampTz *) arg;
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;
	bool		accepted = false;

	foreach(lc, outcomes)
	{
		Outcome    *o = lfirst(lc);

		plivo_otp_queue_record(o, now);
		if (o->next_try_at && (*next_due == 0 || o->next_try_at < *next_due))
			*next_due = o->next_try_at;
		if (o->provider_uuid)
			accepted = true;
	}
	/* Callbacks that beat this commit are waiting for these UUIDs. */
	if (accepted)
		plivo_otp_apply_waiting_events();
}

/*
 * Record every waiting outcome in one unit of work, moving *next_due to
 * the earliest retry.  False if that failed: they stay for the next turn.
 */
bool
plivo_otp_record_outcomes(TimestampTz *next_due)
{
	TimestampTz due = *next_due;

	if (outcomes == NIL)
		return true;
	if (!plivo_otp_run_work("recording Plivo outcomes", record_outcomes_work, &due))
		return false;
	*next_due = due;
	outcomes = NIL;
	MemoryContextReset(outcome_context);
	return true;
}
