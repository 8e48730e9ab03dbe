/*-------------------------------------------------------------------------
 *
 * expiry.c
 *	  Codes past their expiry: the dispatcher's one-second tick marks them
 *	  'expired' (a pending code stays 'pending' in the table otherwise, and
 *	  only its readers treat it as expired), so that the change is a row
 *	  update that NOTIFY plivo_otp_events reports (api/events.c) and the
 *	  code leaves the one-pending index.
 *
 * Batches of EXPIRY_BATCH codes, the earliest expiry first, each in a
 * short transaction of its own, until none is left or EXPIRY_BUDGET_MS
 * have gone by (the rest wait for the next tick).  A code someone holds
 * locked (an otp_check in progress, which marks it itself) is skipped
 * (SKIP LOCKED).  The seal of an expired code is wiped with it.
 *
 * Every reader copes with either form of an expired code: otp_check and
 * otp_verify answer 'expired' for the state and for a pending code past
 * its expiry, otp_status shows 'expired' for both, otp_cancel, otp_resend,
 * a repeated otp_send and the voice fallback act only on a pending,
 * unexpired code, and the dispatcher sends only for a pending one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/timestamp.h"

#include "dispatcher.h"

#define EXPIRY_BATCH 1000
#define EXPIRY_BUDGET_MS 50

/* In the order of the index of pending codes by expiry, changed by primary key. */
#define MARK_EXPIRED(wipe) \
	"UPDATE plivo_otp.verifications SET state = 'expired', updated_at = $1" wipe \
	" WHERE id = ANY (ARRAY(SELECT id FROM plivo_otp.verifications" \
	"  WHERE state = 'pending' AND expires_at <= $1" \
	"  ORDER BY expires_at LIMIT " CppAsString2(EXPIRY_BATCH) " FOR UPDATE SKIP LOCKED))"

static PlivoOtpStatement mark_expired = {
	MARK_EXPIRED(", code_sealed = NULL"), 1, {TIMESTAMPTZOID}
};

/* 0.1.0's table, while an upgrade is pending: no seal. */
static PlivoOtpStatement mark_expired_v1 = {
	MARK_EXPIRED(""), 1, {TIMESTAMPTZOID}
};

/* A unit of work: one batch (arg: int *, set to the codes marked). */
static void
mark_expired_work(void *arg)
{
	Datum		now = TimestampTzGetDatum(GetCurrentTimestamp());

	*(int *) arg = plivo_otp_exec_forced(plivo_otp_schema_is_v2() ? &mark_expired : &mark_expired_v1,
										 &now, NULL, 0);
}

/* Mark the codes past their expiry 'expired', within EXPIRY_BUDGET_MS. */
void
plivo_otp_mark_expired_codes(void)
{
	TimestampTz deadline = GetCurrentTimestamp() + EXPIRY_BUDGET_MS * 1000;
	int			marked;

	do
	{
		marked = 0;
		if (!plivo_otp_run_work("marking expired codes", mark_expired_work, &marked))
			return;
	} while (marked == EXPIRY_BATCH && GetCurrentTimestamp() < deadline);
}
