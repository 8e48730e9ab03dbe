/*-------------------------------------------------------------------------
 *
 * outcome.c
 *	  What a finished request to Plivo means, and the outcomes waiting to
 *	  be recorded on their rows.
 *
 * The rules, the same for an SMS (Send Message) and a call (Make Call)
 * (dispatch_state; Plivo's own words go to delivery_status only):
 *	2xx with a UUID (an SMS's message_uuid, a call's request_uuid)
 *									-> accepted, provider_uuid, accepted_at;
 *									   an SMS's body wiped, a call's kept
 *	400/401/403/404 and other 4xx	-> refused, body wiped, not retried
 *	429, 503, and failures before any byte of the request left (connect,
 *	DNS, TLS): Plivo cannot have taken the message
 *									-> pending again after back-off with
 *									   jitter (Retry-After honoured), until
 *									   the code is about to expire -> expired,
 *									   never late (an SMS needs 5 s of life
 *									   left, a call plivo_otp_min_call_life())
 *	500, 502, 504 and other 5xx, a failure after the request left (timeout,
 *	connection dropped), a 2xx without a UUID, or a stop while a request
 *	was in flight: Plivo may have taken it
 *									-> unknown, never re-sent; an SMS's body
 *									   wiped, a call's kept
 *
 * The unknown rule makes delivery at most once: Plivo's APIs have no
 * idempotency key, so re-sending after an ambiguous outcome could send the
 * SMS, or place the call, twice.  The code stays valid; the application
 * sees 'unknown' in otp_status and can offer "send again".
 *
 * A call's body (its sealed sentence) outlives the request because the
 * call fetches its script later, from the listener, which wipes the body
 * once it served it.  An unknown call keeps its body too: if Plivo did
 * place it, its fetch can still be served (the listener then adopts the
 * fetch's RequestUUID).  A body no fetch took is wiped by the dispatcher's
 * one-second tick once the code expired or is no longer pending
 * (queue.c, wipe_call_bodies), so a sealed code never outlives its use.
 *
 * Outcomes wait in a list (their own memory context) until they are
 * recorded: all of them with one statement (queue.c, store_outcomes: the
 * arrays of ids, states, ... unnested), inside the unit of work that also
 * claims the next rows, so that a loop turn commits once.  An outcome whose
 * row someone holds locked waits for a later turn.  If the statement fails
 * (a row's trigger or constraint refuses its outcome), that batch is
 * recorded again one outcome per subtransaction, so one row that cannot
 * take its outcome never holds up the others; the one that fails is
 * logged and its row made 'unknown' with the reason (or, if even that
 * fails, left for the next dispatcher's recovery).  If the unit of work
 * fails, its outcomes stay and are recorded on a later turn.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "dispatcher.h"

#define MAX_BACKOFF_SECS 60
/* Outcomes per statement (see queue.c, store_outcomes). */
#define RECORD_BATCH 1000
/* Plivo's error text kept on the row, at most (bytes). */
#define MAX_ERROR_TEXT 500
#define MAX_UUID_LEN 64

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
static TimestampTz waiting_since = 0;	/* when the first of outcomes came, or 0 */

/* The transfer being judged, so that an ERROR meanwhile does not lose it. */
static HttpTransfer *judging = NULL;

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
	if (outcomes == NIL)
		waiting_since = GetCurrentTimestamp();
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
		/* tries is whatever the row held: 1 << 0 .. 1 << 10, never beyond */
		delay = Min(MAX_BACKOFF_SECS, 1 << (Max(Min(m->tries, 11), 1) - 1));
		delay *= 0.5 + 0.5 * pg_prng_double(&pg_global_prng_state);
	}
	if (m->expires_at - now <= (int64) (delay * USECS_PER_SEC) +
		(int64) (m->voice ? plivo_otp_min_call_life() : PLIVO_MIN_MESSAGE_EXPIRY) * USECS_PER_SEC)
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
	/* (a second attempt refused: libcurl's errbuf would name our callback) */
	const char *what = t->attempts > 1 ? "the connection closed before any answer" :
		t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result);

	if (t->request_sent)
		plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_UNKNOWN, NULL, 0,
							  psprintf("no answer after the request was sent (%s); not re-sent", what), 0);
	else
		retry_or_expire(m, 0, psprintf("request not sent: %s", what), -1);
}

/*
 * A string from Plivo's answer fit to store: valid in the database
 * encoding (the JSON parser passes bytes through), at most maxlen bytes;
 * NULL if it is neither.
 */
static char *
storable(const char *s, int maxlen, bool clip)
{
	int			len = s ? strlen(s) : 0;

	if (s == NULL || !pg_verifymbstr(s, len, true))
		return NULL;
	if (len > maxlen && !clip)
		return NULL;
	return pnstrdup(s, pg_mbcliplen(s, len, maxlen));
}

