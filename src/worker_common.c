/*-------------------------------------------------------------------------
 *
 * worker_common.c
 *	  Short transactions for the plivo_otp workers, in worker_spi's order.
 *
 * Before touching the extension's tables a unit of work checks that the
 * extension exists and takes a conditional lock on the queue table, so
 * DROP EXTENSION never waits on a worker (nor a worker on it).  An ERROR in
 * a unit of work is logged and rolled back; the worker carries on, because
 * ending it would orphan requests it has in flight.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "plivo_otp.h"
#include "worker_common.h"

static bool extension_missing_logged = false;

/* Signals, database connection and application name of a worker. */
void
plivo_otp_worker_connect(const char *name)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(plivo_otp_database, NULL, 0);
	pgstat_report_appname(psprintf("%s %s", name, PLIVO_OTP_VERSION));
}

/*
 * Start a transaction for one unit of work, connected to SPI.  False (and
 * nothing left open) when the extension is absent or DROP EXTENSION holds
 * the queue.
 */
bool
plivo_otp_begin_work(const char *activity)
{
	Oid			nsp;
	Oid			queue;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);

	nsp = get_namespace_oid(PLIVO_OTP_SCHEMA, true);
	queue = OidIsValid(nsp) ? get_relname_relid("messages", nsp) : InvalidOid;
	if (!OidIsValid(get_extension_oid("plivo_otp", true)) || !OidIsValid(queue) ||
		!ConditionalLockRelationOid(queue, RowExclusiveLock))
	{
		if (!extension_missing_logged)
			ereport(LOG,
					(errmsg("%s is waiting for the extension in database \"%s\"",
							MyBgworkerEntry->bgw_name, plivo_otp_database),
					 errhint("Run CREATE EXTENSION plivo_otp in the database named by plivo_otp.database.")));
		extension_missing_logged = true;
		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
		return false;
	}
	extension_missing_logged = false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "plivo_otp: SPI_connect failed");
	return true;
}

void
plivo_otp_end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Run work() in its own transaction; false if it could not run or failed. */
bool
plivo_otp_run_work(const char *activity, void (*work) (void))
{
	MemoryContext caller = CurrentMemoryContext;
	bool		ok = true;

	PG_TRY();
	{
		if (plivo_otp_begin_work(activity))
		{
			work();
			plivo_otp_end_work();
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
