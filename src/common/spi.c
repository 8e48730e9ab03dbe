/*-------------------------------------------------------------------------
 *
 * spi.c
 *	  Plans prepared once per process and executed with checked results.
 *
 * Every statement names its tables with the plivo_otp schema, and the SQL
 * functions run with a fixed search_path, so a prepared plan never resolves
 * to an object a caller planted.  Callers are inside SPI_connect.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "plivo_otp.h"

/* SPI_connect, where failing to connect can only be a bug. */
void
plivo_otp_spi_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "plivo_otp: SPI_connect failed");
}

static void
prepare_once(PlivoOtpStatement *stmt)
{
	if (stmt->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(stmt->sql, stmt->nargs, stmt->argtypes,
												  stmt->cursor_options);

		if (plan == NULL)
			elog(ERROR, "plivo_otp: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "plivo_otp: SPI_keepplan failed");
		stmt->plan = plan;
	}
}

/*
 * Execute stmt (forced: with a plan that cannot depend on the planner's
 * luck, forced_plans.c) with snapshot, or the current one if
 * InvalidSnapshot; returns SPI_processed.  Any SPI failure is an ERROR.
 */
static int
execute(PlivoOtpStatement *stmt, Datum *values, const char *nulls, bool read_only,
		long count, Snapshot snapshot, bool forced)
{
	PlivoOtpForcedPlan f;
	volatile int rc;

	if (forced)
		plivo_otp_force_plans(&f, stmt->indexes);
	PG_TRY();
	{
		prepare_once(stmt);
		if (snapshot == InvalidSnapshot)
			rc = SPI_execute_plan(stmt->plan, values, nulls, read_only, count);
		else
			rc = SPI_execute_snapshot(stmt->plan, values, nulls, snapshot,
									  InvalidSnapshot, read_only, false, count);
	}
	PG_CATCH();
	{
		if (forced)
			plivo_otp_force_plans_indexes_end(&f);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (forced)
		plivo_otp_force_plans_end(&f);
	if (rc < 0)
		elog(ERROR, "plivo_otp: SPI execution failed: %s", SPI_result_code_string(rc));
	return (int) SPI_processed;
}

/* Execute stmt; returns SPI_processed.  Any SPI failure is an ERROR. */
int
plivo_otp_exec(PlivoOtpStatement *stmt, Datum *values, const char *nulls,
			   bool read_only, long count)
{
	return execute(stmt, values, nulls, read_only, count, InvalidSnapshot, stmt->forced_plan);
}

/* Execute stmt with a forced plan (forced_plans.c), whatever its forced_plan says. */
int
plivo_otp_exec_forced(PlivoOtpStatement *stmt, Datum *values, const char *nulls, long count)
{
	return execute(stmt, values, nulls, false, count, InvalidSnapshot, true);
}

/*
 * Execute stmt with the latest snapshot, whatever the caller's isolation
 * level: a policy check that waited for a lock must see what the holder of
 * that lock committed, also under REPEATABLE READ.
 */
int
plivo_otp_exec_latest(PlivoOtpStatement *stmt, Datum *values, const char *nulls, long count)
{
	return execute(stmt, values, nulls, false, count, GetLatestSnapshot(), stmt->forced_plan);
}

Datum
plivo_otp_get(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

/* A text column as a C string in the caller's context, or NULL. */
char *
plivo_otp_get_text(int row, int col)
{
	bool		isnull;
	Datum		d = plivo_otp_get(row, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * A worker says in the log which schema it works with when it first sees
 * it and whenever that changes: while an upgrade from 0.1.0 is pending, what
 * waits for ALTER EXTENSION plivo_otp UPDATE.  (Backends say nothing: the
 * functions they run say it in their errors.)
 */
static void
note_schema(bool installed, bool v2)
{
	static int	noted = -1;		/* -1 nothing yet, 0 the 0.1.0 schema, 1 0.2.0 */

	if (!installed || MyBgworkerEntry == NULL || noted == (int) v2)
		return;
	if (!v2)
		ereport(LOG,
				(errmsg("%s works with the 0.1.0 schema: an upgrade is pending",
						MyBgworkerEntry->bgw_type),
				 errdetail("Voice calls, senders, templates, answer URLs, voice fallback and the seal wipes wait for the 0.2.0 schema; SMS go on as before."),
				 errhint("Run ALTER EXTENSION plivo_otp UPDATE in the database %s.",
						 get_database_name(MyDatabaseId))));
	else if (noted == 0)
		ereport(LOG,
				(errmsg("%s works with the 0.2.0 schema now", MyBgworkerEntry->bgw_type)));
	noted = (int) v2;
}

/*
 * Is the 0.2.0 schema (or later) installed?  While an upgrade from 0.1.0 is
 * pending, the library keeps working with the old tables.  Two syscache
 * lookups, cheap enough for every call.
 */
bool
plivo_otp_schema_is_v2(void)
{
	Oid			nsp = get_namespace_oid(PLIVO_OTP_SCHEMA, true);
	Oid			rel = OidIsValid(nsp) ? get_relname_relid("verifications", nsp) : InvalidOid;
	bool		v2 = OidIsValid(rel) && get_attnum(rel, "code_sealed") != InvalidAttrNumber;

	note_schema(OidIsValid(rel), v2);
	return v2;
}
