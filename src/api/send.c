/*-------------------------------------------------------------------------
 *
 * send.c
 *	  otp_send(): issue a code and queue its message in the caller's
 *	  transaction.
 *
 * Order of work: check the arguments, serialise sends per idempotency key
 * (send_locks.c), answer a repeated idempotency key, serialise per caller
 * key and number while counting the message in their counters and apply
 * the sending policy (send_policy.c), then either re-deliver the live
 * code of the same number and purpose (a repeated request, or an attacker
 * trying to cancel a victim's code: the code stays the same, as Twilio
 * Verify does) or cancel the previous pending code and store a new one as
 * its digest; queue the sealed message and ask for the dispatcher to be
 * woken at commit.  A rollback undoes all of it: nothing is ever sent for it.
 *
 * A live code stays sealed (AES-256-GCM, verifications.code_sealed) so it can
 * be re-delivered; it is wiped when the code is approved, locked, canceled
 * or expires.  With the 0.1.0 schema installed (an upgrade pending) every
 * send issues a new code, as 0.1.0 did.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_send);

#define MAX_IDEMPOTENCY_KEY_LEN 200

/* Keys are kept on each message: a re-delivery's key answers a retry of it too. */
static PlivoOtpStatement find_idempotent = {
	"SELECT v.id, v.phone, v.purpose FROM plivo_otp.messages m"
	" JOIN plivo_otp.verifications v ON v.id = m.verification_id"
	" WHERE m.idempotency_key = $1 AND v.expires_at > $2"
	" ORDER BY m.created_at DESC LIMIT 1",
	2, {TEXTOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "messages_idempotency verifications_pkey"
};

static PlivoOtpStatement find_idempotent_v1 = {
	"SELECT id, phone, purpose FROM plivo_otp.verifications"
	" WHERE idempotency_key = $1 AND expires_at > $2"
	" ORDER BY created_at DESC LIMIT 1",
	2, {TEXTOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "verifications_idempotency"
};

/*
 * The number's pending code for this purpose, locked until commit (the
 * unique partial index verifications_one_pending finds it): delivered again
 * if it can be, else canceled by its id (cancel_code).  One look-up whether
 * or not there is one: a number without a pending code costs no update.
 */
static PlivoOtpStatement find_pending = {
	"SELECT id, code_sealed, expires_at, attempts, max_attempts FROM plivo_otp.verifications"
	" WHERE phone = $1 AND purpose = $2 AND state = 'pending' FOR UPDATE",
	2, {TEXTOID, TEXTOID},
	.forced_plan = true, .indexes = "verifications_one_pending"
};

static PlivoOtpStatement cancel_code = {
	"UPDATE plivo_otp.verifications SET state = 'canceled', updated_at = $2, code_sealed = NULL"
	" WHERE id = $1 AND state = 'pending'",
	2, {UUIDOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "verifications_pkey"
};

/* 0.1.0's: the number's pending code for this purpose, canceled. */
static PlivoOtpStatement cancel_pending_stmt_v1 = {
	"UPDATE plivo_otp.verifications SET state = 'canceled', updated_at = $3"
	" WHERE phone = $1 AND purpose = $2 AND state = 'pending' RETURNING id",
	3, {TEXTOID, TEXTOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "verifications_one_pending"
};

static PlivoOtpStatement insert_verification = {
	"INSERT INTO plivo_otp.verifications"
	" (id, phone, purpose, channel, code_digest, max_attempts, idempotency_key,"
	"  created_at, expires_at, updated_at, code_sealed, region, number_type, locale)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8, $10, $11, $12, $13)",
	13, {UUIDOID, TEXTOID, TEXTOID, TEXTOID, BYTEAOID, INT4OID, TEXTOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, BYTEAOID, TEXTOID, TEXTOID, TEXTOID}
};

static PlivoOtpStatement insert_verification_v1 = {
	"INSERT INTO plivo_otp.verifications"
	" (id, phone, purpose, channel, code_digest, max_attempts, idempotency_key,"
	"  created_at, expires_at, updated_at)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8)",
	9, {UUIDOID, TEXTOID, TEXTOID, TEXTOID, BYTEAOID, INT4OID, TEXTOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/* What one otp_send call asks for, checked. */
typedef struct SendRequest
{
	char		phone[PLIVO_OTP_MAX_PHONE_LEN + 1];
	char	   *channel;
	char	   *purpose;
	char	   *idempotency_key;	/* NULL when none */
	char	   *caller_key;		/* NULL when none */
	bytea	   *caller_digest;	/* its keyed hash: no caller key is stored */
	PlivoOtpPhoneInfo number;	/* its region and type (libphonenumber) */
	char	   *locale;			/* canonical BCP 47 tag, NULL when none */
	bool		v2;				/* the 0.2.0 schema is installed */
} SendRequest;

/*
 * The dispatcher drains only the queue of plivo_otp.database: a code queued
 * in any other database would never be sent, so refuse it there, loudly.
 * otp_resend calls it too.
 */
void
plivo_otp_require_dispatch_database(void)
{
	/* A backend never changes database (nor plivo_otp.database, a postmaster setting). */
	static bool checked = false;
	char	   *here;

	if (checked)
		return;
	here = get_database_name(MyDatabaseId);
	checked = here != NULL && strcmp(here, plivo_otp_database) == 0;
	if (!checked)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("plivo_otp sends codes only from database \"%s\"", plivo_otp_database),
				 errdetail("The dispatcher drains the queue of the database named by plivo_otp.database; a code queued here would never be sent."),
				 errhint("Call otp_send in that database, or set plivo_otp.database and restart.")));
}

/* A bytea holding len bytes of data. */
static bytea *
make_bytea(const uint8 *data, int len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return b;
}

/* The arguments, each checked, and the number against its country's (destination.c). */
static void
read_send_args(FunctionCallInfo fcinfo, SendRequest *req)
{
	plivo_otp_phone_arg(fcinfo, 0, req->phone);
	req->channel = plivo_otp_channel_arg(fcinfo, 1);
	req->purpose = plivo_otp_purpose_arg(fcinfo, 2);
	req->idempotency_key = NULL;
	if (!PG_ARGISNULL(3))
	{
		req->idempotency_key = text_to_cstring(PG_GETARG_TEXT_PP(3));
		if (strlen(req->idempotency_key) < 1 ||
			strlen(req->idempotency_key) > MAX_IDEMPOTENCY_KEY_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid idempotency key"),
					 errdetail("An idempotency key is 1 to %d bytes long.", MAX_IDEMPOTENCY_KEY_LEN),
					 errhint("Use a request id, such as a UUID, or pass NULL."),
					 errhidestmt(true)));
	}

	req->caller_digest = plivo_otp_caller_key_arg(fcinfo, 4, &req->caller_key);
	req->locale = PG_NARGS() > 5 ? plivo_otp_locale_arg(fcinfo, 5) : NULL;

	plivo_otp_check_destination(req->phone, &req->number);
	plivo_otp_check_channel_for_number(req->phone, req->channel, &req->number);
}

/*
 * A repeated idempotency key while its code lives: true, with the id of the
 * code it issued in *id (nothing more is queued).  The same key for another
 * number or purpose is an error.
 */
static bool
replay_idempotent(const SendRequest *req, TimestampTz now, pg_uuid_t *id)
{
	Datum		args[2];
	bool		isnull;
	char	   *old_phone;
	char	   *old_purpose;

	args[0] = CStringGetTextDatum(req->idempotency_key);
	args[1] = TimestampTzGetDatum(now);
	if (plivo_otp_exec_latest(req->v2 ? &find_idempotent : &find_idempotent_v1, args, NULL, 1) != 1)
		return false;
	old_phone = plivo_otp_get_text(0, 2);
	old_purpose = plivo_otp_get_text(0, 3);
	if (strcmp(old_phone, req->phone) != 0 || strcmp(old_purpose, req->purpose) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency key was already used for another number or purpose"),
				 errhint("Use a new key for each distinct request."),
				 errhidestmt(true)));
	memcpy(id, DatumGetUUIDP(plivo_otp_get(0, 1, &isnull)), sizeof(pg_uuid_t));
	return true;
}

/*
 * The number's pending code for this purpose (0.2.0 schema), locked until
 * commit: true if it can be delivered again (api/live_code.c), with its id,
 * its code (out, PLIVO_OTP_MAX_CODE_LEN + 1 bytes) and its expiry.  One that
 * cannot (too close to its expiry, attempts used up, no longer sealed) is
 * canceled with its unsent messages, for a new code to replace it.
 */
static bool
reuse_or_cancel_pending(const SendRequest *req, TimestampTz now, pg_uuid_t *id, char *code,
						TimestampTz *expires_at)
{
	TimestampTz live_until = now + (int64) plivo_otp_min_redelivery_life_by(req->channel) * USECS_PER_SEC;
	TimestampTz its_expiry;
	Datum		args[2];
	Datum		sealed;
	bool		isnull;
	bool		no_seal;

	args[0] = CStringGetTextDatum(req->phone);
	args[1] = CStringGetTextDatum(req->purpose);
	if (plivo_otp_exec_latest(&find_pending, args, NULL, 1) != 1)
		return false;
	memcpy(id, DatumGetUUIDP(plivo_otp_get(0, 1, &isnull)), sizeof(pg_uuid_t));
	its_expiry = DatumGetTimestampTz(plivo_otp_get(0, 3, &isnull));
	sealed = plivo_otp_get(0, 2, &no_seal);
	if (its_expiry > live_until &&
		plivo_otp_open_live_code(id, DatumGetInt32(plivo_otp_get(0, 4, &isnull)),
								 DatumGetInt32(plivo_otp_get(0, 5, &isnull)),
								 no_seal ? NULL : DatumGetByteaPP(sealed), code) == NULL)
	{
		/* (*expires_at is the new code's until now: only a live code changes it.) */
		*expires_at = its_expiry;
		return true;
	}

	/*
	 * The row is locked, so this finds it, except under REPEATABLE READ or
	 * SERIALIZABLE when the send that made it committed after this
	 * transaction's snapshot (we waited for its number lock): then the new
	 * code could not be stored beside it.
	 */
	args[0] = UUIDPGetDatum(id);
	args[1] = TimestampTzGetDatum(now);
	if (plivo_otp_exec(&cancel_code, args, NULL, false, 0) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("code not sent: another send to this number committed after this transaction began"),
				 errdetail("Its code cannot be replaced from this transaction's snapshot."),
				 errhint("Retry the transaction."),
				 errhidestmt(true)));
	plivo_otp_cancel_unsent_messages(args[0], now);
	return false;
}

/* 0.1.0's schema: cancel the number's pending code for this purpose. */
static void
cancel_pending_v1(const SendRequest *req, TimestampTz now)
{
	Datum		args[3];
	bool		isnull;

	args[0] = CStringGetTextDatum(req->phone);
	args[1] = CStringGetTextDatum(req->purpose);
	args[2] = TimestampTzGetDatum(now);
	if (plivo_otp_exec(&cancel_pending_stmt_v1, args, NULL, false, 0) == 1)
		plivo_otp_cancel_unsent_messages(plivo_otp_get(0, 1, &isnull), now);
}

/*
 * Store a new code as its digest (and, for re-delivery, sealed).  The code
 * itself is left in code for the message.
 */
static void
store_verification(const SendRequest *req, const pg_uuid_t *id, char *code,
				   TimestampTz now, TimestampTz expires_at)
{
	uint8		digest[PLIVO_OTP_DIGEST_LEN];
	Datum		args[13];
	char		nulls[13];

	plivo_otp_generate_code(plivo_otp_code_length, code);
	plivo_otp_code_digest(id, req->purpose, code, digest);

	memset(nulls, ' ', sizeof(nulls));
	args[0] = UUIDPGetDatum(id);
	args[1] = CStringGetTextDatum(req->phone);
	args[2] = CStringGetTextDatum(req->purpose);
	args[3] = CStringGetTextDatum(req->channel);
	args[4] = PointerGetDatum(make_bytea(digest, PLIVO_OTP_DIGEST_LEN));
	args[5] = Int32GetDatum(plivo_otp_max_attempts);
	args[6] = req->idempotency_key ? CStringGetTextDatum(req->idempotency_key) : (Datum) 0;
	nulls[6] = req->idempotency_key ? ' ' : 'n';
	args[7] = TimestampTzGetDatum(now);
	args[8] = TimestampTzGetDatum(expires_at);
	explicit_bzero(digest, sizeof(digest));
	if (req->v2)
	{
		args[9] = PointerGetDatum(plivo_otp_seal(PLIVO_OTP_KEY_CODE_SEAL, id, code));
		/* region: NULL for a number of no single region (+800, ...) */
		args[10] = req->number.region[0] ? CStringGetTextDatum(req->number.region) : (Datum) 0;
		nulls[10] = req->number.region[0] ? ' ' : 'n';
		args[11] = CStringGetTextDatum(plivo_otp_number_type_name(req->number.type));
		args[12] = req->locale ? CStringGetTextDatum(req->locale) : (Datum) 0;
		nulls[12] = req->locale ? ' ' : 'n';
		plivo_otp_exec(&insert_verification, args, nulls, false, 0);
	}
	else
		plivo_otp_exec(&insert_verification_v1, args, nulls, false, 0);
}

/* Queue the code's message, sealed; the dispatcher is woken at commit. */
static void
queue_message(const SendRequest *req, const pg_uuid_t *verification_id,
			  const char *code, TimestampTz now, TimestampTz expires_at, bool redelivery)
{
	PlivoOtpOutbound m = {
		.verification_id = verification_id,
		.phone = req->phone,
		.channel = req->channel,
		.region = req->number.region,
		.origin = redelivery ? "redeliver" : "send",
		.code = code,
		.now = now,
		.expires_at = expires_at,
		.caller_digest = req->caller_digest,
		.idempotency_key = req->idempotency_key,
		.locale = req->locale,
		.v2 = req->v2
	};
	pg_uuid_t	message_id;

	plivo_otp_queue_message(&m, &message_id);
	plivo_otp_wake_at_commit();
}

static Datum
send_code(PG_FUNCTION_ARGS)
{
	SendRequest req;
	PlivoOtpSendTally tally;
	char		code[PLIVO_OTP_MAX_CODE_LEN + 1];
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));
	TimestampTz now;
	TimestampTz expires_at;
	bool		redelivery;

	plivo_otp_require_preload();
	plivo_otp_require_dispatch_database();
	read_send_args(fcinfo, &req);

	plivo_otp_spi_connect();
	req.v2 = plivo_otp_schema_is_v2();

	/* Serialise with other sends: idempotency key, caller key, number, in that order. */
	if (req.idempotency_key)
		plivo_otp_lock_send_key(psprintf("key:%s", req.idempotency_key), req.v2,
								"code not sent: another send with this idempotency key is still in progress");
	now = GetCurrentTimestamp();
	expires_at = now + (int64) plivo_otp_code_ttl * USECS_PER_SEC;
	if (req.idempotency_key && replay_idempotent(&req, now, id))
	{
		SPI_finish();
		PG_RETURN_UUID_P(id);
	}
	/* the caller key's and the number's locks, and this message counted */
	plivo_otp_tally_send(&tally, req.phone, req.caller_key, req.caller_digest, now, req.v2,
						 "code not sent");
	plivo_otp_check_send_policy(&tally, now);
	if (req.v2)
		redelivery = reuse_or_cancel_pending(&req, now, id, code, &expires_at);
	else
	{
		cancel_pending_v1(&req, now);
		redelivery = false;
	}
	if (!redelivery)
	{
		plivo_otp_new_id(id);
		store_verification(&req, id, code, now, expires_at);
	}
	queue_message(&req, id, code, now, expires_at, redelivery);
	explicit_bzero(code, sizeof(code));
	SPI_finish();

	plivo_otp_count(PLIVO_OTP_COUNTER_SENDS, 1);
	PG_RETURN_UUID_P(id);
}

Datum
plivo_otp_send(PG_FUNCTION_ARGS)
{
	return plivo_otp_hiding_statement(send_code, fcinfo);
}
