/*-------------------------------------------------------------------------
 *
 * key_check.c
 *	  Is the key file the key this database's codes and queue were made
 *	  with?  Its fingerprint (an HMAC of a fixed label under the secret,
 *	  which tells nothing about the secret) is recorded in
 *	  plivo_otp.key_check by the dispatcher, in a transaction of its own (an
 *	  application's transaction never writes it, so no send waits on
 *	  another's), and every process compares it when it loads the key.  No
 *	  row yet means a fresh install: nothing was made with another key.
 *
 * The table is WAL-logged, so standbys and promoted standbys see the
 * primary's fingerprint.  A standby that lacked the primary's key file
 * makes one of its own once it is promoted and restarted (the postmaster
 * cannot tell it ever was a standby); without this check every replicated
 * code would then fail to verify and burn attempts, and every queued body
 * would fail to open.  With it, every function refuses to run, loudly,
 * until the right key file is back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

static PlivoOtpStatement read_fingerprint = {
	"SELECT fingerprint FROM plivo_otp.key_check",
	0, {0}
};

static PlivoOtpStatement record_fingerprint = {
	"INSERT INTO plivo_otp.key_check (fingerprint, recorded_at) VALUES ($1, $2)"
	" ON CONFLICT DO NOTHING",
	2, {BYTEAOID, TIMESTAMPTZOID}
};

/* The table exists from 0.2.0 on; with 0.1.0 installed there is nothing to check. */
static bool
key_check_table_exists(void)
{
	Oid			nsp = get_namespace_oid(PLIVO_OTP_SCHEMA, true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("key_check", nsp));
}

/* The fingerprint as a bytea datum. */
static Datum
fingerprint_datum(const uint8 *fingerprint)
{
	bytea	   *b = palloc(VARHDRSZ + PLIVO_OTP_SECRET_LEN);

	SET_VARSIZE(b, VARHDRSZ + PLIVO_OTP_SECRET_LEN);
	memcpy(VARDATA(b), fingerprint, PLIVO_OTP_SECRET_LEN);
	return PointerGetDatum(b);
}

/*
 * Compare fingerprint (PLIVO_OTP_SECRET_LEN bytes) with the recorded one;
 * an ERROR if they differ.  Called when a process loads the key; false if
 * it could not look (no transaction), so the caller looks again next time.
 */
bool
plivo_otp_verify_key_fingerprint(const uint8 *fingerprint)
{
	bool		isnull;
	bytea	   *recorded;

	if (!IsTransactionState())
		return false;
	if (!key_check_table_exists())
		return true;
	plivo_otp_spi_connect();
	if (plivo_otp_exec(&read_fingerprint, NULL, NULL, true, 1) == 0)
	{
		SPI_finish();
		return true;
	}
	recorded = DatumGetByteaPP(plivo_otp_get(0, 1, &isnull));
	if (VARSIZE_ANY_EXHDR(recorded) != PLIVO_OTP_SECRET_LEN ||
		timingsafe_bcmp(VARDATA_ANY(recorded), fingerprint, PLIVO_OTP_SECRET_LEN) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("plivo_otp key file \"%s\" is not the key this database's codes were made with",
						plivo_otp_key_file),
				 errdetail("Its fingerprint differs from the one recorded in plivo_otp.key_check; codes and queued messages made with the other key cannot be checked or sent."),
				 errhint("Put the original key file back (a promoted standby needs the primary's) and restart. If that key is lost, DELETE FROM plivo_otp.key_check to start over with this one.")));
	SPI_finish();
	return true;
}

/*
 * The dispatcher's unit of work: record the key's fingerprint if none is
 * (loading the key compares it with one that is).  True once one is there.
 */
bool
plivo_otp_record_key_fingerprint(void)
{
	const uint8 *fingerprint;
	Datum		args[2];

	if (!key_check_table_exists())
		return false;			/* 0.1.0 installed: look again later */
	fingerprint = plivo_otp_derived_key(PLIVO_OTP_KEY_FINGERPRINT);
	if (plivo_otp_exec(&read_fingerprint, NULL, NULL, true, 1) == 0)
	{
		args[0] = fingerprint_datum(fingerprint);
		args[1] = TimestampTzGetDatum(GetCurrentTimestamp());
		plivo_otp_exec(&record_fingerprint, args, NULL, false, 0);
	}
	return true;
}
