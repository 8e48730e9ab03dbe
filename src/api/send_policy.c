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
 * sent).  With the 0.2.0 schema, the per-number and per-caller limits read
 * the key's counters in plivo_otp.send_counters (send_locks.c), counted by
 * the statement that takes the key's lock: O(1) whatever the history, and
 * whatever a send it waited for committed is in them, whatever the
 * caller's isolation level.  A window's count is the sliding estimate of
 * two buckets of the window's length: the previous bucket's count weighted
 * by the part of it still inside the window, plus the current bucket's.  A
 * refusal is an ERROR, which takes its own count back with it.  The global
 * cap counts in shared memory, uncommitted sends included
 * (shmem/send_budget.c).
 *
 * With the 0.1.0 schema installed (an upgrade pending) there are no caller
 * keys and the per-number limits count verifications under advisory locks,
 * as 0.1.0 did.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

/* 0.1.0: the most recent $3 codes to a number within the window, their count and the oldest. */
static PlivoOtpStatement recent_to_number_v1 = {
	"SELECT count(*), min(created_at), max(created_at) FROM ("
	" SELECT created_at FROM plivo_otp.verifications"
	" WHERE phone = $1 AND created_at > $2"
	" ORDER BY created_at DESC LIMIT $3) s",
	3, {TEXTOID, TIMESTAMPTZOID, INT4OID},
	.forced_plan = true, .indexes = "verifications_phone_created"
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
 * 0.1.0: the number's latest limit codes since `since`.  Returns their
 * count; *oldest and *latest are set when it is not 0.
 */
static int64
recent_sends_v1(const char *phone, TimestampTz since, int limit,
				TimestampTz *oldest, TimestampTz *latest)
{
	Datum		args[3];
	bool		isnull;
	int64		n;

	args[0] = CStringGetTextDatum(phone);
	args[1] = TimestampTzGetDatum(since);
	args[2] = Int32GetDatum(limit);
	plivo_otp_exec_latest(&recent_to_number_v1, args, NULL, 1);
	n = DatumGetInt64(plivo_otp_get(0, 1, &isnull));
	if (n > 0)
	{
		*oldest = DatumGetTimestampTz(plivo_otp_get(0, 2, &isnull));
		*latest = DatumGetTimestampTz(plivo_otp_get(0, 3, &isnull));
	}
	return n;
}

/* The sliding count of a window before this message: two buckets, the older weighted. */
static double
window_count(const PlivoOtpSendCount *c, TimestampTz now)
{
	double		weight = 1.0 - (double) (now - c->bucket_start) / (double) c->window;

	if (weight < 0.0)
		weight = 0.0;
	if (weight > 1.0)
		weight = 1.0;
	return c->previous_count * weight + c->bucket_count;
}

/*
 * When the sliding count of c falls below max again: within the current
 * bucket as the previous one's weight falls, else in the next bucket, once
 * enough of the current one has left the window.
 */
static TimestampTz
window_retry_at(const PlivoOtpSendCount *c, int max, TimestampTz now)
{
	double		at;

	if (c->bucket_count < max && c->previous_count > 0)
		at = c->bucket_start + c->window * (1.0 - (double) (max - c->bucket_count) / c->previous_count);
	else
		at = c->bucket_start + c->window + c->window * (1.0 - (double) max / Max(c->bucket_count, 1));
	/* (strictly below: a millisecond past the point where it equals max) */
	at += 1000.0;
	return at > now ? (TimestampTz) at : now + USECS_PER_SEC;
}

/* The cool-down of one number: no message to it within resend_interval. */
static void
check_cooldown(const PlivoOtpSendTally *t, TimestampTz now)
{
	int64		interval = (int64) plivo_otp_resend_interval * USECS_PER_SEC;
	TimestampTz oldest;
	TimestampTz latest = 0;
	bool		recent;

	if (plivo_otp_resend_interval <= 0)
		return;
	if (t->v2)
	{
		recent = t->number.has_previous_send && t->number.previous_send_at > now - interval;
		latest = t->number.previous_send_at;
	}
	else
		recent = recent_sends_v1(t->phone, now - interval, 1, &oldest, &latest) > 0;
	if (recent)
		refuse_send(PLIVO_OTP_ACT_REFUSED_COOLDOWN, "plivo_otp.resend_interval",
					psprintf("A code was sent to this number less than %d seconds ago.",
							 plivo_otp_resend_interval),
					latest + interval, now);
}

static void
refuse_number_cap(TimestampTz retry_at, TimestampTz now)
{
	refuse_send(PLIVO_OTP_ACT_REFUSED_NUMBER_CAP, "plivo_otp.number_max_sends",
				psprintf("This number was sent %d codes within plivo_otp.number_window (%d seconds).",
						 plivo_otp_number_max_sends, plivo_otp_number_window),
				retry_at, now);
}

/* The cap of one number: number_max_sends messages within number_window. */
static void
check_number_cap(const PlivoOtpSendTally *t, TimestampTz now)
{
	int			max = plivo_otp_number_max_sends;
	TimestampTz oldest;
	TimestampTz latest;

	if (max <= 0)
		return;
	if (t->v2)
	{
		if (window_count(&t->number, now) >= max)
			refuse_number_cap(window_retry_at(&t->number, max, now), now);
	}
	else if (recent_sends_v1(t->phone, now - (int64) plivo_otp_number_window * USECS_PER_SEC,
							 max, &oldest, &latest) >= max)
		refuse_number_cap(oldest + (int64) plivo_otp_number_window * USECS_PER_SEC, now);
}

/* The cap of one caller key (0.2.0 only: 0.1.0 has no caller keys). */
static void
check_caller(const PlivoOtpSendTally *t, TimestampTz now)
{
	int			max = plivo_otp_caller_max_sends;

	if (max > 0 && t->v2 && t->caller_digest && window_count(&t->caller, now) >= max)
		refuse_send(PLIVO_OTP_ACT_REFUSED_CALLER_CAP, "plivo_otp.caller_max_sends",
					psprintf("This caller key was used for %d codes within plivo_otp.caller_window (%d seconds).",
							 max, plivo_otp_caller_window),
					window_retry_at(&t->caller, max, now), now);
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
 * Take one send's locks, in otp_send's order (caller key, then number),
 * and with the 0.2.0 schema count the message in their rows; into *tally.
 * what begins a lock timeout's message ("code not sent").  SPI is
 * connected.  Count before deciding: a refusal (an ERROR) takes the count
 * back.  caller_key and caller_digest are NULL without a caller key.
 */
void
plivo_otp_tally_send(PlivoOtpSendTally *tally, const char *phone, const char *caller_key,
					 bytea *caller_digest, TimestampTz now, bool v2, const char *what)
{
	char	   *caller_lock = caller_key ? psprintf("caller:%s", caller_key) : NULL;
	char	   *caller_busy = psprintf("%s: another send with this caller key is still in progress", what);
	char	   *number_busy = psprintf("%s: another send to this number is still in progress", what);

	tally->v2 = v2;
	tally->phone = phone;
	tally->caller_digest = v2 ? caller_digest : NULL;
	if (!v2)
	{
		if (caller_lock)
			plivo_otp_lock_send_key(caller_lock, false, caller_busy);
		plivo_otp_lock_send_key(phone, false, number_busy);
		return;
	}
	if (caller_lock)
		plivo_otp_count_send_key(caller_lock, plivo_otp_caller_window, now, caller_busy,
								 &tally->caller);
	plivo_otp_count_send_key(phone, plivo_otp_number_window, now, number_busy, &tally->number);
}

/*
 * Apply every limit to one send (or otp_resend) whose locks and counts
 * plivo_otp_tally_send took; an ERROR when one is reached.  SPI is
 * connected.
 */
void
plivo_otp_check_send_policy(const PlivoOtpSendTally *tally, TimestampTz now)
{
	check_cooldown(tally, now);
	check_number_cap(tally, now);
	check_caller(tally, now);
	take_global_budget(now);
}

/*
 * The limits of the dispatcher's voice fallback (0.2.0 schema): the
 * number's cap and the global count, the same ERROR when one is reached.
 * No cool-down (the fallback follows an SMS by design, and comes once per
 * code) and no caller key (no application asked for it).  The number's
 * row is locked (plivo_otp_try_lock_send_key), so counting never waits.
 */
void
plivo_otp_check_fallback_policy(const char *phone, TimestampTz now)
{
	PlivoOtpSendTally tally = {.v2 = true,.phone = phone,.caller_digest = NULL};

	plivo_otp_count_send_key(phone, plivo_otp_number_window, now,
							 "voice fallback: the number is locked", &tally.number);
	check_number_cap(&tally, now);
	take_global_budget(now);
}
