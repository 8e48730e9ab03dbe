/*-------------------------------------------------------------------------
 *
 * fallback.c
 *	  The voice fallback: a live code whose SMS did not arrive gets one call
 *	  with the same code, placed by the dispatcher's one-second tick.
 *
 * With plivo_otp.voice_fallback_after > 0, a code is called once when it is
 * pending with its seal, has more than plivo_otp_min_call_life()
 * (ring_timeout + PLIVO_OTP_CALL_LIFE_MARGIN) of life left, none of its
 * SMS was delivered, its latest SMS was reported undelivered, failed or
 * rejected or was accepted more than voice_fallback_after ago, and it has
 * no call yet (an application that
 * called by otp_resend gets no second one).  The call is a messages row
 * (channel voice, origin fallback: the unique index messages_one_fallback
 * allows one per code) that the claim then sends like any other.
 *
 * A call comes from the number plivo_otp.senders gives for its destination,
 * else the settings' caller ID (common/senders.c); a code with neither gets
 * a 'canceled' fallback row saying so, and with neither for any
 * destination the fallback places nothing and says so once in the log.
 *
 * The fallback obeys plivo_otp.allowed_countries as the dispatcher reads it
 * now, the number's cap and the global hourly count (send_policy.c); a
 * refusal, or a code that can no longer be delivered,
 * still leaves a fallback row, 'canceled', whose last_error says why: it is
 * never tried again and the operator can see what happened.
 *
 * Locking: candidates are found through the live codes alone (the index
 * verifications_sealed_expiry), at most FALLBACK_BATCH a tick; rows an
 * application holds locked are skipped (SKIP LOCKED), and so is a code
 * whose number's send lock someone holds (its row of
 * plivo_otp.send_counters is tried, never waited for: send_locks.c), until
 * a later tick; a number with no such row (its codes were all sent before
 * the upgrade to 0.2.0) gets no fallback.  Each code is handled in a
 * subtransaction of its own, so a failure leaves the others alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/timestamp.h"

#include "dispatcher.h"

#define FALLBACK_BATCH 20

/*
 * The codes due for a call, found through their SMS that Plivo accepted and
 * did not (yet) report delivered, still live: the partial index
 * messages_sms_undelivered holds only those, so the work per tick follows
 * the SMS awaiting their delivery report, not the live codes nor the
 * history.  Only a code's latest SMS counts (a fresh one queued after a
 * failed one has its own chance), and a code with any call, or any SMS
 * delivered, is not called.
 */