/* Decide what an HTTP answer means; see the rules at the top. */
static void
judge_answer(HttpTransfer *t)
{
	InflightMessage *m = (InflightMessage *) t->owner;
	char	   *uuid = NULL;
	char	   *error = NULL;
	long		status = t->http_status;
	char	   *text;

	(void) plivo_otp_parse_send_response(t->response, &uuid, &error);
	uuid = storable(uuid, MAX_UUID_LEN, false);
	error = error ? storable(error, MAX_ERROR_TEXT, true) : NULL;
	text = psprintf("HTTP %ld%s%s", status, error ? ": " : "", error ? error : "");
	if (status >= 200 && status < 300)
	{
		if (uuid)
			plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_ACCEPTED, uuid, status, NULL, 0);
		else
			plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_UNKNOWN, NULL, status,
								  m->voice ? "Plivo answered without a request UUID; not called again" :
								  "Plivo answered without a message UUID; not re-sent", 0);
	}
	else if (status == 429 || status == 503)
		retry_or_expire(m, status, text, t->retry_after);
	else if (status >= 500)
		plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_UNKNOWN, NULL, status,
							  psprintf(m->voice ? "%s; Plivo may have placed the call, not called again" :
									   "%s; Plivo may have taken the message, not re-sent", text), 0);
	else
	{
		ereport(LOG,
				(errmsg("plivo_otp dispatcher: Plivo refused the %s to %s",
						m->voice ? "call" : "message", m->masked_phone),
				 errdetail_internal("%s", plivo_otp_sanitize_error(text))));
		plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_REFUSED, NULL, status, text, 0);
	}
}

/* Decide what a finished request means; the caller then frees it. */
void
plivo_otp_judge_transfer(HttpTransfer *t)
{
	judging = t;
	if (t->result != CURLE_OK)
		judge_failed_transfer(t);
	else
		judge_answer(t);
	judging = NULL;
	plivo_otp_window_note(t->result != CURLE_OK ? PLIVO_OTP_NO_ANSWER :
						  t->http_status == 429 || t->http_status >= 500 ? PLIVO_OTP_OVERLOADED :
						  PLIVO_OTP_ANSWERED, t->started_at);
}

/*
 * After an ERROR escaped a step of the loop: the transfer that was being
 * judged, if any, gets the outcome that keeps the at-most-once rule, and is
 * freed.
 */
void
plivo_otp_outcomes_after_error(void)
{
	HttpTransfer *t = judging;
	InflightMessage *m;

	if (t == NULL)
		return;
	judging = NULL;
	m = (InflightMessage *) t->owner;
	if (t->request_sent)
		plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_UNKNOWN, NULL, (int) t->http_status,
							  "Plivo's answer could not be judged; not re-sent", 0);
	else
		plivo_otp_add_outcome(&m->id, PLIVO_OTP_DISPATCH_PENDING, NULL, 0,
							  "request not sent", GetCurrentTimestamp());
	plivo_otp_free_transfer(t);
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

/* When the oldest waiting outcome came (0 when none waits): its hold starts then. */
TimestampTz
plivo_otp_outcomes_waiting_since(void)
{
	return outcomes == NIL ? 0 : waiting_since;
}

/* Forget the outcomes added after the first n (judged in a claim that rolled back). */
void
plivo_otp_outcomes_truncate(int n)
{
	outcomes = list_truncate(outcomes, n);
}

/* ---- recording ---- */

/* The outcomes being recorded by one unit of work. */
typedef struct RecordBatch
{
	Outcome   **all;
	bool	   *waiting;		/* all[i]'s row is held locked: a later turn */
	int			from;			/* the statement's outcomes: all[from .. to) */
	int			to;
	TimestampTz now;
	Outcome    *current;		/* the row being recorded one by one */
	const char *why;			/* its failure, for record_failure */
} RecordBatch;

static void
record_statement(void *arg)
{
	RecordBatch *b = (RecordBatch *) arg;

	plivo_otp_queue_record_batch(b->all + b->from, b->to - b->from, b->now, b->waiting + b->from);
}

static void
record_one(void *arg)
{
	RecordBatch *b = (RecordBatch *) arg;

	plivo_otp_queue_record(b->current, b->now);
}

static void
record_failure(void *arg)
{
	RecordBatch *b = (RecordBatch *) arg;

	plivo_otp_queue_record_failure(&b->current->id, b->why, b->now);
}

/* Errors that say "not now" rather than "never": the outcome waits. */
static bool
transient(const ErrorData *error)
{
	return error->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
		error->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
		error->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE;
}

/* An outcome its row refused: log it, and make the row say so if it can. */
static void
record_poisoned(RecordBatch *b, ErrorData *error)
{
	Outcome    *o = b->current;
	char	   *id = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&o->id)));
	char	   *message = plivo_otp_sanitize_error(error->message);
	ErrorData  *again;

	ereport(LOG,
			(errmsg("plivo_otp dispatcher could not record outcome \"%s\" of message %s",
					plivo_otp_dispatch_state_name(o->state), id),
			 errdetail_internal("%s", message)));
	b->why = psprintf("outcome %s could not be recorded (%s); not re-sent",
					  plivo_otp_dispatch_state_name(o->state), message);
	if (!plivo_otp_try_subtransaction(record_failure, b, &again))
		ereport(LOG,
				(errmsg("plivo_otp dispatcher left message %s as it is", id),
				 errdetail_internal("%s", plivo_otp_sanitize_error(again->message)),
				 errhint("The next dispatcher to start marks it unknown.")));
}

