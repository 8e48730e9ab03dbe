/*-------------------------------------------------------------------------
 *
 * send.c
 *	  otp_send(): issue a code and queue its message in the caller's
 *	  transaction.
 *
 * Order of work: check the arguments, serialise sends to one number (and
 * one idempotency key) with transaction-scoped advisory locks, answer a
 * repeated idempotency key, apply the sending policy, cancel the previous
 * pending code of the same number and purpose, store the new code's digest,
 * queue the sealed message and ask for the dispatcher to be woken at commit.
 * A rollback undoes all of it: nothing is ever sent for it.
 *
 * The policy queries run with the latest snapshot, taken after the advisory
 * lock is granted, whatever the caller's isolation level: a send that waited
 * for a concurrent send to the same number sees it, so no isolation level
 * lets a caller past the limits.  The locks' tags are keyed with the secret
 * and cannot be built from SQL, and every wait for one is bounded by
 * plivo_otp.send_lock_timeout.  The global cap is counted in shared memory
 * (shmem/send_budget.c), where uncommitted sends count too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include <limits.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_send);

#define MAX_IDEMPOTENCY_KEY_LEN 200

/* The fourth field of our advisory-lock tags ("PL"): no SQL function builds it. */
#define PLIVO_OTP_LOCK_FIELD4 0x504C

static PlivoOtpStatement find_idempotent = {
	"SELECT id, phone, purpose FROM plivo_otp.verifications"
	" WHERE idempotency_key = $1 AND expires_at > $2"
	" ORDER BY created_at DESC LIMIT 1",
	2, {TEXTOID, TIMESTAMPTZOID}
};

static PlivoOtpStatement latest_send_to_number = {
	"SELECT max(created_at) FROM plivo_otp.verifications"
	" WHERE phone = $1 AND created_at > $2",
	2, {TEXTOID, TIMESTAMPTZOID}
};

/* The most recent $3 sends within the window: their count and the oldest. */
static PlivoOtpStatement recent_sends_to_number = {
	"SELECT count(*), min(created_at) FROM ("
	" SELECT created_at FROM plivo_otp.verifications"
	" WHERE phone = $1 AND created_at > $2"
	" ORDER BY created_at DESC LIMIT $3) s",
	3, {TEXTOID, TIMESTAMPTZOID, INT4OID}
};

static PlivoOtpStatement cancel_pending = {
	"WITH canceled AS ("
	" UPDATE plivo_otp.verifications SET state = 'canceled', updated_at = $3"
	" WHERE phone = $1 AND purpose = $2 AND state = 'pending' RETURNING id)"
	" UPDATE plivo_otp.messages m"
	" SET dispatch_state = 'canceled', body = NULL, updated_at = $3"
	" FROM canceled WHERE m.verification_id = canceled.id AND m.dispatch_state = 'pending'",
	3, {TEXTOID, TEXTOID, TIMESTAMPTZOID}
};

static PlivoOtpStatement insert_verification = {
	"INSERT INTO plivo_otp.verifications"
	" (id, phone, purpose, channel, code_digest, max_attempts, idempotency_key,"
	"  created_at, expires_at, updated_at)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8)",
	9, {UUIDOID, TEXTOID, TEXTOID, TEXTOID, BYTEAOID, INT4OID, TEXTOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID}
};

static PlivoOtpStatement insert_message = {
	"INSERT INTO plivo_otp.messages"
	" (id, verification_id, channel, phone, body, next_try_at, expires_at,"
	"  created_at, updated_at)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $6)",
	7, {UUIDOID, UUIDOID, TEXTOID, TEXTOID, BYTEAOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/*
 * The dispatcher drains only the queue of plivo_otp.database: a code queued
 * in any other database would never be sent, so refuse it there, loudly.
 */
static void
require_dispatch_database(void)
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

/*
 * The advisory-lock tag of a key: the database, 64 bits of HMAC-SHA256 of
 * the key under the lock-tag key, and a fourth field that no SQL function
 * builds (pg_advisory_lock uses 1 and 2).  So no login can take our locks
 * to block sends, and pg_locks does not tell which number is being sent to.
 */
static void
lock_tag_of(const char *key, LOCKTAG *tag)
{
	uint8		mac[32];
	unsigned int len = 0;
	uint32		h[2];

	if (HMAC(EVP_sha256(), plivo_otp_derived_key(PLIVO_OTP_KEY_LOCK_TAG), PLIVO_OTP_SECRET_LEN,
			 (const unsigned char *) key, strlen(key), mac, &len) == NULL || len != sizeof(mac))
		elog(ERROR, "plivo_otp: could not compute a lock tag");
	memcpy(h, mac, sizeof(h));
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, h[0], h[1], PLIVO_OTP_LOCK_FIELD4);
}

/*
 * Wait for a lock another transaction holds, at most
 * plivo_otp.send_lock_timeout (or the caller's shorter lock_timeout).
 */
static void
wait_for_lock(const LOCKTAG *tag)
{
	int			nest = NewGUCNestLevel();
	MemoryContext caller = CurrentMemoryContext;

	if (LockTimeout == 0 || LockTimeout > plivo_otp_send_lock_timeout)
		(void) set_config_option("lock_timeout", psprintf("%d", plivo_otp_send_lock_timeout),
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	PG_TRY();
	{
		(void) LockAcquire(tag, ExclusiveLock, false, false);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			PG_RE_THROW();
		FlushErrorState();
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("code not sent: another send to this number is still in progress"),
				 errdetail("Its transaction did not end within %d ms.", LockTimeout),
				 errhint("Retry when the other transaction has committed or rolled back."),
				 errhidestmt(true)));
	}
	PG_END_TRY();
	AtEOXact_GUC(true, nest);
}

