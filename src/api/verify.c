/*-------------------------------------------------------------------------
 *
 * verify.c
 *	  otp_check() and otp_verify(): one verification attempt against the
 *	  latest code of a number and purpose.
 *
 * The rules, in order: no live code -> not_found; an expired code ->
 * expired; failures (the larger of the row's count and the shared ledger's,
 * which survives rollbacks) at the cap -> max_attempts, before the code is
 * even compared; then a constant-time comparison of digests.  The ledger
 * entry is reserved before that comparison, so a full ledger refuses right
 * and wrong codes alike.  A wrong or
 * malformed code is counted in the ledger at once and in the row within the
 * transaction.  A failure that uses up the attempts (or an attempt refused
 * for that) also notes the code in the ledger, so that the dispatcher wipes
 * its seal even if the caller rolls the row's new state back.
 *
 * The row is locked FOR UPDATE: two concurrent right answers queue on it,
 * and the second finds it approved -> not_found, using no attempt.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_check);
PG_FUNCTION_INFO_V1(plivo_otp_verify);

/* Longer candidates cannot match; hash only this much of them. */
#define MAX_CANDIDATE_LEN 64

/*
 * The pending code, when there is one, is the latest (a send cancels the
 * one before): found through the unique partial index
 * verifications_one_pending, the only plan of a lookup by its key.
 */
static PlivoOtpStatement lock_pending_code = {
	"SELECT id, code_digest, state, attempts, max_attempts, expires_at"
	" FROM plivo_otp.verifications"
	" WHERE phone = $1 AND purpose = $2 AND state = 'pending' FOR UPDATE",
	2, {TEXTOID, TEXTOID},
	.forced_plan = true, .indexes = "verifications_one_pending"
};

/* Otherwise the latest one, to say why it no longer counts. */
static PlivoOtpStatement lock_latest_code = {
	"SELECT id, code_digest, state, attempts, max_attempts, expires_at"
	" FROM plivo_otp.verifications"
	" WHERE phone = $1 AND purpose = $2"
	" ORDER BY created_at DESC LIMIT 1 FOR UPDATE",
	2, {TEXTOID, TEXTOID},
	.forced_plan = true, .indexes = "verifications_phone_created"
};

#define UPDATE_VERIFICATION(wipe) \
	"UPDATE plivo_otp.verifications" \
	" SET state = $2, attempts = $3, updated_at = $4," wipe \
	"     verified_at = CASE WHEN $2 = 'approved' THEN $4 END" \
	" WHERE id = $1"

