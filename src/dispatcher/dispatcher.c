/*-------------------------------------------------------------------------
 *
 * dispatcher.c
 *	  The dispatcher background worker: drains the outbound queue to
 *	  Plivo's REST API.
 *
 * One single-threaded event loop waits on its latch (set at commit of any
 * transaction that queued a message, and on SIGHUP/SIGTERM), on libcurl's
 * sockets (one epoll descriptor, see http_multi.c) and on a timeout (the
 * earliest of libcurl's timer, the next retry, the rate limit and a
 * backstop).  Database work happens in short transactions that never wait
 * on the network:
 *
 *	claim	due rows FOR UPDATE SKIP LOCKED, mark them 'sending', commit;
 *			then start their requests (at most max_inflight at once and
 *			max_requests_per_second);
 *	record	finished requests, in batches, in one short transaction.
 *
 * Outcomes (dispatch_state; Plivo's own words go to delivery_status only):
 *	2xx with a message UUID			-> accepted, body wiped
 *	400/401/403/404 and other 4xx	-> refused, body wiped, not retried
 *	429, 5xx, and failures before any byte of the request left (connect,
 *	DNS, TLS) -> pending again after back-off with jitter (Retry-After
 *	honoured), until the code is about to expire -> expired, never late
 *	a failure after the request left (timeout, connection dropped, 2xx
 *	without a UUID), or a crash while a request was in flight
 *									-> unknown, body wiped, never re-sent
 *
 * The last rule makes delivery at most once: Plivo's Message API has no
 * idempotency key, so re-sending after an ambiguous outcome could send the
 * SMS twice.  The code stays valid; the application sees 'unknown' in
 * otp_status and can offer "send again" (a new otp_send).
 *
 * The worker runs only on a primary (BgWorkerStart_RecoveryFinished); after
 * promotion the postmaster starts it and it carries on from the replicated
 * queue.  Before touching the tables it checks that the extension exists
 * and locks the queue conditionally, so DROP EXTENSION never waits on it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "listener/delivery.h"
#include "dispatcher/plivo_rest.h"
#include "plivo_otp.h"
#include "common/spi.h"
#include "common/worker.h"

PGDLLEXPORT void plivo_otp_dispatcher_main(Datum main_arg);

/* How long the worker sleeps with nothing to do: a backstop for rows that
 * arrive without a wake-up (restores, prepared transactions). */
#define BACKSTOP_MS 5000
#define EXPIRE_EVERY_MS 1000
#define PURGE_EVERY_MS 60000
#define MAX_BACKOFF_SECS 60
#define PURGE_BATCH 1000

/* A message in flight: what recording its outcome needs. */
typedef struct InflightMessage
{
	pg_uuid_t	id;
	TimestampTz expires_at;
	int			tries;
	char	   *masked_phone;
} InflightMessage;

/* A finished request's result, waiting to be recorded. */
typedef struct Outcome
{
	pg_uuid_t	id;
	const char *state;			/* accepted, refused, pending, expired, unknown */
	char	   *provider_uuid;
	int			http_status;	/* 0 for none */
	char	   *error;
	TimestampTz next_try_at;	/* for pending */
} Outcome;

static MemoryContext dispatcher_context;
static MemoryContext outcome_context;
static MemoryContext loop_context;
static List *outcomes = NIL;

static PlivoConfig config;
static bool configured = false;
static bool recovered = false;

/*
 * A token bucket for max_requests_per_second.  Its burst is a tenth of a
 * second's worth (at least one request): any one-second window then holds
 * at most rate + burst requests, also as Plivo sees them with some network
 * jitter.  A burst of a whole second would allow almost twice the rate.
 */
static double tokens;
static TimestampTz tokens_at;

static double
rate_burst(void)
{
	return Max(1.0, plivo_otp_max_requests_per_second / 10.0);
}

static TimestampTz next_due = 0;	/* earliest next_try_at seen, 0 if none */
static TimestampTz next_expire_at = 0;
static TimestampTz next_purge_at = 0;
static TimestampTz next_backstop_at = 0;	/* claim at least this often */

