/*-------------------------------------------------------------------------
 *
 * dispatcher.c
 *	  The dispatcher background worker: drains the outbound queue to
 *	  Plivo's REST API.  This file is its loop, as named steps.
 *
 * One single-threaded event loop waits on its latch (set at commit of any
 * transaction that queued a message, and on SIGHUP/SIGTERM), on libcurl's
 * sockets (one epoll descriptor, see http.c) and on a timeout (the
 * earliest of libcurl's timer, the next retry, the rate limit, the timers
 * below and a one-second backstop).  Each turn:
 *
 *	wait		for the latch, a socket or the timeout; then reset the
 *				latch and read the shared wake-up counter, which every
 *				commit that queued a message bumps before setting the
 *				latch, so no wake-up is lost whatever the wait returned;
 *	interrupts	SIGTERM (stop at once), SIGHUP (reload the settings);
 *	drive		let libcurl make progress, judge finished requests
 *				(outcome.c); their outcomes are recorded by the claim
 *				below (one statement, in its transaction: one commit per
 *				turn), or on their own when the turn claims nothing;
 *	timers		find rows left in flight (once), then every second, each
 *				in a unit of work of its own: wipe the seals of codes that
 *				can no longer be re-delivered (expired, too little life
 *				left, locked by failures) and the bodies of calls whose
 *				code expired or is no longer pending (each wipe in its own
 *				subtransaction); mark stale rows unknown (those no one
 *				holds), expire unsendable rows, cancel rows whose code is
 *				no longer pending and apply late callbacks; queue voice
 *				fallbacks (fallback.c, at most FALLBACK_BUDGET_MS);
 *	claim		when woken, when a row is due or at the backstop: due
 *				rows FOR UPDATE SKIP LOCKED, in the order of each kind's
 *				index from where the previous claim stopped (claim_from),
 *				mark them 'sending', commit (queue.c); then start their
 *				requests (an SMS: Send
 *				Message; a call: Make Call), at most max_inflight at once
 *				in all, SMS at most max_requests_per_second and calls at
 *				most max_calls_per_second (rate_limit.c; each kind is due,
 *				claimed and rate-limited apart, and while calls can be
 *				placed neither kind takes the last slot of max_inflight,
 *				so a backlog of one never holds up the other).  Rows that
 *				had no room yet stay due, so they go as soon as a request
 *				finishes or a token comes;
 *	purge		old rows, every minute, and on every turn while a backlog
 *				remains (at most PURGE_BUDGET_MS of it, retention.c).
 *
 * No transaction is ever open while waiting on the network, and no step
 * waits on a lock someone else holds.  An ERROR that escapes a step is
 * logged and the loop goes on (the requests in flight stay in libcurl's
 * hands; one being judged or not yet started gets the outcome the
 * at-most-once rule gives it); only FATAL and worse end the worker.  The
 * worker runs only on a primary (BgWorkerStart_RecoveryFinished); after
 * promotion the postmaster starts it and it carries on from the replicated
 * queue.  Before touching the tables each unit of work checks that the
 * extension exists and locks it conditionally (common/worker.c), so DROP
 * EXTENSION never waits on it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "dispatcher.h"

PGDLLEXPORT void plivo_otp_dispatcher_main(Datum main_arg);

/*
 * Claim at least this often: the backstop for rows queued without a
 * wake-up (COMMIT PREPARED wakes nobody; restores; rows re-queued by hand).
 */
#define BACKSTOP_MS 1000
#define EXPIRE_EVERY_MS 1000
#define PURGE_EVERY_MS 60000
/* Purging gets at most this much of a turn while a backlog remains. */
#define PURGE_BUDGET_MS 50
/* The voice fallback's unit of work is canceled after this long: the loop is not held up. */
#define FALLBACK_BUDGET_MS 500
/* A claim reads each kind from its first pending row at least this often (see claim_from). */
#define RESCAN_EVERY_MS 1000
/*
 * While a backlog drains with requests in flight, a claim waits up to this
 * long for all of them to finish (see gathering).
 */
#define GATHER_US 1000
/*
 * Outcomes that no claim took wait this long after the first of them came
 * (or until OUTCOME_BATCH wait, or nothing is in flight) to be recorded
 * together: while requests finish one by one (a slow API at a high
 * max_inflight), one commit then covers many instead of each its own.
 */
#define OUTCOME_HOLD_MS 5
#define OUTCOME_BATCH 64
/* A failed record of outcomes is tried again after this long. */
#define OUTCOME_RETRY_MS 100
/* After an ERROR escaped a step: a pause, so that one repeating cannot spin. */
#define ERROR_PAUSE_MS 100

static MemoryContext dispatcher_context;
static MemoryContext loop_context;

static PlivoConfig config;
static bool configured = false;
static bool recovered = false;	/* the rows left in flight are known */

