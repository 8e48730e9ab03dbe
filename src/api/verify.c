/*-------------------------------------------------------------------------
 *
 * api_verify.c
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
 * transaction.
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
#include "common/spi.h"

PG_FUNCTION_INFO_V1(plivo_otp_check);
PG_FUNCTION_INFO_V1(plivo_otp_verify);

/* Longer candidates cannot match; hash only this much of them. */
#define MAX_CANDIDATE_LEN 64

static PlivoOtpStatement lock_latest_code = {
	"SELECT id, code_digest, state, attempts, max_attempts, expires_at"
	" FROM plivo_otp.verifications"
	" WHERE phone = $1 AND purpose = $2"
	" ORDER BY created_at DESC LIMIT 1 FOR UPDATE",
	2, {TEXTOID, TEXTOID}
};

static PlivoOtpStatement set_outcome = {
	"UPDATE plivo_otp.verifications"
	" SET state = $2, attempts = $3, updated_at = $4,"
	"     verified_at = CASE WHEN $2 = 'approved' THEN $4 END"
	" WHERE id = $1",
	4, {UUIDOID, TEXTOID, INT4OID, TIMESTAMPTZOID}
};

static void
record_outcome(pg_uuid_t *id, const char *state, int attempts, TimestampTz now)
{
	Datum		args[4];

	args[0] = UUIDPGetDatum(id);
	args[1] = CStringGetTextDatum(state);
	args[2] = Int32GetDatum(attempts);
	args[3] = TimestampTzGetDatum(now);
	plivo_otp_exec(&set_outcome, args, NULL, false, 0);
}

static const char *
check_code(FunctionCallInfo fcinfo)
{
	char		phone[PLIVO_OTP_MAX_PHONE_LEN + 1];
	char		candidate[MAX_CANDIDATE_LEN + 1];
	char	   *purpose;
	Datum		args[2];
	bool		isnull;
	pg_uuid_t	id;
	bytea	   *digest;
	char	   *state;
	int			attempts;
	int			max_attempts;
	int			failures;
	int			ledger_failures;
	TimestampTz expires_at;
	TimestampTz now;
	const char *result;

	plivo_otp_require_preload();
	plivo_otp_phone_arg(fcinfo, 0, phone);
	purpose = plivo_otp_purpose_arg(fcinfo, 2);

	/* A NULL or malformed code is a wrong code: it must not escape the count. */
	candidate[0] = '\0';
	if (!PG_ARGISNULL(1))
		text_to_cstring_buffer(PG_GETARG_TEXT_PP(1), candidate, sizeof(candidate));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "plivo_otp: SPI_connect failed");

	args[0] = CStringGetTextDatum(phone);
	args[1] = CStringGetTextDatum(purpose);
	if (plivo_otp_exec(&lock_latest_code, args, NULL, false, 1) == 0)
	{
		SPI_finish();
		return "not_found";
	}

	memcpy(&id, DatumGetUUIDP(plivo_otp_get(0, 1, &isnull)), sizeof(id));
	digest = DatumGetByteaPP(plivo_otp_get(0, 2, &isnull));
	state = plivo_otp_get_text(0, 3);
	attempts = DatumGetInt32(plivo_otp_get(0, 4, &isnull));
	max_attempts = DatumGetInt32(plivo_otp_get(0, 5, &isnull));
	expires_at = DatumGetTimestampTz(plivo_otp_get(0, 6, &isnull));
	now = GetCurrentTimestamp();

	if (strcmp(state, "pending") != 0 && strcmp(state, "max_attempts") != 0 &&
		strcmp(state, "expired") != 0)
		result = "not_found";	/* approved (single use) or canceled */
	else if (strcmp(state, "expired") == 0 || expires_at <= now)
	{
		if (strcmp(state, "pending") == 0)
			record_outcome(&id, "expired", attempts, now);
		result = "expired";
	}
	/* Reserve the ledger entry before anything is compared (fails closed if full). */
	else if ((ledger_failures = plivo_otp_ledger_add(&id, expires_at, 0)),
			 (failures = Max(attempts, ledger_failures)) >= max_attempts)
	{
		if (strcmp(state, "pending") == 0)
			record_outcome(&id, "max_attempts", failures, now);
		result = "max_attempts";
	}
	else if (plivo_otp_code_matches(&id, purpose, candidate,
									(uint8 *) VARDATA_ANY(digest),
									VARSIZE_ANY_EXHDR(digest)))
	{
		record_outcome(&id, "approved", failures, now);
		plivo_otp_count(PLIVO_OTP_COUNTER_VERIFY_APPROVED, 1);
		result = "approved";
	}
	else
	{
		/* Count it where a rollback cannot take it back, then in the row. */
		ledger_failures = plivo_otp_ledger_add(&id, expires_at, 1);
		failures = Max(attempts + 1, ledger_failures);
		record_outcome(&id, failures >= max_attempts ? "max_attempts" : "pending",
					   failures, now);
		plivo_otp_count(PLIVO_OTP_COUNTER_VERIFY_FAILED, 1);
		result = "incorrect";
	}

	explicit_bzero(candidate, sizeof(candidate));
	SPI_finish();
	return result;
}

static Datum
check_code_text(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(check_code(fcinfo)));
}

static Datum
check_code_bool(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(strcmp(check_code(fcinfo), "approved") == 0);
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
