/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Purging old rows: verifications (with their messages) and delivery
 *	  events older than plivo_otp.retention, and signature nonces older
 *	  than a day.
 *
 * Each statement deletes at most PURGE_BATCH rows, so one turn of the
 * dispatcher's loop never holds locks or a transaction for long.  A
 * verification with a message still in flight is kept: its outcome is yet
 * to be recorded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/timestamp.h"

#include "dispatcher.h"

#define PURGE_BATCH 1000

/*
 * Nonces are remembered for a day: Plivo retries a callback for minutes, and
 * a replay of an older one finds its event already stored (a duplicate).
 * listener/delivery.c bounds V2 signatures by the same window.
 */
#define NONCE_WINDOW_SECS PLIVO_OTP_NONCE_WINDOW_SECS

static PlivoOtpStatement purge_verifications = {
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

static PlivoOtpStatement purge_nonces = {
	"DELETE FROM plivo_otp.callback_nonces WHERE nonce IN ("
	" SELECT nonce FROM plivo_otp.callback_nonces WHERE seen_at < $1"
	" LIMIT " CppAsString2(PURGE_BATCH) ")",
	1, {TIMESTAMPTZOID}
};

/* A unit of work (common/worker.c): one batch of each purge. */
void
plivo_otp_purge_old_rows(void *arg)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum		args[1];

	args[0] = TimestampTzGetDatum(now - (int64) plivo_otp_retention * USECS_PER_SEC);
	plivo_otp_exec(&purge_verifications, args, NULL, false, 0);
	plivo_otp_exec(&purge_events, args, NULL, false, 0);
	args[0] = TimestampTzGetDatum(now - NONCE_WINDOW_SECS * USECS_PER_SEC);
	plivo_otp_exec(&purge_nonces, args, NULL, false, 0);
}