/* Earliest next_try_at seen of each kind (PlivoOtpRateKind), 0 if none. */
static TimestampTz next_due[PLIVO_OTP_NUM_RATES];
static TimestampTz next_expire_at = 0;
static TimestampTz next_purge_at = 0;
static TimestampTz next_backstop_at = 0;	/* claim at least this often */

/*
 * Where the next claim of each kind starts reading its index: just after
 * the last row the previous claim took, while that claim filled up (a
 * backlog is being drained); from the first pending row (not set) after a
 * claim that did not, after one that rolled back, and every
 * RESCAN_EVERY_MS.  So a claim during a backlog never walks the index
 * entries of the rows earlier claims took (dead until VACUUM removes them),
 * and a row that is due but behind the mark (one that was locked when the
 * claim passed it, or committed with an earlier next_try_at than the rows
 * already claimed) waits at most RESCAN_EVERY_MS.
 */
static QueueKey claim_from[PLIVO_OTP_NUM_RATES];
static TimestampTz next_rescan_at = 0;

static TimestampTz gather_until = 0;	/* a gathering claim's deadline, or 0 */
static TimestampTz outcomes_retry_at = 0;	/* after a failed record: not before then */

static uint64 seen_wakeups = 0;	/* the wake-up counter when last looked at */
static uint64 wakeups_now = 0;	/* ... and as read after this turn's wait */

/* Requests of the current claim not yet started (started once it commits). */
static List *to_start = NIL;

static void
clear_dispatcher_state(int code, Datum arg)
{
	plivo_otp_set_dispatcher_wants_wakes(false);
	plivo_otp_set_dispatcher_latch(NULL);
	plivo_otp_set_dispatcher_inflight(0);
}

static void note_due(TimestampTz t);
static void note_due_of(int kind, TimestampTz t);

/* Why the dispatcher cannot send, or NULL with config filled in. */
static char *
read_dispatch_config(void)
{
	char	   *why = NULL;
	char	   *token;

	if (plivo_otp_auth_id[0] == '\0')
		return "plivo_otp.auth_id is not set.";
	if (!plivo_otp_check_url(plivo_otp_api_url, &config.api_url_loopback, &why))
		return psprintf("plivo_otp.api_url: %s", why);
	if ((token = plivo_otp_read_auth_token(&why)) == NULL)
		return why;

	config.auth_id = pstrdup(plivo_otp_auth_id);
	config.auth_token = token;
	config.api_url = plivo_otp_base_url(plivo_otp_api_url);
	/* Optional: plivo_otp.senders may serve every destination. */
	if (plivo_otp_sender[0] != '\0')
		config.sender = pstrdup(plivo_otp_sender);
	config.message_log = pstrdup(plivo_otp_message_log);
	config.request_timeout_ms = plivo_otp_request_timeout;
	if (plivo_otp_public_url[0] != '\0')
	{
		config.public_base = plivo_otp_base_url(plivo_otp_public_url);
		config.callback_url = psprintf("%s/plivo/sms-status", config.public_base);
	}
	/* Calls need both; without them voice rows are refused (unsendable). */
	if (plivo_otp_voice_caller_id() != NULL)
		config.caller_id = pstrdup(plivo_otp_voice_caller_id());
	config.ring_timeout = plivo_otp_ring_timeout;
	config.call_time_limit = plivo_otp_call_time_limit;
	config.machine_detection = plivo_otp_voice_machine_detection;
	return NULL;
}

/* (Re)read settings and the auth token; say clearly what is missing. */
static void
load_dispatch_config(void)
{
	MemoryContext old = MemoryContextSwitchTo(dispatcher_context);
	char	   *why;

	if (config.auth_token)
		explicit_bzero(config.auth_token, strlen(config.auth_token));
	memset(&config, 0, sizeof(config));
	why = read_dispatch_config();
	configured = why == NULL;
	MemoryContextSwitchTo(old);

	if (configured)
	{
		ereport(LOG,
				(errmsg("plivo_otp dispatcher sends to %s as %s", config.api_url, config.auth_id)));
		if (config.sender == NULL)
			ereport(LOG,
					(errmsg("plivo_otp dispatcher has no default sender: an SMS that no row of plivo_otp.senders serves is refused"),
					 errhint("Set plivo_otp.sender, or give plivo_otp.senders a row for SMS to every destination.")));
	}
	else
		ereport(LOG,
				(errmsg("plivo_otp dispatcher is not configured and sends nothing"),
				 errdetail_internal("%s", why),
				 errhint("Queued messages wait until it is configured, or expire.")));
	plivo_otp_rate_reset(GetCurrentTimestamp());
	plivo_otp_http_configure(plivo_otp_max_inflight);
	plivo_otp_window_configure(plivo_otp_max_inflight);

	/*
	 * Unconfigured, commits do not wake it (dispatcher_state.c); configured,
	 * it looks at once for what they queued meanwhile.
	 */
	plivo_otp_set_dispatcher_wants_wakes(configured);
	if (configured)
		note_due(GetCurrentTimestamp());
}