/*
 * The statement refused the batch all[from .. to) (a row's trigger or
 * constraint): each outcome on its own, in a subtransaction of its own, so
 * the one row that refuses its outcome holds up no other.  Marks
 * waiting[i] for those whose row someone holds.
 */
static void
record_one_by_one(RecordBatch *b)
{
	ErrorData  *error;

	for (int i = b->from; i < b->to; i++)
	{
		b->current = b->all[i];
		if (plivo_otp_try_subtransaction(record_one, b, &error))
			continue;
		if (transient(error))
			b->waiting[i] = true;	/* someone holds the row: a later turn */
		else
			record_poisoned(b, error);
	}
}

/* The UUIDs a batch recorded, whose waiting callbacks to apply. */
typedef struct AcceptedUuids
{
	const char **uuids;
	int			n;
} AcceptedUuids;

/*
 * In a subtransaction of its own: a failure there undoes no outcome.  Only
 * the batch's UUIDs: a pass over every waiting event after each batch cost
 * a quarter of the dispatcher's time in a drain (perf); the one-second
 * backstop makes that pass.
 */
static void
apply_waiting_events(void *arg)
{
	AcceptedUuids *a = (AcceptedUuids *) arg;

	(void) plivo_otp_apply_waiting_events_for(a->uuids, a->n);
}

/*
 * Inside a unit of work (the claim's, or one of its own): record every
 * waiting outcome, RECORD_BATCH of them per statement, moving *next_due to
 * the earliest retry; plivo_otp_outcomes_settle then forgets those recorded
 * (or given up) if the unit commits.
 */
void
plivo_otp_record_outcomes_here(TimestampTz *next_due)
{
	int			n = list_length(outcomes);
	RecordBatch b = {0};
	AcceptedUuids accepted = {0};
	ErrorData  *error;

	if (n == 0)
		return;
	b.all = palloc(n * sizeof(Outcome *));
	b.waiting = palloc0(n * sizeof(bool));
	accepted.uuids = palloc(n * sizeof(char *));
	b.now = GetCurrentTimestamp();
	for (int i = 0; i < n; i++)
		b.all[i] = list_nth(outcomes, i);
	for (b.from = 0; b.from < n; b.from = b.to)
	{
		b.to = Min(n, b.from + RECORD_BATCH);
		if (!plivo_otp_try_subtransaction(record_statement, &b, &error))
		{
			if (transient(error))
			{
				for (int i = b.from; i < b.to; i++)
					b.waiting[i] = true;
				continue;
			}
			FreeErrorData(error);
			memset(b.waiting + b.from, 0, (b.to - b.from) * sizeof(bool));
			record_one_by_one(&b);
		}
	}
	for (int i = 0; i < n; i++)
	{
		Outcome    *o = b.all[i];

		if (b.waiting[i])
			continue;
		o->recorded = true;
		if (o->next_try_at && (*next_due == 0 || o->next_try_at < *next_due))
			*next_due = o->next_try_at;
		if (o->provider_uuid != NULL)
			accepted.uuids[accepted.n++] = o->provider_uuid;
	}
	/* Callbacks that beat this commit are waiting for these UUIDs. */
	if (accepted.n > 0)
		(void) plivo_otp_run_subtransaction(apply_waiting_events, &accepted);
}

static void
free_outcome(Outcome *o)
{
	if (o->provider_uuid)
		pfree(o->provider_uuid);
	if (o->error)
		pfree(o->error);
	pfree(o);
}

/*
 * After the unit of work that recorded outcomes: if it committed, the
 * recorded ones are forgotten; if not, they all wait for a later turn.
 */
void
plivo_otp_outcomes_settle(bool committed)
{
	List	   *left = NIL;
	ListCell   *lc;

	foreach(lc, outcomes)
	{
		Outcome    *o = (Outcome *) lfirst(lc);

		if (committed && o->recorded)
			free_outcome(o);
		else
		{
			o->recorded = false;
			left = lappend(left, o);
		}
	}
	list_free(outcomes);
	outcomes = NIL;
	if (left == NIL)
		MemoryContextReset(outcome_context);
	else
	{
		MemoryContext old = MemoryContextSwitchTo(outcome_context);

		outcomes = list_copy(left);
		MemoryContextSwitchTo(old);
	}
}

static void
record_work(void *arg)
{
	plivo_otp_record_outcomes_here((TimestampTz *) arg);
}

/*
 * Record every waiting outcome in a unit of work of its own, moving
 * *next_due to the earliest retry.  False if it failed: they all stay for
 * the next turn, as do outcomes whose rows were locked.
 */
bool
plivo_otp_record_outcomes(TimestampTz *next_due)
{
	bool		ok;

	if (outcomes == NIL)
		return true;
	ok = plivo_otp_run_work("recording Plivo outcomes", record_work, next_due);
	plivo_otp_outcomes_settle(ok);
	return ok;
}
