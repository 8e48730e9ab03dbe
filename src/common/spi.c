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

/* Execute stmt; returns SPI_processed.  Any SPI failure is an ERROR. */
int
plivo_otp_exec(PlivoOtpStatement *stmt, Datum *values, const char *nulls,
			   bool read_only, long count)
{
	int			rc;

	prepare_once(stmt);
	rc = SPI_execute_plan(stmt->plan, values, nulls, read_only, count);
	if (rc < 0)
		elog(ERROR, "plivo_otp: SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return (int) SPI_processed;
}

/*
 * Execute stmt with a plan that cannot depend on the planner's luck:
 * statistics are stale right after a bulk commit (an ANALYZE that saw a
 * table of finished rows estimates no pending row), and a plan chosen on
 * them can turn a worker's statement into a scan of the whole queue or of
 * the history.  Every statement run this way has an index path that reads
 * only the rows it touches (partial indexes of the pending rows, unique
 * keys); forbidding the others (sequential and bitmap scans, sorts of the
 * rows read, hash and merge joins) leaves it as the only plan (a sort of
 * the few rows it took remains), and the generic plan is kept: planned
 * once, not on every call.  The settings are the statement's alone: they
 * go back to what they were as it returns (or when its transaction or
 * subtransaction aborts).
 */
int
plivo_otp_exec_forced(PlivoOtpStatement *stmt, Datum *values, const char *nulls, long count)
{
	static const char *const off[] = {
		"enable_seqscan", "enable_bitmapscan", "enable_sort", "enable_incremental_sort",
		"enable_hashjoin", "enable_mergejoin", "enable_material",
		/* (a path that is the only one left costs a disable_cost: no JIT for it) */
		"jit"
	};
	int			level = NewGUCNestLevel();
	int			n;

	for (int i = 0; i < lengthof(off); i++)
		(void) set_config_option(off[i], "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("plan_cache_mode", "force_generic_plan", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	n = plivo_otp_exec(stmt, values, nulls, false, count);
	AtEOXact_GUC(true, level);
	return n;
}

/*
 * Execute stmt with the latest snapshot, whatever the caller's isolation
 * level: a policy check that waited for a lock must see what the holder of
 * that lock committed, also under REPEATABLE READ.
 */
int
plivo_otp_exec_latest(PlivoOtpStatement *stmt, Datum *values, const char *nulls, long count)
{
	int			rc;

	prepare_once(stmt);
	rc = SPI_execute_snapshot(stmt->plan, values, nulls, GetLatestSnapshot(),
							  InvalidSnapshot, false, false, count);
	if (rc < 0)
		elog(ERROR, "plivo_otp: SPI_execute_snapshot failed: %s", SPI_result_code_string(rc));
	return (int) SPI_processed;
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