/*
 * Who a claimed row goes out from: the sender recorded when it was queued
 * (common/senders.c), else (a row queued before senders were recorded, or
 * without one) the settings'.  NULL for a call without a caller ID, or an
 * SMS that no row of plivo_otp.senders served and plivo_otp.sender unset.
 */
static const char *
row_sender(const ClaimedMessage *row)
{
	if (row->sender)
		return row->sender;
	return row->voice ? config.caller_id : config.sender;
}

/*
 * Why a claimed row cannot be sent (and *state its outcome), or NULL.  The
 * row holds whatever the table's constraints allow.  A call is placed only
 * with a public URL (without one the call could not fetch its script) and
 * a caller ID, and only for a code that lives long enough to be answered.
 */
static const char *
unsendable(const ClaimedMessage *row, TimestampTz now, PlivoOtpDispatchState *state)
{
	char		e164[PLIVO_OTP_MAX_PHONE_LEN + 1];
	int			min_life = row->voice ? plivo_otp_min_call_life() : PLIVO_MIN_MESSAGE_EXPIRY;
	const char *hint;

	*state = PLIVO_OTP_DISPATCH_REFUSED;
	if (row->expires_at <= now + min_life * USECS_PER_SEC)
	{
		*state = PLIVO_OTP_DISPATCH_EXPIRED;
		return "code expired before it could be sent";
	}
	if (row->voice && config.public_base == NULL)
		return "not called: plivo_otp.public_url is not set, so the call could not fetch its script";
	if (row->voice && row_sender(row) == NULL)
		return "not called: no caller ID (plivo_otp.voice_sender, or plivo_otp.sender, must be a phone number)";
	if (!row->voice && row_sender(row) == NULL)
		return "not sent: no sender (no row of plivo_otp.senders served the number when it was queued, and plivo_otp.sender is not set)";
	/* (An SMS goes from what was recorded, as plivo_otp.sender always went.) */
	if (row->voice && plivo_otp_sender_problem("voice", row_sender(row), &hint) != NULL)
		return "not called: the queued sender is not a number a call can come from";
	if (!plivo_otp_normalize_phone(row->phone, e164) || strcmp(e164, row->phone) != 0)
		return "not sent: the queued number is not in E.164 form";
	/* queued before the operator narrowed the setting (resend and fallback check it too) */
	if (!plivo_otp_country_allowed_now(row->phone))
	{
		*state = PLIVO_OTP_DISPATCH_CANCELED;
		return row->voice ? "not called: the number's country is no longer allowed (plivo_otp.allowed_countries)" :
			"not sent: the number's country is no longer allowed (plivo_otp.allowed_countries)";
	}
	if (row->body_too_large)
		return "not sent: the queued body is larger than any message";
	if (row->body == NULL)
		return "not sent: the queued row has no message body";
	return NULL;
}

/*
 * One claimed row (arg): its request, ready to start once the claim
 * commits, or an outcome saying why it cannot be sent.  Runs inside the
 * claim, in a subtransaction of its own.
 */
static void
prepare_transfer(void *arg)
{
	const ClaimedMessage *row = (const ClaimedMessage *) arg;
	TimestampTz now = GetCurrentTimestamp();
	PlivoOtpDispatchState state;
	const char *why = unsendable(row, now, &state);
	int64		life;
	char	   *text = NULL;
	MemoryContext old;
	InflightMessage *m;
	HttpTransfer *t;

	/* (A call does not carry its text, but one that could not be spoken is not placed.) */
	if (why == NULL && (text = plivo_otp_unseal(PLIVO_OTP_KEY_QUEUE_BODY, &row->id, row->body)) == NULL)
		why = "not sent: the queued body does not authenticate (was the key file replaced?)";
	if (text && row->voice)
	{
		explicit_bzero(text, strlen(text));
		text = NULL;
	}
	if (why)
	{
		plivo_otp_add_outcome(&row->id, state, NULL, 0, why, 0);
		return;
	}
	life = (row->expires_at - now) / USECS_PER_SEC;

	old = MemoryContextSwitchTo(dispatcher_context);
	m = palloc(sizeof(InflightMessage));
	m->id = row->id;
	m->expires_at = row->expires_at;
	m->tries = row->tries;
	m->voice = row->voice;
	m->masked_phone = plivo_otp_mask_phone(row->phone);
	if (row->voice)
		t = plivo_otp_call_request(&config, &row->id, row->phone, row_sender(row));
	else
	{
		PG_TRY();
		{
			t = plivo_otp_message_request(&config, &row->id, row->phone, row_sender(row), text,
										  (int) Min(life, PLIVO_MAX_MESSAGE_EXPIRY));
		}
		PG_FINALLY();
		{
			explicit_bzero(text, strlen(text));
		}
		PG_END_TRY();
	}
	t->owner = m;
	t->kind = PLIVO_OTP_RATE_OF(row->voice);
	to_start = lappend(to_start, t);
	MemoryContextSwitchTo(old);
}