/* Serialise work on one key (a number, an idempotency key) within this transaction. */
static void
lock_key(const char *key)
{
	LOCKTAG		tag;

	lock_tag_of(key, &tag);
	if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		wait_for_lock(&tag);
}

static void
refuse_send(const char *setting, const char *detail, TimestampTz retry_at, TimestampTz now)
{
	long		secs;
	int			usecs;

	plivo_otp_count(PLIVO_OTP_COUNTER_REFUSED_SENDS, 1);
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
 * Cool-down, per-number cap and global cap; an ERROR when one is reached.
 * The per-number limits count rows under the number's lock with the latest
 * snapshot, which includes this transaction's own earlier sends; the global
 * cap counts in shared memory, uncommitted sends included.
 */
static void
check_send_policy(const char *phone, TimestampTz now)
{
	Datum		args[3];
	bool		isnull;
	TimestampTz latest;
	TimestampTz retry_at;

	if (plivo_otp_resend_interval > 0)
	{
		args[0] = CStringGetTextDatum(phone);
		args[1] = TimestampTzGetDatum(now - (int64) plivo_otp_resend_interval * USECS_PER_SEC);
		plivo_otp_exec_latest(&latest_send_to_number, args, NULL, 1);
		latest = DatumGetTimestampTz(plivo_otp_get(0, 1, &isnull));
		if (!isnull)
			refuse_send("plivo_otp.resend_interval",
						psprintf("A code was sent to this number less than %d seconds ago.",
								 plivo_otp_resend_interval),
						latest + (int64) plivo_otp_resend_interval * USECS_PER_SEC, now);
	}

	if (plivo_otp_number_max_sends > 0)
	{
		args[0] = CStringGetTextDatum(phone);
		args[1] = TimestampTzGetDatum(now - (int64) plivo_otp_number_window * USECS_PER_SEC);
		args[2] = Int32GetDatum(plivo_otp_number_max_sends);
		plivo_otp_exec_latest(&recent_sends_to_number, args, NULL, 1);
		if (DatumGetInt64(plivo_otp_get(0, 1, &isnull)) >= plivo_otp_number_max_sends)
			refuse_send("plivo_otp.number_max_sends",
						psprintf("This number was sent %d codes within plivo_otp.number_window (%d seconds).",
								 plivo_otp_number_max_sends, plivo_otp_number_window),
						DatumGetTimestampTz(plivo_otp_get(0, 2, &isnull)) +
						(int64) plivo_otp_number_window * USECS_PER_SEC, now);
	}

	/*
	 * Every send takes its place in the shared count, also with the cap off
	 * (so turning it on finds the hour counted); see shmem/send_budget.c.
	 */
	if (!plivo_otp_budget_take(plivo_otp_global_max_sends_per_hour > 0 ?
							   plivo_otp_global_max_sends_per_hour : INT_MAX,
							   now, &retry_at))
		refuse_send("plivo_otp.global_max_sends_per_hour",
					psprintf("The server sent %d codes within the last hour.",
							 plivo_otp_global_max_sends_per_hour),
					retry_at, now);
}

/* The SMS text: the template with {code} and {minutes} filled in. */
static char *
render_sms(const char *code, int ttl_seconds)
{
	StringInfoData buf;
	const char *p = plivo_otp_sms_template;

	initStringInfo(&buf);
	while (*p)
	{
		if (strncmp(p, "{code}", 6) == 0)
		{
			appendStringInfoString(&buf, code);
			p += 6;
		}
		else if (strncmp(p, "{minutes}", 9) == 0)
		{
			appendStringInfo(&buf, "%d", (ttl_seconds + 59) / 60);
			p += 9;
		}
		else
			appendStringInfoChar(&buf, *p++);
	}
	return buf.data;
}

/* What one otp_send call asks for, checked. */
typedef struct SendRequest
{
	char		phone[PLIVO_OTP_MAX_PHONE_LEN + 1];
	char	   *channel;
	char	   *purpose;
	char	   *idempotency_key;	/* NULL when none */
} SendRequest;

/* The arguments, each checked, and the number's country against the allow-list. */
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

	if (!plivo_otp_country_allowed(req->phone, plivo_otp_allowed_countries))
	{
		plivo_otp_count(PLIVO_OTP_COUNTER_REFUSED_SENDS, 1);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("code not sent: the number's country is not allowed"),
				 errdetail("The number %s does not start with a prefix in plivo_otp.allowed_countries.",
						   plivo_otp_mask_phone(req->phone)),
				 errhint("Ask the administrator to add its calling code to plivo_otp.allowed_countries."),
				 errhidestmt(true)));
	}
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
	if (plivo_otp_exec_latest(&find_idempotent, args, NULL, 1) != 1)
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
 * Cancel the number's pending code for this purpose, and store a new one
 * as its digest.  The code itself is left in code for the message.
 */
