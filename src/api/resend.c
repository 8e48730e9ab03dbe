/*-------------------------------------------------------------------------
 *
 * resend.c
 *	  otp_resend(): deliver a verification's live code again, by SMS or by
 *	  voice, in the caller's transaction; returns the new message's id.
 *
 * Order of work, as otp_send's: check the arguments, find the code's number,
 * serialise with other sends (caller key, then number: send_locks.c), read
 * the verification again under those locks and lock its row, require that
 * its code can be delivered again (pending, unexpired with enough life left,
 * attempts left, seal present: api/live_code.c), apply the sending policy
 * (send_policy.c: cool-down, caps, global count), queue the message (origin
 * 'resend') and ask for the dispatcher to be woken at commit.  A rollback
 * undoes all of it.
 *
 * SQLSTATEs: 22023 for an unknown verification id (no row is not a state an
 * application can wait out), 55000 when the code can no longer be
 * delivered again (issue a new one with otp_send), 53400 for a limit
 * (plivo_otp.allowed_countries among them, checked again at each resend).  The
 * state checks come before the limits, so a code that is over is told as
 * such rather than as a limit to wait for, and takes no place in the
 * global count.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_resend);

static PlivoOtpStatement find_number = {
	"SELECT phone FROM plivo_otp.verifications WHERE id = $1",
	1, {UUIDOID},
	.forced_plan = true, .indexes = "verifications_pkey"
};

/* Read again under the number's lock, with the latest snapshot. */
static PlivoOtpStatement lock_verification = {
	"SELECT state, expires_at, attempts, max_attempts, code_sealed, phone"
	" FROM plivo_otp.verifications WHERE id = $1 FOR UPDATE",
	1, {UUIDOID},
	.forced_plan = true, .indexes = "verifications_pkey"
};

static void
refuse_resend(const char *message, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg_internal("%s", message),
			 errdetail_internal("%s", detail),
			 errhint("Issue a new code with otp_send."),
			 errhidestmt(true)));
}

static void
unknown_verification(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("code not re-delivered: no such verification"),
			 errhint("Pass the id otp_send returned, while the verification is kept (plivo_otp.retention)."),
			 errhidestmt(true)));
}

/*
 * The code of verification id, if it can be delivered again, into code;
 * the row stays locked until commit.  An ERROR otherwise.  The number's
 * lock is held, so phone (read before it) is still the row's.
 */
static void
open_code(const pg_uuid_t *id, const char *channel, TimestampTz now, char *code,
		  TimestampTz *expires_at)
{
	Datum		args[1];
	bool		isnull;
	char	   *state;
	const char *why;
	Datum		sealed;
	bool		no_seal;
	int			life = plivo_otp_min_redelivery_life_by(channel);

	args[0] = UUIDPGetDatum(id);
	if (plivo_otp_exec_latest(&lock_verification, args, NULL, 1) != 1)
		unknown_verification();
	state = plivo_otp_get_text(0, 1);
	*expires_at = DatumGetTimestampTz(plivo_otp_get(0, 2, &isnull));
	/* (a code past its expiry is 'expired' once the dispatcher marked it) */
	if (strcmp(state, "pending") != 0 && strcmp(state, "expired") != 0)
		refuse_resend(psprintf("code not re-delivered: the verification is %s", state),
					  "Only a pending code can be delivered again.");
	if (strcmp(state, "expired") == 0 || *expires_at <= now)
		refuse_resend("code not re-delivered: the code expired",
					  "Only a pending code can be delivered again.");
	if (*expires_at <= now + (int64) life * USECS_PER_SEC)
		refuse_resend("code not re-delivered: the code expires too soon",
					  psprintf("A code is delivered again only while it has at least %d seconds left.",
							   life));
	sealed = plivo_otp_get(0, 5, &no_seal);
	why = plivo_otp_open_live_code(id, DatumGetInt32(plivo_otp_get(0, 3, &isnull)),
								   DatumGetInt32(plivo_otp_get(0, 4, &isnull)),
								   no_seal ? NULL : DatumGetByteaPP(sealed), code);
	if (why)
		refuse_resend("code not re-delivered: the code can no longer be delivered", why);
}

static Datum
resend_code(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id;
	char	   *channel;
	char	   *caller_key;
	bytea	   *caller_digest;
	char	   *phone;
	PlivoOtpPhoneInfo number;
	PlivoOtpSendTally tally;
	char		code[PLIVO_OTP_MAX_CODE_LEN + 1];
	TimestampTz now;
	TimestampTz expires_at;
	pg_uuid_t  *message_id = palloc(sizeof(pg_uuid_t));
	Datum		args[1];

	plivo_otp_require_preload();
	plivo_otp_require_dispatch_database();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("verification id must not be null"),
				 errhint("Pass the id otp_send returned."),
				 errhidestmt(true)));
	id = PG_GETARG_UUID_P(0);
	channel = plivo_otp_channel_arg(fcinfo, 1);
	caller_digest = plivo_otp_caller_key_arg(fcinfo, 2, &caller_key);

	plivo_otp_spi_connect();
	if (!plivo_otp_schema_is_v2())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("code not re-delivered: otp_resend needs version 0.2.0 of plivo_otp"),
				 errhint("Run ALTER EXTENSION plivo_otp UPDATE."),
				 errhidestmt(true)));
	args[0] = UUIDPGetDatum(id);
	if (plivo_otp_exec(&find_number, args, NULL, true, 1) != 1)
		unknown_verification();
	phone = plivo_otp_get_text(0, 1);
	/*
	 * Checked again, not only when its code was sent: an operator who takes
	 * a country out of plivo_otp.allowed_countries (toll fraud, say) stops
	 * the resends to it too, and the channel may be another now.
	 */
	plivo_otp_check_destination(phone, &number);
	plivo_otp_check_channel_for_number(phone, channel, &number);

	/*
	 * otp_send's order: caller key, then number (no idempotency key here),
	 * the message counted in their counters; a refusal below takes the
	 * count back.
	 */
	now = GetCurrentTimestamp();
	plivo_otp_tally_send(&tally, phone, caller_key, caller_digest, now, true,
						 "code not re-delivered");
	open_code(id, channel, now, code, &expires_at);
	PG_TRY();
	{
		PlivoOtpOutbound m = {
			.verification_id = id,
			.phone = phone,
			.channel = channel,
			.region = number.region,
			.origin = "resend",
			.code = code,
			.now = now,
			.expires_at = expires_at,
			.caller_digest = caller_digest,
			.idempotency_key = NULL,
			.v2 = true
		};

		plivo_otp_check_send_policy(&tally, now);
		plivo_otp_queue_message(&m, message_id);
	}
	PG_FINALLY();
	{
		explicit_bzero(code, sizeof(code));
	}
	PG_END_TRY();
	plivo_otp_wake_at_commit();
	SPI_finish();

	plivo_otp_count(PLIVO_OTP_COUNTER_SENDS, 1);
	PG_RETURN_UUID_P(message_id);
}

Datum
plivo_otp_resend(PG_FUNCTION_ARGS)
{
	return plivo_otp_hiding_statement(resend_code, fcinfo);
}