/*
 * How many more requests of a kind may run now, within the in-flight
 * window (max_inflight, fewer while Plivo does not answer:
 * inflight_window.c).  While calls can be placed, neither kind may hold
 * every slot of the window (when it has more than one): the last is the
 * other kind's, so a backlog of one kind behind a
 * slow API never holds up the other.
 */
static int
kind_room(int kind)
{
	int			room = plivo_otp_window() - plivo_otp_http_inflight();
	int			share = plivo_otp_window();
	int			own;

	if (share > 1 && config.public_base != NULL && config.caller_id != NULL)
		share--;
	own = share - plivo_otp_http_inflight_of(kind);
	return Max(Min(room, own), 0);
}

/* How many rows a claim may take: of each kind, and in all; and what it found. */
typedef struct ClaimLimits
{
	int			of_kind[PLIVO_OTP_NUM_RATES];
	int			room;
	TimestampTz retry;			/* the earliest retry of the outcomes recorded */
	QueueKey	from[PLIVO_OTP_NUM_RATES];	/* claim_from once the claim commits */
} ClaimLimits;

/*
 * The claim's unit of work (one transaction, one commit per turn): first
 * the outcomes waiting (one statement), then the due rows there is room
 * for; arg points to its ClaimLimits.
 */
static void
claim_work(void *arg)
{
	ClaimLimits *limits = (ClaimLimits *) arg;
	TimestampTz now;
	ClaimedMessage *rows;
	QueueKey	last[PLIVO_OTP_NUM_RATES];
	int			claimed[PLIVO_OTP_NUM_RATES];
	bool		look[PLIVO_OTP_NUM_RATES] = {0};	/* kinds whose earliest row is wanted */
	bool		short_claim = false;
	int			n;
	ErrorData  *error;

	plivo_otp_record_outcomes_here(&limits->retry);
	now = GetCurrentTimestamp();
	n = plivo_otp_queue_claim(now, limits->of_kind, limits->room, claim_from, last, claimed, &rows);
	for (int i = 0; i < n; i++)
	{
		/* A row that cannot even be prepared must not fail the others. */
		if (!plivo_otp_try_subtransaction(prepare_transfer, &rows[i], &error))
			plivo_otp_add_outcome(&rows[i].id, PLIVO_OTP_DISPATCH_REFUSED, NULL, 0,
								  psprintf("not sent: its request could not be prepared (%s)",
										   error->message), 0);
	}

	/*
	 * A kind whose claim filled up (or took what room there was) may have
	 * more rows due: it is due again at once, and its next claim starts
	 * after the last row taken.  A kind that took fewer than it could has
	 * no more due rows, or only rows someone holds locked (the one-second
	 * backstop claims them): its earliest pending row not yet due says
	 * when it is due, and its
	 * next claim reads from the beginning.  A kind that could take nothing
	 * (no token, no slot) stays as it was.
	 */
	for (int kind = 0; kind < PLIVO_OTP_NUM_RATES; kind++)
	{
		limits->from[kind] = claim_from[kind];
		if (limits->of_kind[kind] <= 0)
			continue;
		if (claimed[kind] < limits->of_kind[kind] && n < limits->room)
		{
			/* (Read from the mark: rows behind it may be due; at once from the beginning.) */
			if (claim_from[kind].set)
				next_due[kind] = now;
			else
				short_claim = look[kind] = true;
			limits->from[kind].set = false;
		}
		else
		{
			if (last[kind].set)
				limits->from[kind] = last[kind];
			next_due[kind] = now;
		}
	}
	if (short_claim)
	{
		TimestampTz due[PLIVO_OTP_NUM_RATES];

		/* (Rows due by now that the claim skipped as locked: the backstop's claim.) */
		plivo_otp_queue_earliest_due(now, due);
		for (int kind = 0; kind < PLIVO_OTP_NUM_RATES; kind++)
		{
			if (look[kind])
				next_due[kind] = due[kind];
		}
	}
}

/* Has a row of this kind been due by now? */
static bool
kind_due(int kind, TimestampTz now)
{
	return next_due[kind] != 0 && next_due[kind] <= now;
}

/* A kind looks for due rows at t at the latest. */
static void
note_due_of(int kind, TimestampTz t)
{
	if (t != 0 && (next_due[kind] == 0 || t < next_due[kind]))
		next_due[kind] = t;
}

/* A retry (or any reason to look) at t: every kind looks then at the latest. */
static void
note_due(TimestampTz t)
{
	for (int kind = 0; kind < PLIVO_OTP_NUM_RATES; kind++)
		note_due_of(kind, t);
}

/* Record the waiting outcomes; their retries become due. */
static void
record_outcomes(void)
{
	TimestampTz retry = 0;

	/* Failed, or rows someone holds locked left some: not again at once. */
	if (plivo_otp_record_outcomes(&retry) && plivo_otp_outcomes_waiting() == 0)
		outcomes_retry_at = 0;
	else
		outcomes_retry_at = GetCurrentTimestamp() + OUTCOME_RETRY_MS * 1000;
	note_due(retry);
}