/* A code that is no longer pending cannot be re-delivered: its seal is wiped. */
static PlivoOtpStatement update_verification = {
	UPDATE_VERIFICATION(" code_sealed = CASE WHEN $2 = 'pending' THEN code_sealed END,"),
	4, {UUIDOID, TEXTOID, INT4OID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "verifications_pkey"
};

static PlivoOtpStatement update_verification_v1 = {
	UPDATE_VERIFICATION(""), 4, {UUIDOID, TEXTOID, INT4OID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "verifications_pkey"
};

/* The latest code of a number and purpose, locked. */
typedef struct LatestCode
{
	pg_uuid_t	id;
	bytea	   *digest;
	PlivoOtpVerificationState state;
	int			attempts;
	int			max_attempts;
	TimestampTz expires_at;
} LatestCode;

/* Store the verification's new state and attempt count. */
static void
store_check_result(const LatestCode *latest, PlivoOtpVerificationState state,
				   int attempts, TimestampTz now)
{
	Datum		args[4];

	args[0] = UUIDPGetDatum(&latest->id);
	args[1] = CStringGetTextDatum(plivo_otp_verification_state_name(state));
	args[2] = Int32GetDatum(attempts);
	args[3] = TimestampTzGetDatum(now);
	plivo_otp_exec(plivo_otp_schema_is_v2() ? &update_verification : &update_verification_v1,
				   args, NULL, false, 0);
}

/* Lock and read the latest code of phone and purpose; false if there is none. */
static bool
load_latest_code(const char *phone, const char *purpose, LatestCode *latest)
{
	Datum		args[2];
	bool		isnull;

	args[0] = CStringGetTextDatum(phone);
	args[1] = CStringGetTextDatum(purpose);
	if (plivo_otp_exec(&lock_pending_code, args, NULL, false, 1) == 0 &&
		plivo_otp_exec(&lock_latest_code, args, NULL, false, 1) == 0)
		return false;
	memcpy(&latest->id, DatumGetUUIDP(plivo_otp_get(0, 1, &isnull)), sizeof(pg_uuid_t));
	latest->digest = DatumGetByteaPP(plivo_otp_get(0, 2, &isnull));
	latest->state = plivo_otp_verification_state_parse(plivo_otp_get_text(0, 3));
	latest->attempts = DatumGetInt32(plivo_otp_get(0, 4, &isnull));
	latest->max_attempts = DatumGetInt32(plivo_otp_get(0, 5, &isnull));
	latest->expires_at = DatumGetTimestampTz(plivo_otp_get(0, 6, &isnull));
	return true;
}

/* One attempt at the latest code, by the rules at the top of this file. */
static PlivoOtpCheckResult
judge_attempt(const LatestCode *latest, const char *purpose, const char *candidate,
			  TimestampTz now)
{
	bool		pending = latest->state == PLIVO_OTP_VERIFICATION_PENDING;
	int			ledger_failures;
	int			failures;

	/* approved (single use) or canceled */
	if (latest->state == PLIVO_OTP_VERIFICATION_APPROVED ||
		latest->state == PLIVO_OTP_VERIFICATION_CANCELED)
		return PLIVO_OTP_CHECK_NOT_FOUND;

	if (latest->state == PLIVO_OTP_VERIFICATION_EXPIRED || latest->expires_at <= now)
	{
		if (pending)
			store_check_result(latest, PLIVO_OTP_VERIFICATION_EXPIRED, latest->attempts, now);
		return PLIVO_OTP_CHECK_EXPIRED;
	}

	/* Reserve the ledger entry before anything is compared (fails closed if full). */
	ledger_failures = plivo_otp_ledger_add(&latest->id, latest->expires_at, 0);
	failures = Max(latest->attempts, ledger_failures);
	if (failures >= latest->max_attempts)
	{
		if (pending)
		{
			/* (if the caller rolls this back, the dispatcher wipes the seal) */
			plivo_otp_ledger_note_locked(&latest->id);
			store_check_result(latest, PLIVO_OTP_VERIFICATION_MAX_ATTEMPTS, failures, now);
		}
		return PLIVO_OTP_CHECK_MAX_ATTEMPTS;
	}

	if (plivo_otp_code_matches(&latest->id, purpose, candidate,
							   (uint8 *) VARDATA_ANY(latest->digest),
							   VARSIZE_ANY_EXHDR(latest->digest)))
	{
		store_check_result(latest, PLIVO_OTP_VERIFICATION_APPROVED, failures, now);
		plivo_otp_count(PLIVO_OTP_COUNTER_VERIFY_APPROVED, 1);
		return PLIVO_OTP_CHECK_APPROVED;
	}

	/* Count it where a rollback cannot take it back, then in the row (Max
	 * evaluates its arguments twice: the ledger is added to only once). */
	ledger_failures = plivo_otp_ledger_add(&latest->id, latest->expires_at, 1);
	failures = Max(latest->attempts + 1, ledger_failures);
	if (ledger_failures >= latest->max_attempts)
		plivo_otp_ledger_note_locked(&latest->id);
	/* (Below max_attempts before this check: this one locks the code.) */
	if (failures >= latest->max_attempts)
		plivo_otp_activity_add(PLIVO_OTP_ACT_LOCKOUTS, 1);
	store_check_result(latest,
					   failures >= latest->max_attempts ?
					   PLIVO_OTP_VERIFICATION_MAX_ATTEMPTS : PLIVO_OTP_VERIFICATION_PENDING,
					   failures, now);
	plivo_otp_count(PLIVO_OTP_COUNTER_VERIFY_FAILED, 1);
	return PLIVO_OTP_CHECK_INCORRECT;
}

static PlivoOtpCheckResult
check_code(FunctionCallInfo fcinfo)
{
	char		phone[PLIVO_OTP_MAX_PHONE_LEN + 1];
	char		candidate[MAX_CANDIDATE_LEN + 1];
	char	   *purpose;
	LatestCode	latest;
	PlivoOtpCheckResult result = PLIVO_OTP_CHECK_NOT_FOUND;

	plivo_otp_require_preload();
	plivo_otp_phone_arg(fcinfo, 0, phone);
	purpose = plivo_otp_purpose_arg(fcinfo, 2);

	/* A NULL or malformed code is a wrong code: it must not escape the count. */
	candidate[0] = '\0';
	if (!PG_ARGISNULL(1))
		text_to_cstring_buffer(PG_GETARG_TEXT_PP(1), candidate, sizeof(candidate));

	/* The lock otp_send takes first, so a send and a check never deadlock. */
	plivo_otp_spi_connect();
	plivo_otp_lock_number_for_check(phone, plivo_otp_schema_is_v2(),
									"code not checked: a send to this number is still in progress");
	if (load_latest_code(phone, purpose, &latest))
		result = judge_attempt(&latest, purpose, candidate, GetCurrentTimestamp());
	explicit_bzero(candidate, sizeof(candidate));
	SPI_finish();
	return result;
}

static Datum
check_code_text(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(plivo_otp_check_result_name(check_code(fcinfo))));
}

static Datum
check_code_bool(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(check_code(fcinfo) == PLIVO_OTP_CHECK_APPROVED);
}

Datum
plivo_otp_check(PG_FUNCTION_ARGS)
{
	return plivo_otp_hiding_statement(check_code_text, fcinfo);
}

Datum
plivo_otp_verify(PG_FUNCTION_ARGS)
{
	return plivo_otp_hiding_statement(check_code_bool, fcinfo);
}