static void
store_verification(const SendRequest *req, const pg_uuid_t *id, char *code,
				   TimestampTz now, TimestampTz expires_at)
{
	uint8		digest[PLIVO_OTP_DIGEST_LEN];
	bytea	   *digest_bytea;
	Datum		args[9];
	char		nulls[9];

	args[0] = CStringGetTextDatum(req->phone);
	args[1] = CStringGetTextDatum(req->purpose);
	args[2] = TimestampTzGetDatum(now);
	plivo_otp_exec(&cancel_pending, args, NULL, false, 0);

	plivo_otp_generate_code(plivo_otp_code_length, code);
	plivo_otp_code_digest(id, req->purpose, code, digest);
	digest_bytea = palloc(VARHDRSZ + PLIVO_OTP_DIGEST_LEN);
	SET_VARSIZE(digest_bytea, VARHDRSZ + PLIVO_OTP_DIGEST_LEN);
	memcpy(VARDATA(digest_bytea), digest, PLIVO_OTP_DIGEST_LEN);
	explicit_bzero(digest, sizeof(digest));

	memset(nulls, ' ', sizeof(nulls));
	args[0] = UUIDPGetDatum(id);
	args[1] = CStringGetTextDatum(req->phone);
	args[2] = CStringGetTextDatum(req->purpose);
	args[3] = CStringGetTextDatum(req->channel);
	args[4] = PointerGetDatum(digest_bytea);
	args[5] = Int32GetDatum(plivo_otp_max_attempts);
	args[6] = req->idempotency_key ? CStringGetTextDatum(req->idempotency_key) : (Datum) 0;
	nulls[6] = req->idempotency_key ? ' ' : 'n';
	args[7] = TimestampTzGetDatum(now);
	args[8] = TimestampTzGetDatum(expires_at);
	plivo_otp_exec(&insert_verification, args, nulls, false, 0);
}

/* Queue the code's message, sealed; the dispatcher is woken at commit. */
static void
queue_message(const SendRequest *req, const pg_uuid_t *verification_id,
			  const char *code, TimestampTz now, TimestampTz expires_at)
{
	pg_uuid_t	message_id;
	char	   *message_text;
	bytea	   *sealed;
	Datum		args[7];

	plivo_otp_random_uuid(&message_id);
	message_text = render_sms(code, plivo_otp_code_ttl);
	sealed = plivo_otp_encrypt_body(&message_id, message_text);
	explicit_bzero(message_text, strlen(message_text));

	args[0] = UUIDPGetDatum(&message_id);
	args[1] = UUIDPGetDatum(verification_id);
	args[2] = CStringGetTextDatum(req->channel);
	args[3] = CStringGetTextDatum(req->phone);
	args[4] = PointerGetDatum(sealed);
	args[5] = TimestampTzGetDatum(now);
	args[6] = TimestampTzGetDatum(expires_at);
	plivo_otp_exec(&insert_message, args, NULL, false, 0);
	plivo_otp_wake_at_commit();
}

static Datum
send_code(PG_FUNCTION_ARGS)
{
	SendRequest req;
	char		code[PLIVO_OTP_MAX_CODE_LEN + 1];
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));
	TimestampTz now;
	TimestampTz expires_at;

	plivo_otp_require_preload();
	require_dispatch_database();
	read_send_args(fcinfo, &req);

	/* Key first, then number: every caller takes them in this order. */
	if (req.idempotency_key)
		lock_key(psprintf("key:%s", req.idempotency_key));
	lock_key(req.phone);

	now = GetCurrentTimestamp();
	expires_at = now + (int64) plivo_otp_code_ttl * USECS_PER_SEC;

	plivo_otp_spi_connect();
	if (req.idempotency_key && replay_idempotent(&req, now, id))
	{
		SPI_finish();
		PG_RETURN_UUID_P(id);
	}
	check_send_policy(req.phone, now);
	plivo_otp_random_uuid(id);
	store_verification(&req, id, code, now, expires_at);
	queue_message(&req, id, code, now, expires_at);
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