/* When the waiting outcomes' hold ends: OUTCOME_HOLD_MS after the oldest came. */
static TimestampTz
outcomes_hold_ends(void)
{
	return plivo_otp_outcomes_waiting_since() + OUTCOME_HOLD_MS * 1000;
}

/*
 * Are the outcomes no claim took to be recorded now?  Once nothing is in
 * flight (a lone message's outcome goes at once), once OUTCOME_BATCH wait,
 * or OUTCOME_HOLD_MS after the first of them came; but never before
 * OUTCOME_RETRY_MS after a record that failed or left some waiting (rows
 * someone holds locked): no busy loop on a held row or a broken table.
 */
static bool
outcomes_due(TimestampTz now)
{
	int			waiting = plivo_otp_outcomes_waiting();

	if (waiting == 0 || now < outcomes_retry_at)
		return false;
	return now >= outcomes_hold_ends() ||
		(waiting >= OUTCOME_BATCH || plivo_otp_http_inflight() == 0);
}

/*
 * Start the claimed requests, only now that the claim has committed: a
 * request started inside a claim that then rolled back would be sent, and
 * its row, pending again, claimed and sent a second time.  Each leaves
 * to_start as it starts, so after an ERROR to_start holds the unstarted.
 */
static void
start_claimed(void)
{
	while (to_start != NIL)
	{
		HttpTransfer *t = (HttpTransfer *) linitial(to_start);
		bool		voice = ((InflightMessage *) t->owner)->voice;

		to_start = list_delete_first(to_start);
		if (plivo_otp_http_start(t))
			plivo_otp_rate_take(PLIVO_OTP_RATE_OF(voice), GetCurrentTimestamp());
		else
		{
			/* Nothing left: judged like a connection that failed before sending. */
			t->result = CURLE_FAILED_INIT;
			t->request_sent = false;
			plivo_otp_judge_transfer(t);
			plivo_otp_free_transfer(t);
		}
	}
}

/*
 * The claim step: the outcomes waiting, and as many due rows as there is
 * room for (max_inflight in all, and of each kind as many as its bucket has
 * tokens), in one unit of work; then their requests.  Only the kinds with
 * a row due are claimed, every kind at the backstop: a kind with nothing
 * queued (calls, while SMS drain) cost each claim its part of the
 * statement and an earliest-due look-up.  Without room nothing is claimed
 * and next_due stays: the rows go when a request finishes or a token comes
 * (compute_timeout).  False if no unit of work ran.
 */
static bool
claim_and_start(bool every_kind)
{
	TimestampTz now = GetCurrentTimestamp();
	ClaimLimits limits;
	bool		any = false;
	int			outcomes_before;
	ListCell   *lc;

	memset(&limits, 0, sizeof(limits));
	limits.room = plivo_otp_window() - plivo_otp_http_inflight();
	if (limits.room <= 0)
		return false;
	for (int kind = 0; kind < PLIVO_OTP_NUM_RATES; kind++)
	{
		int			tokens = plivo_otp_rate_available(kind, now);	/* (Min evaluates twice) */
		int			free_slots = kind_room(kind);

		if (!every_kind && !kind_due(kind, now))
			continue;
		limits.of_kind[kind] = Min(free_slots, tokens);
		any |= limits.of_kind[kind] > 0;
	}
	if (!any)
		return false;
	if (now >= next_rescan_at)
	{
		memset(claim_from, 0, sizeof(claim_from));
		next_rescan_at = now + RESCAN_EVERY_MS * 1000;
	}
	to_start = NIL;
	outcomes_before = plivo_otp_outcomes_waiting();
	if (plivo_otp_run_work("claiming due messages", claim_work, &limits))
	{
		plivo_otp_outcomes_settle(true);
		memcpy(claim_from, limits.from, sizeof(claim_from));
		note_due(limits.retry);
		start_claimed();
	}
	else
	{
		foreach(lc, to_start)
			plivo_otp_free_transfer((HttpTransfer *) lfirst(lc));
		/* Outcomes judged inside the rolled-back claim no longer apply. */
		plivo_otp_outcomes_truncate(outcomes_before);
		plivo_otp_outcomes_settle(false);
		memset(claim_from, 0, sizeof(claim_from));
		memset(next_due, 0, sizeof(next_due));	/* the backstop timer tries again */
	}
	list_free(to_start);
	to_start = NIL;
	plivo_otp_set_dispatcher_inflight(plivo_otp_http_inflight());
	return true;
}

/* Requests claimed but not started when an ERROR struck: back to the queue. */
static void
abandon_unstarted(void)
{
	while (to_start != NIL)
	{
		HttpTransfer *t = (HttpTransfer *) linitial(to_start);

		to_start = list_delete_first(to_start);
		t->request_sent = false;
		plivo_otp_abandon_transfer(t);
	}
}

