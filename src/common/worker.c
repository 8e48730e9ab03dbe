/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Short transactions for the plivo_otp workers, in worker_spi's order.
 *
 * Workers run as the bootstrap superuser, so they pin search_path (a schema
 * named after that user, or a database-level search_path, could otherwise
 * plant functions or operators that our queries would run as superuser) and
 * the isolation level (their logic assumes READ COMMITTED).
 *
 * Before touching the extension's tables a unit of work takes a conditional
 * lock on the extension object itself, which DROP EXTENSION locks before
 * anything else, then conditional locks on the tables, so neither DROP
 * EXTENSION nor other DDL ever waits on a worker, nor a worker on them.  An ERROR in
 * a unit of work is logged and rolled back; the worker carries on, because
 * ending it would orphan requests it has in flight.  Within a unit of work,
 * plivo_otp_run_subtransaction isolates one row's work from the others'.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "plivo_otp.h"

static bool extension_missing_logged = false;

/* Signals, database connection and application name of a worker. */
void
plivo_otp_worker_connect(const char *name)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(plivo_otp_database, NULL, 0);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname(psprintf("%s %s", name, PLIVO_OTP_VERSION));
}

/*
 * Lock the extension's tables without waiting: a worker never stalls its
 * event loop behind someone's DDL; it skips this turn and tries again.
 */
static bool
lock_tables(void)
{
	static const char *const tables[] = {
		"verifications", "messages", "delivery_events", "callback_nonces"
	};
	Oid			nsp = get_namespace_oid(PLIVO_OTP_SCHEMA, true);

	for (int i = 0; i < lengthof(tables); i++)
	{
		Oid			rel = OidIsValid(nsp) ? get_relname_relid(tables[i], nsp) : InvalidOid;

		if (!OidIsValid(rel) || !ConditionalLockRelationOid(rel, RowExclusiveLock))
			return false;
	}
	return true;
}

/*
 * Start a transaction for one unit of work, connected to SPI.  False (and
 * nothing left open) when the extension is absent or DROP EXTENSION holds
 * the queue.
 */
static bool
begin_work(const char *activity)
{
	Oid			extension;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);

	extension = get_extension_oid("plivo_otp", true);
	if (!OidIsValid(extension) ||
		!ConditionalLockDatabaseObject(ExtensionRelationId, extension, 0, AccessShareLock) ||
		!OidIsValid(get_extension_oid("plivo_otp", true)) ||
		!lock_tables())
	{
		if (!extension_missing_logged)
			ereport(LOG,
					(errmsg("%s: waiting for extension plivo_otp in database \"%s\"",
							MyBgworkerEntry->bgw_name, plivo_otp_database),
					 errdetail("The extension is missing, or locked by DDL such as DROP EXTENSION."),
					 errhint("Run CREATE EXTENSION plivo_otp in the database named by plivo_otp.database.")));
		extension_missing_logged = true;
		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
		return false;
	}
	extension_missing_logged = false;
	plivo_otp_spi_connect();
	return true;
}

static void
end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Run work(arg) in its own transaction; false if it could not run or failed
 * (the error is logged, the transaction rolled back).
 */
bool
plivo_otp_run_work(const char *activity, PlivoOtpWork work, void *arg)
{
	MemoryContext caller = CurrentMemoryContext;
	bool		ok = true;

	PG_TRY();
	{
		if (begin_work(activity))
		{
			work(arg);
			end_work();
		}
		else
			ok = false;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	return ok;
}

/*
 * Run work(arg) in a subtransaction of the current unit of work; false if
 * it failed (the error is logged and only the subtransaction rolled back),
 * so one row's failure leaves the rest of the batch to commit.
 */
bool
plivo_otp_run_subtransaction(PlivoOtpWork work, void *arg)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	bool		ok = true;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		work(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		EmitErrorReport();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
	return ok;
}
