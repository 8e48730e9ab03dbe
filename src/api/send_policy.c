/*-------------------------------------------------------------------------
 *
 * send_policy.c
 *	  The sending policy of otp_send and otp_resend: the per-number cool-down
 *	  and cap, the per-caller cap, and the global hourly cap; and the part of
 *	  it that the dispatcher's voice fallback obeys (the number's cap, the
 *	  global cap).  A refusal is SQLSTATE
 *	  53400 with a detail naming the limit and a hint saying when to retry.
 *
 * Every message counts, re-deliveries of a live code included (each one is
 * an SMS or a call), but a voice fallback the dispatcher refused (never
 * sent).  The per-number and per-caller limits count rows under their
 * key's lock (send_locks.c) with the latest snapshot, which includes this
 * transaction's own earlier sends and whatever a send it waited for
 * committed, whatever the caller's isolation level.  The global cap counts
 * in shared memory, uncommitted sends included (shmem/send_budget.c).
 *
 * With the 0.1.0 schema installed (an upgrade pending) there are no caller
 * keys and the per-number limits count verifications, as 0.1.0 did.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

/*
 * A voice fallback the dispatcher refused (never sent) is no message: it
 * counts in no limit.  (A filter on the rows the index gives, so the
 * statements keep their index.)
 */
#define SENT_OR_SENDABLE "NOT (origin = 'fallback' AND dispatch_state = 'canceled')"

/* The most recent $3 messages to a number within the window: their count and the oldest. */
static PlivoOtpStatement recent_to_number = {
	"SELECT count(*), min(created_at), max(created_at) FROM ("
	" SELECT created_at FROM plivo_otp.messages"
	" WHERE phone = $1 AND created_at > $2 AND " SENT_OR_SENDABLE
	" ORDER BY created_at DESC LIMIT $3) s",
	3, {TEXTOID, TIMESTAMPTZOID, INT4OID}
};

static PlivoOtpStatement recent_to_number_v1 = {
	"SELECT count(*), min(created_at), max(created_at) FROM ("
	" SELECT created_at FROM plivo_otp.verifications"
	" WHERE phone = $1 AND created_at > $2"
	" ORDER BY created_at DESC LIMIT $3) s",
	3, {TEXTOID, TIMESTAMPTZOID, INT4OID}
};

static PlivoOtpStatement recent_from_caller = {
	"SELECT count(*), min(created_at) FROM ("
	" SELECT created_at FROM plivo_otp.messages"
	" WHERE caller_key_digest = $1 AND created_at > $2 AND " SENT_OR_SENDABLE
	" ORDER BY created_at DESC LIMIT $3) s",
	3, {BYTEAOID, TIMESTAMPTZOID, INT4OID}
};

/* Refuse a send: counted (in all, and under its limit), then the ERROR. */
static void
refuse_send(PlivoOtpActivity limit, const char *setting, const char *detail,
			TimestampTz retry_at, TimestampTz now)
{
	long		secs;
	int			usecs;

	plivo_otp_count(PLIVO_OTP_COUNTER_REFUSED_SENDS, 1);
	plivo_otp_activity_add(limit, 1);
	TimestampDifference(now, retry_at, &secs, &usecs);
	if (usecs > 0)
		secs++;
	ereport(ERROR,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("code not sent: %s reached", setting),
			 errdetail_internal("%s", detail),
			 errhint("Retry in %ld seconds, at %s.", secs > 0 ? secs : 1,
					 timestamptz_to_str(retry_at)),
			 errhidestmt(true)));
}

/*
 * The number's latest limit rows: up to `limit` sends since `since`.
 * Returns their count; *oldest and *latest are set when it is not 0.
 */
static int64
recent_sends(const char *phone, TimestampTz since, int limit, bool v2,
			 TimestampTz *oldest, TimestampTz *latest)
{
	Datum		args[3];
	bool		isnull;
	int64		n;

	args[0] = CStringGetTextDatum(phone);
	args[1] = TimestampTzGetDatum(since);
	args[2] = Int32GetDatum(limit);
	plivo_otp_exec_latest(v2 ? &recent_to_number : &recent_to_number_v1, args, NULL, 1);
	n = DatumGetInt64(plivo_otp_get(0, 1, &isnull));
	if (n > 0)
	{
		*oldest = DatumGetTimestampTz(plivo_otp_get(0, 2, &isnull));
		*latest = DatumGetTimestampTz(plivo_otp_get(0, 3, &isnull));
	}
	return n;
}