static void
log_recovered(int n)
{
	if (n > 0)
	{
		plivo_otp_count(PLIVO_OTP_COUNTER_UNKNOWN, n);
		ereport(LOG,
				(errmsg_plural("plivo_otp dispatcher marked %d message left in flight as unknown",
							   "plivo_otp dispatcher marked %d messages left in flight as unknown",
							   n, n),
				 errdetail("A dispatcher stopped while their requests were in flight; they are not re-sent, so no SMS goes out twice.")));
	}
}

/* Once, before the first claim: the rows a stopped dispatcher left in flight. */
static void
find_stale_work(void *arg)
{
	plivo_otp_queue_find_stale(dispatcher_context);
	if (plivo_otp_queue_stale_left() > 0)
		log_recovered(plivo_otp_queue_recover_stale(GetCurrentTimestamp()));
}

static void
apply_waiting_events(void *arg)
{
	(void) plivo_otp_apply_waiting_events();
}

static void
wipe_expired_codes(void *arg)
{
	(void) plivo_otp_queue_wipe_expired_codes(*(TimestampTz *) arg);
}

static void
wipe_locked_codes(void *arg)
{
	plivo_otp_queue_wipe_locked_codes();
}

static void
wipe_call_bodies(void *arg)
{
	(void) plivo_otp_queue_wipe_call_bodies(*(TimestampTz *) arg);
}

/*
 * Every second, first: the seal and body wipes, each in a subtransaction
 * of its own, in a unit of work of their own, so that nothing else the
 * tick does can roll them back.
 */
static void
wipe_work(void *arg)
{
	TimestampTz now = GetCurrentTimestamp();

	/* Codes that expired or can no longer be re-delivered: wipe their seal. */
	(void) plivo_otp_run_subtransaction(wipe_expired_codes, &now);
	/* Codes locked by their failures, rolled back or not: the same. */
	(void) plivo_otp_run_subtransaction(wipe_locked_codes, NULL);
	/* Calls whose code expired or is no longer pending: wipe the sentence kept for them. */
	(void) plivo_otp_run_subtransaction(wipe_call_bodies, &now);
}

/* Every second: stale rows no longer held, unsendable rows, late callbacks. */
static void
expire_work(void *arg)
{
	static bool fingerprint_recorded = false;
	TimestampTz now = GetCurrentTimestamp();
	int			n;

	/* Which key this database's codes are made with (crypto/key_check.c). */
	if (!fingerprint_recorded)
		fingerprint_recorded = plivo_otp_record_key_fingerprint();

	if (plivo_otp_queue_stale_left() > 0)
		log_recovered(plivo_otp_queue_recover_stale(now));
	n = plivo_otp_queue_expire_unsendable(now);
	if (n > 0)
		plivo_otp_count(PLIVO_OTP_COUNTER_EXPIRED, n);
	plivo_otp_queue_cancel_orphaned(now);

	/* A backstop for callbacks that raced the recording of their UUID. */
	(void) plivo_otp_run_subtransaction(apply_waiting_events, NULL);
}

/* Every second, last: the voice fallbacks that are due (fallback.c). */
static void
fallback_work(void *arg)
{
	plivo_otp_queue_voice_fallbacks(GetCurrentTimestamp());
}

/*
 * Judge the requests that finished; their outcomes are recorded by this
 * turn's claim, or on their own when the turn claims nothing.
 */
static void
collect_finished(void)
{
	HttpTransfer *t;

	while ((t = plivo_otp_http_next_done()) != NULL)
	{
		plivo_otp_judge_transfer(t);
		plivo_otp_free_transfer(t);
	}
	plivo_otp_set_dispatcher_inflight(plivo_otp_http_inflight());
}

static long
ms_until(TimestampTz t, TimestampTz now)
{
	return t <= now ? 0 : (long) Min((t - now) / 1000, (int64) LONG_MAX);
}

/* How long to sleep: the earliest of every deadline the loop keeps. */
static long
compute_timeout(TimestampTz now)
{
	long		timeout = BACKSTOP_MS;
	long		curl_ms = plivo_otp_http_timeout_ms();

	if (curl_ms >= 0)
		timeout = Min(timeout, curl_ms);
	/* Waiting outcomes, when they are due (rounded up: no spinning in its last ms). */
	if (plivo_otp_outcomes_waiting() > 0)
	{
		TimestampTz due = Max(outcomes_hold_ends(), outcomes_retry_at);

		timeout = Min(timeout, (long) Max(0, (due - now + 999) / 1000));
	}
	if (configured && recovered)
	{
		timeout = Min(timeout, ms_until(next_backstop_at, now));
		/*
		 * Each kind when its row is due and its bucket has a token.  (At
		 * max_inflight, a finishing request wakes us through its socket.)
		 */
		for (int kind = 0; kind < PLIVO_OTP_NUM_RATES; kind++)
		{
			long		due_ms;
			long		token_ms;

			if (next_due[kind] == 0 || kind_room(kind) <= 0)
				continue;
			due_ms = ms_until(next_due[kind], now);
			if (gather_until > now)	/* (rounded up: no spinning in its last ms) */
				due_ms = Max(due_ms, (long) ((gather_until - now + 999) / 1000));
			token_ms = plivo_otp_rate_wait_ms(kind, now);
			timeout = Min(timeout, Max(due_ms, token_ms));
		}
	}
	timeout = Min(timeout, ms_until(next_expire_at, now));
	timeout = Min(timeout, ms_until(next_purge_at, now));
	return timeout;
}