static PlivoOtpStatement claim_due = {
	"WITH due AS ("
	" SELECT m.id FROM plivo_otp.messages m"
	" JOIN plivo_otp.verifications v ON v.id = m.verification_id AND v.state = 'pending'"
	" WHERE m.dispatch_state = 'pending' AND m.next_try_at <= $1"
	" ORDER BY m.next_try_at LIMIT $2 FOR UPDATE OF m SKIP LOCKED)"
	" UPDATE plivo_otp.messages m SET dispatch_state = 'sending', tries = tries + 1,"
	"  lease_until = $3, updated_at = $1"
	" FROM due WHERE m.id = due.id"
	" RETURNING m.id, m.phone, m.body, m.expires_at, m.tries",
	3, {TIMESTAMPTZOID, INT4OID, TIMESTAMPTZOID}
};

/* Same rows as claim_due would take, so an unclaimable row cannot keep us spinning. */
static PlivoOtpStatement earliest_due = {
	"SELECT min(m.next_try_at) FROM plivo_otp.messages m"
	" JOIN plivo_otp.verifications v ON v.id = m.verification_id AND v.state = 'pending'"
	" WHERE m.dispatch_state = 'pending'",
	0, {0}
};

static PlivoOtpStatement record_outcome = {
	"UPDATE plivo_otp.messages SET dispatch_state = $2, provider_uuid = $3,"
	" http_status = $4, last_error = $5, next_try_at = coalesce($6, next_try_at),"
	" lease_until = NULL, updated_at = $7,"
	" body = CASE WHEN $2 = 'pending' THEN body END"
	" WHERE id = $1 AND dispatch_state = 'sending'",
	7, {UUIDOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/* Codes about to expire are not sent: Plivo takes message_expiry >= 5 s. */
static PlivoOtpStatement expire_unsendable = {
	"UPDATE plivo_otp.messages SET dispatch_state = 'expired', body = NULL,"
	" last_error = 'code expired before it could be sent', updated_at = $1"
	" WHERE dispatch_state = 'pending' AND expires_at <= $2",
	2, {TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/* At start, rows left 'sending' were in flight when a dispatcher stopped. */
static PlivoOtpStatement recover_in_flight = {
	"UPDATE plivo_otp.messages SET dispatch_state = 'unknown', body = NULL,"
	" lease_until = NULL, updated_at = $1,"
	" last_error = 'dispatcher stopped while the request was in flight; not re-sent'"
	" WHERE dispatch_state = 'sending'",
	1, {TIMESTAMPTZOID}
};

static PlivoOtpStatement purge_old = {
	"DELETE FROM plivo_otp.verifications WHERE id IN ("
	" SELECT v.id FROM plivo_otp.verifications v WHERE v.expires_at < $1"
	" AND NOT EXISTS (SELECT 1 FROM plivo_otp.messages m"
	"   WHERE m.verification_id = v.id AND m.dispatch_state = 'sending')"
	" LIMIT " CppAsString2(PURGE_BATCH) ")",
	1, {TIMESTAMPTZOID}
};

static PlivoOtpStatement purge_events = {
	"DELETE FROM plivo_otp.delivery_events WHERE id IN ("
	" SELECT id FROM plivo_otp.delivery_events WHERE received_at < $1"
	" LIMIT " CppAsString2(PURGE_BATCH) ")",
	1, {TIMESTAMPTZOID}
};

/*
 * Nonces are remembered for a day: Plivo retries a callback for minutes, and
 * a replay of an older one finds its event already stored (a duplicate).
 */
#define NONCE_WINDOW_SECS (24 * 3600)
static PlivoOtpStatement purge_nonces = {
	"DELETE FROM plivo_otp.callback_nonces WHERE nonce IN ("
	" SELECT nonce FROM plivo_otp.callback_nonces WHERE seen_at < $1"
	" LIMIT " CppAsString2(PURGE_BATCH) ")",
	1, {TIMESTAMPTZOID}
};

static void
clear_dispatcher_latch(int code, Datum arg)
{
	plivo_otp_set_dispatcher_latch(NULL);
	plivo_otp_set_dispatcher_inflight(0);
}

/* (Re)read settings and the auth token; say clearly what is missing. */
static void
load_config(void)
{
	MemoryContext old = MemoryContextSwitchTo(dispatcher_context);
	char	   *why = NULL;
	char	   *token;

	if (config.auth_token)
	{
		explicit_bzero(config.auth_token, strlen(config.auth_token));
		pfree(config.auth_token);
	}
	memset(&config, 0, sizeof(config));
	configured = false;

	if (plivo_otp_auth_id[0] == '\0')
		why = "plivo_otp.auth_id is not set";
	else if (plivo_otp_sender[0] == '\0')
		why = "plivo_otp.sender is not set";
	else if (!plivo_otp_check_url(plivo_otp_api_url, &config.api_url_loopback, &why))
		why = psprintf("plivo_otp.api_url: %s", why);
	else if ((token = plivo_otp_read_auth_token(&why)) != NULL)
	{
		config.auth_id = pstrdup(plivo_otp_auth_id);
		config.auth_token = token;
		config.api_url = pstrdup(plivo_otp_api_url);
		while (strlen(config.api_url) > 0 && config.api_url[strlen(config.api_url) - 1] == '/')
			config.api_url[strlen(config.api_url) - 1] = '\0';
		config.sender = pstrdup(plivo_otp_sender);
		config.message_log = pstrdup(plivo_otp_message_log);
		config.request_timeout_ms = plivo_otp_request_timeout;
		if (plivo_otp_public_url[0] != '\0')
		{
			char	   *base = pstrdup(plivo_otp_public_url);

			while (strlen(base) > 0 && base[strlen(base) - 1] == '/')
				base[strlen(base) - 1] = '\0';
			config.callback_url = psprintf("%s/plivo/sms-status", base);
		}
		configured = true;
	}
	MemoryContextSwitchTo(old);

	if (configured)
		ereport(LOG,
				(errmsg("plivo_otp dispatcher sends to %s as %s", config.api_url, config.auth_id)));
	else
		ereport(LOG,
				(errmsg("plivo_otp dispatcher is not configured and sends nothing: %s", why),
				 errhint("Queued messages wait until it is configured, or expire.")));
	tokens = rate_burst();
	tokens_at = GetCurrentTimestamp();
}

static void
add_outcome(const pg_uuid_t *id, const char *state, const char *provider_uuid,
			int http_status, const char *error, TimestampTz next_try_at)
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

	if (strcmp(state, "accepted") == 0)
		plivo_otp_count(PLIVO_OTP_COUNTER_ACCEPTED, 1);
	else if (strcmp(state, "pending") == 0)
		plivo_otp_count(PLIVO_OTP_COUNTER_RETRIED, 1);
	else if (strcmp(state, "refused") == 0)
		plivo_otp_count(PLIVO_OTP_COUNTER_REFUSED, 1);
	else if (strcmp(state, "expired") == 0)
		plivo_otp_count(PLIVO_OTP_COUNTER_EXPIRED, 1);
	else if (strcmp(state, "unknown") == 0)
		plivo_otp_count(PLIVO_OTP_COUNTER_UNKNOWN, 1);
	if (error && strcmp(state, "accepted") != 0)
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
		add_outcome(&m->id, "expired", NULL, http_status,
					psprintf("code expired while retrying: %s", error), 0);
		return;
	}
	add_outcome(&m->id, "pending", NULL, http_status, error,
				now + (int64) (delay * USECS_PER_SEC));
}

/* Decide what a finished request means; see the table at the top. */
static void
judge_transfer(HttpTransfer *t)
{
	InflightMessage *m = (InflightMessage *) t->owner;
	char	   *uuid = NULL;
	char	   *error = NULL;
	long		status = t->http_status;

	if (t->result != CURLE_OK)
	{
		const char *what = t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result);

		if (t->request_sent)
			add_outcome(&m->id, "unknown", NULL, 0,
						psprintf("no answer after the request was sent (%s); not re-sent", what), 0);
		else
			retry_or_expire(m, 0, psprintf("request not sent: %s", what), -1);
		return;
	}

	(void) plivo_otp_parse_send_response(t->response, &uuid, &error);
	if (status >= 200 && status < 300)
	{
		if (uuid)
			add_outcome(&m->id, "accepted", uuid, status, NULL, 0);
		else
			add_outcome(&m->id, "unknown", NULL, status,
						"Plivo answered without a message UUID; not re-sent", 0);
	}
	else if (status == 429 || status >= 500)
		retry_or_expire(m, status, psprintf("HTTP %ld%s%s", status, error ? ": " : "",
											error ? error : ""),
						status == 429 ? t->retry_after : -1);
	else
	{
		char	   *text = psprintf("HTTP %ld%s%s", status, error ? ": " : "", error ? error : "");

		ereport(LOG,
				(errmsg("plivo_otp: Plivo refused the message to %s: %s", m->masked_phone,
						plivo_otp_sanitize_error(text))));
		add_outcome(&m->id, "refused", NULL, status, text, 0);
	}
}

/* Free a transfer and what the dispatcher keeps about its message. */
static void
free_transfer(HttpTransfer *t)
{
	pfree(((InflightMessage *) t->owner)->masked_phone);
	pfree(t->owner);
	plivo_otp_http_free(t);
}

static void
collect_finished(void)
{
	HttpTransfer *t;

	while ((t = plivo_otp_http_next_done()) != NULL)
	{
		judge_transfer(t);
		free_transfer(t);
	}
	plivo_otp_set_dispatcher_inflight(plivo_otp_http_inflight());
}

static void
record_outcomes_work(void)
{
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();
	bool		accepted = false;

	foreach(lc, outcomes)
	{
		Outcome    *o = lfirst(lc);
		Datum		args[7];
		char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

		args[0] = UUIDPGetDatum(&o->id);
		args[1] = CStringGetTextDatum(o->state);
		args[2] = o->provider_uuid ? CStringGetTextDatum(o->provider_uuid) : (Datum) 0;
		nulls[2] = o->provider_uuid ? ' ' : 'n';
		args[3] = Int32GetDatum(o->http_status);
		nulls[3] = o->http_status ? ' ' : 'n';
		args[4] = o->error ? CStringGetTextDatum(o->error) : (Datum) 0;
		nulls[4] = o->error ? ' ' : 'n';
		args[5] = TimestampTzGetDatum(o->next_try_at);
		nulls[5] = o->next_try_at ? ' ' : 'n';
		args[6] = TimestampTzGetDatum(now);
		plivo_otp_exec(&record_outcome, args, nulls, false, 0);
		if (o->next_try_at && (next_due == 0 || o->next_try_at < next_due))
			next_due = o->next_try_at;
		if (o->provider_uuid)
			accepted = true;
	}
	/* Callbacks that beat this commit are waiting for these UUIDs. */
	if (accepted)
		plivo_otp_apply_waiting_events();
}

static void
record_outcomes(void)
{
	if (outcomes == NIL)
		return;
	if (plivo_otp_run_work("recording Plivo outcomes", record_outcomes_work))
	{
		outcomes = NIL;
		MemoryContextReset(outcome_context);
	}
	/* On failure they stay queued here and are recorded on the next turn. */
}

/* Refill the token bucket of max_requests_per_second. */
static void
refill_tokens(TimestampTz now)
{
	double		rate = plivo_otp_max_requests_per_second;

	tokens = Min(rate_burst(), tokens + rate * (double) (now - tokens_at) / USECS_PER_SEC);
	tokens_at = now;
}

static int	claim_limit;
static List *to_start = NIL;	/* requests of the current claim, started once it commits */

static void
claim_work(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum		args[3];
	bool		isnull;
	int			n;

	args[0] = TimestampTzGetDatum(now);
	args[1] = Int32GetDatum(claim_limit);
	args[2] = TimestampTzGetDatum(now + ((int64) config.request_timeout_ms + 30000) * 1000);
	n = plivo_otp_exec(&claim_due, args, NULL, false, 0);

	for (int i = 0; i < n; i++)
	{
		pg_uuid_t	id = *DatumGetUUIDP(plivo_otp_get(i, 1, &isnull));
		char	   *phone = plivo_otp_get_text(i, 2);
		bytea	   *body = DatumGetByteaPP(plivo_otp_get(i, 3, &isnull));
		TimestampTz expires_at = DatumGetTimestampTz(plivo_otp_get(i, 4, &isnull));
		int			tries = DatumGetInt32(plivo_otp_get(i, 5, &isnull));
		int64		life = (expires_at - now) / USECS_PER_SEC;
		char	   *text;
		MemoryContext old;
		InflightMessage *m;
		HttpTransfer *t;

		if (isnull || life < PLIVO_MIN_MESSAGE_EXPIRY)
		{
			add_outcome(&id, "expired", NULL, 0, "code expired before it could be sent", 0);
			continue;
		}
		text = plivo_otp_decrypt_body(&id, body);
		if (text == NULL)
		{
			add_outcome(&id, "refused", NULL, 0,
						"not sent: the queued body does not authenticate (was the key file replaced?)", 0);
			continue;
		}

		old = MemoryContextSwitchTo(dispatcher_context);
		m = palloc(sizeof(InflightMessage));
		m->id = id;
		m->expires_at = expires_at;
		m->tries = tries;
		m->masked_phone = plivo_otp_mask_phone(phone);
		t = plivo_otp_message_request(&config, phone, text,
									  (int) Min(life, PLIVO_MAX_MESSAGE_EXPIRY));
		t->owner = m;
		to_start = lappend(to_start, t);
		MemoryContextSwitchTo(old);
		explicit_bzero(text, strlen(text));
	}

	/* When is the next row due?  (Now, if the batch was cut short.) */
	plivo_otp_exec(&earliest_due, NULL, NULL, true, 1);
	{
		Datum		d = plivo_otp_get(0, 1, &isnull);

		next_due = isnull ? 0 : DatumGetTimestampTz(d);
	}
	/* Due rows that could not be claimed (locked by someone): look again soon, not at once. */
	if (n == 0 && next_due != 0 && next_due <= now)
		next_due = now + 250 * 1000;
}

static void
claim_and_start(void)
{
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;
	int			room;
	int			outcomes_before;

	refill_tokens(now);
	room = Min(plivo_otp_max_inflight - plivo_otp_http_inflight(), (int) tokens);
	if (room <= 0)
		return;
	claim_limit = room;
	to_start = NIL;
	outcomes_before = list_length(outcomes);
	if (plivo_otp_run_work("claiming due messages", claim_work))
	{
		/*
		 * Only now that the claim has committed: a request started inside a
		 * claim that then rolled back would be sent, and its row, pending
		 * again, claimed and sent a second time.
		 */
		foreach(lc, to_start)
		{
			plivo_otp_http_start((HttpTransfer *) lfirst(lc));
			tokens -= 1;
		}
	}
	else
	{
		foreach(lc, to_start)
			free_transfer((HttpTransfer *) lfirst(lc));
		/* Outcomes judged inside the rolled-back claim no longer apply. */
		outcomes = list_truncate(outcomes, outcomes_before);
		next_due = 0;			/* the backstop timer tries again */
	}
	list_free(to_start);
	to_start = NIL;
	plivo_otp_set_dispatcher_inflight(plivo_otp_http_inflight());
}

static void
expire_work(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum		args[2];
	int			n;

	args[0] = TimestampTzGetDatum(now);
	args[1] = TimestampTzGetDatum(now + PLIVO_MIN_MESSAGE_EXPIRY * USECS_PER_SEC);
	n = plivo_otp_exec(&expire_unsendable, args, NULL, false, 0);
	if (n > 0)
		plivo_otp_count(PLIVO_OTP_COUNTER_EXPIRED, n);

	/* A backstop for callbacks that raced the recording of their UUID. */
	plivo_otp_apply_waiting_events();
}

static void
purge_work(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum		args[1];

	args[0] = TimestampTzGetDatum(now - (int64) plivo_otp_retention * USECS_PER_SEC);
	plivo_otp_exec(&purge_old, args, NULL, false, 0);
	plivo_otp_exec(&purge_events, args, NULL, false, 0);
	args[0] = TimestampTzGetDatum(now - NONCE_WINDOW_SECS * USECS_PER_SEC);
	plivo_otp_exec(&purge_nonces, args, NULL, false, 0);
}

static void
recover_work(void)
{
	Datum		args[1];
	int			n;

	args[0] = TimestampTzGetDatum(GetCurrentTimestamp());
	n = plivo_otp_exec(&recover_in_flight, args, NULL, false, 0);
	if (n > 0)
	{
		plivo_otp_count(PLIVO_OTP_COUNTER_UNKNOWN, n);
		ereport(LOG,
				(errmsg("plivo_otp dispatcher marked %d message(s) left in flight as unknown", n),
				 errdetail("A dispatcher stopped while their requests were in flight; they are not re-sent, so no SMS goes out twice.")));
	}
}

/* SIGTERM: stop at once; requests that had not left go back to the queue. */
static void
abandon_transfer(HttpTransfer *t)
{
	InflightMessage *m = (InflightMessage *) t->owner;

	if (t->request_sent)
		add_outcome(&m->id, "unknown", NULL, 0,
					"dispatcher stopped after the request was sent; not re-sent", 0);
	else
		add_outcome(&m->id, "pending", NULL, 0, "dispatcher stopped before sending",
					GetCurrentTimestamp());
	free_transfer(t);
}

/* How long to sleep: the earliest of every deadline the loop keeps. */
static long
compute_timeout(TimestampTz now)
{
	long		timeout = BACKSTOP_MS;
	long		curl_ms = plivo_otp_http_timeout_ms();

	if (curl_ms >= 0)
		timeout = Min(timeout, curl_ms);
	if (outcomes != NIL)
		timeout = Min(timeout, 100);	/* a failed record is retried soon */
	if (configured && recovered && next_due != 0 &&
		plivo_otp_http_inflight() < plivo_otp_max_inflight)
	{
		/* (At max_inflight, a finishing request wakes us through its socket.) */
		long		due_ms = (long) Max(0, (next_due - now) / 1000);

		if (tokens < 1)
			due_ms = Max(due_ms, (long) ((1 - tokens) * 1000 / plivo_otp_max_requests_per_second) + 1);
		timeout = Min(timeout, due_ms);
	}
	timeout = Min(timeout, (long) Max(0, (next_expire_at - now) / 1000));
	return timeout;
}

void
plivo_otp_dispatcher_main(Datum main_arg)
{
	WaitEventSet *wait_set;

	plivo_otp_worker_connect("plivo_otp dispatcher");

	dispatcher_context = AllocSetContextCreate(TopMemoryContext, "plivo_otp dispatcher",
											   ALLOCSET_DEFAULT_SIZES);
	outcome_context = AllocSetContextCreate(dispatcher_context, "plivo_otp outcomes",
											ALLOCSET_DEFAULT_SIZES);
	plivo_otp_http_init();
	plivo_otp_set_dispatcher_latch(MyLatch);
	plivo_otp_set_dispatcher_pid(MyProcPid);
	before_shmem_exit(clear_dispatcher_latch, (Datum) 0);

	/* Whatever a turn of the loop allocates lives until the next turn. */
	loop_context = AllocSetContextCreate(dispatcher_context, "plivo_otp dispatcher loop",
										 ALLOCSET_DEFAULT_SIZES);

	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, plivo_otp_http_epoll_fd(), NULL, NULL);

	ereport(LOG, (errmsg("plivo_otp dispatcher started")));
	load_config();

	for (;;)
	{
		WaitEvent	events[3];
		bool		socket_ready = false;
		bool		latch_set = false;
		TimestampTz now = GetCurrentTimestamp();
		int			n;

		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);
		n = WaitEventSetWait(wait_set, compute_timeout(now), events, lengthof(events),
							 PG_WAIT_EXTENSION);
		for (int i = 0; i < n; i++)
		{
			if (events[i].events & WL_SOCKET_READABLE)
				socket_ready = true;
			if (events[i].events & WL_LATCH_SET)
				latch_set = true;
		}
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ShutdownRequestPending)
		{
			plivo_otp_http_abort_all(abandon_transfer);
			record_outcomes();
			/*
			 * Exit code 1, not 0: the postmaster unregisters a background
			 * worker that exits with 0, so pg_terminate_backend would stop
			 * dispatching until the next server restart.  At server
			 * shutdown the postmaster restarts nothing anyway.
			 */
			proc_exit(1);
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			load_config();
		}

		plivo_otp_http_drive(socket_ready);
		collect_finished();
		record_outcomes();

		if (!recovered)
			recovered = plivo_otp_run_work("recovering messages left in flight", recover_work);

		now = GetCurrentTimestamp();
		if (now >= next_expire_at)
		{
			plivo_otp_run_work("expiring unsendable messages", expire_work);
			next_expire_at = now + EXPIRE_EVERY_MS * 1000;
		}
		if (now >= next_purge_at)
		{
			plivo_otp_run_work("purging old verifications", purge_work);
			next_purge_at = now + PURGE_EVERY_MS * 1000;
		}

		/*
		 * Look for work only with a reason to: a commit set the latch, a row
		 * is due (a retry, or rows left when a batch was cut short), or the
		 * backstop for rows queued without a wake-up (prepared transactions,
		 * restores).  Socket events of running requests alone start no
		 * transaction.
		 */
		if (configured && recovered &&
			(latch_set || (next_due != 0 && next_due <= now) || now >= next_backstop_at))
		{
			next_backstop_at = now + BACKSTOP_MS * 1000;
			claim_and_start();
			/* Rows found expired or undecryptable while claiming. */
			record_outcomes();
		}
	}
}