/* The cool-down of one number: no message to it within resend_interval. */
static void
check_cooldown(const char *phone, TimestampTz now, bool v2)
{
	TimestampTz oldest;
	TimestampTz latest;

	if (plivo_otp_resend_interval > 0 &&
		recent_sends(phone, now - (int64) plivo_otp_resend_interval * USECS_PER_SEC, 1, v2,
					 &oldest, &latest) > 0)
		refuse_send(PLIVO_OTP_ACT_REFUSED_COOLDOWN, "plivo_otp.resend_interval",
					psprintf("A code was sent to this number less than %d seconds ago.",
							 plivo_otp_resend_interval),
					latest + (int64) plivo_otp_resend_interval * USECS_PER_SEC, now);
}

/* The cap of one number: number_max_sends messages within number_window. */
static void
check_number_cap(const char *phone, TimestampTz now, bool v2)
{
	TimestampTz oldest;
	TimestampTz latest;

	if (plivo_otp_number_max_sends > 0 &&
		recent_sends(phone, now - (int64) plivo_otp_number_window * USECS_PER_SEC,
					 plivo_otp_number_max_sends, v2, &oldest, &latest) >= plivo_otp_number_max_sends)
		refuse_send(PLIVO_OTP_ACT_REFUSED_NUMBER_CAP, "plivo_otp.number_max_sends",
					psprintf("This number was sent %d codes within plivo_otp.number_window (%d seconds).",
							 plivo_otp_number_max_sends, plivo_otp_number_window),
					oldest + (int64) plivo_otp_number_window * USECS_PER_SEC, now);
}

/* The cap of one caller key (its digest). */
static void
check_caller(bytea *caller_digest, TimestampTz now)
{
	Datum		args[3];
	bool		isnull;

	args[0] = PointerGetDatum(caller_digest);
	args[1] = TimestampTzGetDatum(now - (int64) plivo_otp_caller_window * USECS_PER_SEC);
	args[2] = Int32GetDatum(plivo_otp_caller_max_sends);
	plivo_otp_exec_latest(&recent_from_caller, args, NULL, 1);
	if (DatumGetInt64(plivo_otp_get(0, 1, &isnull)) >= plivo_otp_caller_max_sends)
		refuse_send(PLIVO_OTP_ACT_REFUSED_CALLER_CAP, "plivo_otp.caller_max_sends",
					psprintf("This caller key was used for %d codes within plivo_otp.caller_window (%d seconds).",
							 plivo_otp_caller_max_sends, plivo_otp_caller_window),
					DatumGetTimestampTz(plivo_otp_get(0, 2, &isnull)) +
					(int64) plivo_otp_caller_window * USECS_PER_SEC, now);
}

/* A place in the global hourly count, or a refusal. */
static void
take_global_budget(TimestampTz now)
{
	TimestampTz retry_at;

	/*
	 * Every send takes its place in the shared count, also with the cap off
	 * (so turning it on finds the hour counted).  Last, so that a send
	 * refused by another limit takes none.
	 */
	if (!plivo_otp_budget_take(plivo_otp_global_max_sends_per_hour > 0 ?
							   plivo_otp_global_max_sends_per_hour : INT_MAX,
							   now, &retry_at))
		refuse_send(PLIVO_OTP_ACT_REFUSED_GLOBAL_BUDGET, "plivo_otp.global_max_sends_per_hour",
					psprintf("The server sent %d codes within the last hour.",
							 plivo_otp_global_max_sends_per_hour),
					retry_at, now);
}

/*
 * Apply every limit to one send (or otp_resend); an ERROR when one is
 * reached.  SPI is connected; the number's (and caller key's) lock is held.
 * caller_digest is NULL without a caller key; v2 says the 0.2.0 schema is
 * installed.
 */
void
plivo_otp_check_send_policy(const char *phone, bytea *caller_digest, TimestampTz now, bool v2)
{
	check_cooldown(phone, now, v2);
	check_number_cap(phone, now, v2);
	if (caller_digest && plivo_otp_caller_max_sends > 0)
		check_caller(caller_digest, now);
	take_global_budget(now);
}

/*
 * The limits of the dispatcher's voice fallback: the number's cap and the
 * global count, the same ERROR when one is reached.  No cool-down (the
 * fallback follows an SMS by design, and comes once per code) and no caller
 * key (no application asked for it).  The number's lock is held.
 */
void
plivo_otp_check_fallback_policy(const char *phone, TimestampTz now)
{
	check_number_cap(phone, now, true);
	take_global_budget(now);
}