/* Connect, set up memory, libcurl and shared state; the set to wait on. */
static WaitEventSet *
dispatcher_init(void)
{
	WaitEventSet *wait_set;

	plivo_otp_worker_connect("plivo_otp dispatcher");

	dispatcher_context = AllocSetContextCreate(TopMemoryContext, "plivo_otp dispatcher",
											   ALLOCSET_DEFAULT_SIZES);
	plivo_otp_outcomes_init(dispatcher_context);
	/* Whatever a turn of the loop allocates lives until the next turn. */
	loop_context = AllocSetContextCreate(dispatcher_context, "plivo_otp dispatcher loop",
										 ALLOCSET_DEFAULT_SIZES);
	plivo_otp_http_init();
	plivo_otp_set_dispatcher_latch(MyLatch);
	plivo_otp_set_dispatcher_pid(MyProcPid);
	before_shmem_exit(clear_dispatcher_state, (Datum) 0);
	seen_wakeups = plivo_otp_dispatcher_wakeups();	/* the first claim looks anyway */

	wait_set = plivo_otp_worker_wait_set(plivo_otp_http_epoll_fd());

	ereport(LOG, (errmsg("plivo_otp dispatcher started")));
	load_dispatch_config();
	return wait_set;
}

/*
 * Sleep until the latch, libcurl's descriptor or the next deadline; true if
 * libcurl's descriptor is ready.  The wake-up counter is read after the
 * latch is reset: a wake-up that lands later sets the latch again, and one
 * that landed earlier is in the counter, whatever this wait returned.
 */
static bool
wait_for_events(WaitEventSet *wait_set)
{
	WaitEvent	events[3];
	bool		socket_ready = false;
	int			n;

	n = WaitEventSetWait(wait_set, compute_timeout(GetCurrentTimestamp()), events,
						 lengthof(events),
						 plivo_otp_wait_event(plivo_otp_http_inflight() > 0 ?
											  PLIVO_OTP_WAIT_DISPATCHER_HTTP :
											  PLIVO_OTP_WAIT_DISPATCHER_IDLE));
	for (int i = 0; i < n; i++)
	{
		if (events[i].events & WL_SOCKET_READABLE)
			socket_ready = true;
	}
	ResetLatch(MyLatch);
	wakeups_now = plivo_otp_dispatcher_wakeups();
	CHECK_FOR_INTERRUPTS();
	return socket_ready;
}

/* SIGTERM: stop at once; SIGHUP: reload. */
static void
handle_interrupts(void)
{
	if (ShutdownRequestPending)
	{
		abandon_unstarted();
		plivo_otp_http_abort_all(plivo_otp_abandon_transfer);
		record_outcomes();

		/*
		 * Exit code 1, not 0: the postmaster unregisters a background worker
		 * that exits with 0, so pg_terminate_backend would stop dispatching
		 * until the next server restart.  At server shutdown the postmaster
		 * restarts nothing anyway.
		 */
		proc_exit(1);
	}
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		load_dispatch_config();
	}
}

/* Rows left in flight (once), the one-second tick. */
static void
run_timers(TimestampTz now)
{
	if (!recovered)
		recovered = plivo_otp_run_work("finding messages left in flight", find_stale_work, NULL);
	if (now >= next_expire_at)
	{
		plivo_otp_mark_expired_codes();
		plivo_otp_run_work("wiping sealed codes", wipe_work, NULL);
		plivo_otp_run_work("expiring unsendable messages", expire_work, NULL);
		/* (Calls it queued are due at once: not only at the next backstop.) */
		if (plivo_otp_run_work_within("queueing voice fallbacks", fallback_work, NULL,
									  FALLBACK_BUDGET_MS))
			note_due_of(PLIVO_OTP_RATE_CALLS, now);
		next_expire_at = now + EXPIRE_EVERY_MS * 1000;
	}
}

/* Purging, last in a turn: what the turn had to send has gone. */
static void
run_purge(TimestampTz now)
{
	if (now >= next_purge_at)
		next_purge_at = plivo_otp_purge_old_rows(PURGE_BUDGET_MS) ?
			0 : now + PURGE_EVERY_MS * 1000;
}