static PlivoOtpStatement find_candidates = {
	"SELECT v.id, v.phone, v.expires_at, v.attempts, v.max_attempts, v.code_sealed"
	" FROM plivo_otp.messages s"
	" JOIN plivo_otp.verifications v ON v.id = s.verification_id"
	" WHERE s.channel = 'sms' AND s.dispatch_state = 'accepted'"
	" AND s.delivery_status IS DISTINCT FROM 'delivered' AND s.expires_at > $1"
	" AND (s.delivery_status IN ('undelivered', 'failed', 'rejected')"
	"   OR coalesce(s.accepted_at, s.created_at) <= $2)"
	" AND v.code_sealed IS NOT NULL AND v.expires_at > $1 AND v.state = 'pending'"
	" AND NOT EXISTS (SELECT 1 FROM plivo_otp.messages o"
	"   WHERE o.verification_id = v.id AND (o.channel = 'voice'"
	"   OR o.delivery_status = 'delivered' OR (o.channel = 'sms' AND o.created_at > s.created_at)))"
	" ORDER BY s.expires_at LIMIT " CppAsString2(FALLBACK_BATCH)
	" FOR UPDATE OF v SKIP LOCKED",
	2, {TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/* Under the number's lock, with the latest snapshot: an otp_resend may have called. */
static PlivoOtpStatement has_call = {
	"SELECT 1 FROM plivo_otp.messages WHERE verification_id = $1 AND channel = 'voice' LIMIT 1",
	1, {UUIDOID}
};

static PlivoOtpStatement insert_refused = {
	"INSERT INTO plivo_otp.messages"
	" (id, verification_id, channel, phone, dispatch_state, next_try_at, expires_at,"
	"  created_at, updated_at, origin, last_error)"
	" VALUES ($1, $2, 'voice', $3, 'canceled', $4, $5, $4, $4, 'fallback', $6)",
	6, {UUIDOID, UUIDOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID}
};

/* Is there a number to call from for some destination (common/senders.c)? */
static PlivoOtpStatement any_voice_sender = {
	"SELECT 1 FROM plivo_otp.senders WHERE channel = 'voice' LIMIT 1",
	0, {0}
};

/* A code to call, copied out of the candidates' result. */
typedef struct Candidate
{
	pg_uuid_t	id;
	char	   *phone;
	TimestampTz expires_at;
	int			attempts;
	int			max_attempts;
	bytea	   *sealed;
	TimestampTz now;
} Candidate;

static bool no_public_url_logged = false;
static bool no_caller_id_logged = false;

/* The fallback row of c, canceled because of why: never tried again. */
static void
refuse_fallback(const Candidate *c, const char *why)
{
	pg_uuid_t	message_id;
	Datum		args[6];

	plivo_otp_new_id(&message_id);
	args[0] = UUIDPGetDatum(&message_id);
	args[1] = UUIDPGetDatum(&c->id);
	args[2] = CStringGetTextDatum(c->phone);
	args[3] = TimestampTzGetDatum(c->now);
	args[4] = TimestampTzGetDatum(c->expires_at);
	args[5] = CStringGetTextDatum(psprintf("not called: %s", why));
	plivo_otp_exec(&insert_refused, args, NULL, false, 0);
	ereport(LOG,
			(errmsg("plivo_otp dispatcher did not place the voice fallback to %s",
					plivo_otp_mask_phone(c->phone)),
			 errdetail_internal("%s", why)));
}

/* "plivo_otp.number_max_sends reached (its detail)", from a refusal of send_policy.c. */
static const char *
limit_reason(const ErrorData *error)
{
	const char *prefix = "code not sent: ";
	const char *what = error->message;

	if (strncmp(what, prefix, strlen(prefix)) == 0)
		what += strlen(prefix);
	return error->detail ? psprintf("%s (%s)", what, error->detail) : what;
}

static void
check_policy(void *arg)
{
	const Candidate *c = (const Candidate *) arg;

	plivo_otp_check_fallback_policy(c->phone, c->now);
}

/* One code: its call queued, or its fallback row canceled with the reason. */
static void
fallback_one(void *arg)
{
	const Candidate *c = (const Candidate *) arg;
	char		code[PLIVO_OTP_MAX_CODE_LEN + 1];
	const char *why;
	ErrorData  *error = NULL;
	Datum		args[1];
	pg_uuid_t	message_id;

	if (!plivo_otp_try_lock_send_key(c->phone))
		return;					/* a send to the number is open: a later tick */
	args[0] = UUIDPGetDatum(&c->id);
	if (plivo_otp_exec_latest(&has_call, args, NULL, 1) > 0)
		return;

	why = plivo_otp_open_live_code(&c->id, c->attempts, c->max_attempts, c->sealed, code);
	if (why == NULL && !plivo_otp_country_allowed_now(c->phone))
		why = "the number's country is no longer allowed (plivo_otp.allowed_countries)";
	if (why == NULL && plivo_otp_choose_sender("voice", c->phone, NULL) == NULL)
		why = "no number to call from (no row of plivo_otp.senders for calls to it, and no voice caller ID in the settings)";
	if (why)
	{
		refuse_fallback(c, why);
		return;
	}
	PG_TRY();
	{
		PlivoOtpOutbound m = {
			.verification_id = &c->id,
			.phone = c->phone,
			.channel = "voice",
			.origin = "fallback",
			.code = code,
			.now = c->now,
			.expires_at = c->expires_at,
			.caller_digest = NULL,
			.idempotency_key = NULL,
			.v2 = true
		};

		/* A limit refuses in a subtransaction: its place in the count goes back. */
		if (plivo_otp_try_subtransaction(check_policy, (void *) c, &error))
			plivo_otp_queue_message(&m, &message_id);
		else if (error->sqlerrcode == ERRCODE_CONFIGURATION_LIMIT_EXCEEDED)
			refuse_fallback(c, limit_reason(error));
		else
			ReThrowError(error);
	}
	PG_FINALLY();
	{
		explicit_bzero(code, sizeof(code));
	}
	PG_END_TRY();
	if (error)
		return;
	plivo_otp_wake_at_commit();
	plivo_otp_count(PLIVO_OTP_COUNTER_SENDS, 1);
	ereport(LOG,
			(errmsg("plivo_otp dispatcher queued a voice fallback to %s",
					plivo_otp_mask_phone(c->phone)),
			 errdetail("Its SMS was not delivered.")));
}

/*
 * Find the codes due for a call and queue their calls; inside a unit of
 * work of the dispatcher, SPI connected.
 */
static void
fallback_work(void *arg)
{
	TimestampTz now = *(TimestampTz *) arg;
	Datum		args[2];
	int			n;
	Candidate  *c;

	args[0] = TimestampTzGetDatum(now + (int64) plivo_otp_min_call_life() * USECS_PER_SEC);
	args[1] = TimestampTzGetDatum(now - (int64) plivo_otp_voice_fallback_after * USECS_PER_SEC);
	n = plivo_otp_exec_forced(&find_candidates, args, NULL, 0);
	c = palloc0(Max(n, 1) * sizeof(Candidate));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		memcpy(&c[i].id, DatumGetUUIDP(plivo_otp_get(i, 1, &isnull)), sizeof(pg_uuid_t));
		c[i].phone = plivo_otp_get_text(i, 2);
		c[i].expires_at = DatumGetTimestampTz(plivo_otp_get(i, 3, &isnull));
		c[i].attempts = DatumGetInt32(plivo_otp_get(i, 4, &isnull));
		c[i].max_attempts = DatumGetInt32(plivo_otp_get(i, 5, &isnull));
		c[i].sealed = DatumGetByteaPCopy(plivo_otp_get(i, 6, &isnull));
		c[i].now = now;
	}
	for (int i = 0; i < n; i++)
	{
		(void) plivo_otp_run_subtransaction(fallback_one, &c[i]);
		explicit_bzero(VARDATA(c[i].sealed), VARSIZE(c[i].sealed) - VARHDRSZ);
	}
}

/*
 * The dispatcher's hook, once a second in a unit of work of its own:
 * queue the voice fallbacks that are due, if the fallback is on.  Its
 * failure is logged and leaves the rest of the unit alone.
 */
void
plivo_otp_queue_voice_fallbacks(TimestampTz now)
{
	if (plivo_otp_voice_fallback_after <= 0 || !plivo_otp_schema_is_v2())
		return;
	/* No public_url: no delivery reports (every SMS would look undelivered) and no answer URL. */
	if (plivo_otp_public_url[0] == '\0')
	{
		if (!no_public_url_logged)
			ereport(LOG,
					(errmsg("plivo_otp dispatcher places no voice fallback: plivo_otp.public_url is not set"),
					 errdetail("Without it Plivo reports no delivery and a call cannot fetch its script."),
					 errhint("Set plivo_otp.public_url, or plivo_otp.voice_fallback_after to 0.")));
		no_public_url_logged = true;
		return;
	}
	no_public_url_logged = false;
	if (plivo_otp_voice_caller_id() == NULL &&
		plivo_otp_exec(&any_voice_sender, NULL, NULL, true, 1) == 0)
	{
		if (!no_caller_id_logged)
			ereport(LOG,
					(errmsg("plivo_otp dispatcher places no voice fallback: no number to call from"),
					 errdetail("plivo_otp.voice_fallback_after is set, but neither plivo_otp.voice_sender nor plivo_otp.sender is a number, and plivo_otp.senders has no row for calls."),
					 errhint("Set plivo_otp.voice_sender to a Plivo number, or plivo_otp.voice_fallback_after to 0.")));
		no_caller_id_logged = true;
		return;
	}
	no_caller_id_logged = false;
	(void) plivo_otp_run_subtransaction(fallback_work, &now);
}