/*
 * Whether a claim that is due waits for more requests to finish: while a
 * backlog drains (the last claim of a kind filled up) with requests in
 * flight, for at most GATHER_US.  Each claim is a commit and two
 * statements whose cost hardly depends on how many rows they take:
 * claiming the one or two slots each finished request frees made commits,
 * not requests, the bound on a drain at a small max_inflight (waiting for
 * half of max_inflight: claims of 5.3 rows on average at 10, 0.53 ms per
 * claim and 0.57 ms per batch of outcomes, by pg_stat_statements).
 * Without a backlog nothing waits: a new code's claim is never held up by
 * requests in flight.
 */
static bool
gathering(TimestampTz now)
{
	int			inflight = plivo_otp_http_inflight();
	bool		backlog = false;

	for (int kind = 0; kind < PLIVO_OTP_NUM_RATES; kind++)
		backlog |= claim_from[kind].set;
	if (!backlog || inflight == 0)
	{
		gather_until = 0;
		return false;
	}
	if (gather_until == 0)
		gather_until = now + GATHER_US;
	return now < gather_until;
}

/*
 * Look for work only with a reason to: a commit bumped the wake-up counter
 * (rows are due now), a row is due (a retry, rows left when a batch was cut
 * short or had no room), or the backstop.  Socket events of running
 * requests alone start no transaction.
 */
static bool
should_claim(TimestampTz now)
{
	bool		due = false;

	if (wakeups_now != seen_wakeups)
	{
		seen_wakeups = wakeups_now;
		note_due(now);			/* of either kind: the claim finds out */
	}
	/* A kind is worth a claim when a row of it is due and its bucket has a token. */
	for (int kind = 0; kind < PLIVO_OTP_NUM_RATES; kind++)
		due |= kind_due(kind, now) &&
			plivo_otp_rate_wait_ms(kind, now) == 0 && kind_room(kind) > 0;
	if (!due)
		gather_until = 0;		/* (outcomes are then recorded on their own) */
	else if (gathering(now))
		due = false;
	return configured && recovered && (due || now >= next_backstop_at);
}

/* Is a row of every kind due by now? */
static bool
all_kinds_due(TimestampTz now)
{
	for (int kind = 0; kind < PLIVO_OTP_NUM_RATES; kind++)
	{
		if (!kind_due(kind, now))
			return false;
	}
	return true;
}

/* One turn of the loop; see the steps at the top. */
static void
run_turn(WaitEventSet *wait_set)
{
	bool		socket_ready;
	TimestampTz now;

	MemoryContextSwitchTo(loop_context);
	MemoryContextReset(loop_context);

	socket_ready = wait_for_events(wait_set);
	handle_interrupts();

	plivo_otp_http_drive(socket_ready);
	collect_finished();

	now = GetCurrentTimestamp();
	run_timers(now);
	if (should_claim(now))
	{
		/*
		 * The backstop is a claim of every kind: one of a single kind (the
		 * SMS of a backlog, the calls a fallback queued) must not put it
		 * off for the others.
		 */
		bool		every_kind = now >= next_backstop_at || all_kinds_due(now);

		if (every_kind)
			next_backstop_at = now + BACKSTOP_MS * 1000;
		gather_until = 0;
		(void) claim_and_start(every_kind);
	}
	/*
	 * What no claim recorded: the turn claimed nothing, or found rows
	 * unsendable.  A gathering claim records them within GATHER_US, with
	 * its own commit.
	 */
	if (gather_until == 0 && outcomes_due(now))
		record_outcomes();
	run_purge(now);
}

/*
 * An ERROR escaped a step (units of work catch their own): log it, end any
 * transaction, give the transfer it interrupted the outcome the at-most-
 * once rule gives it, and go on.  Requests in flight stay in libcurl's
 * hands and outcomes waiting stay waiting, so nothing is lost track of.
 */
static void
recover_from_error(void)
{
	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(dispatcher_context);
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	pgstat_report_activity(STATE_IDLE, NULL);
	abandon_unstarted();
	plivo_otp_outcomes_after_error();
	plivo_otp_set_dispatcher_inflight(plivo_otp_http_inflight());
	MemoryContextReset(loop_context);
	ereport(LOG,
			(errmsg("plivo_otp dispatcher carries on after the error"),
			 errdetail_plural("%d request is in flight.", "%d requests are in flight.",
							  plivo_otp_http_inflight(), plivo_otp_http_inflight())));
	RESUME_INTERRUPTS();
	(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ERROR_PAUSE_MS,
					 plivo_otp_wait_event(PLIVO_OTP_WAIT_DISPATCHER_ERROR_PAUSE));
}

void
plivo_otp_dispatcher_main(Datum main_arg)
{
	WaitEventSet *wait_set = dispatcher_init();

	for (;;)
	{
		PG_TRY();
		{
			run_turn(wait_set);
		}
		PG_CATCH();
		{
			recover_from_error();
		}
		PG_END_TRY();
	}
}
