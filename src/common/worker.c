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
 * Workers never wait on someone else's locks.  Before touching the
 * extension's tables a unit of work takes a conditional lock on the
 * extension object itself, which DROP EXTENSION locks before anything else,
 * then conditional locks on the tables, so neither DROP EXTENSION nor other
 * DDL ever waits on a worker, nor a worker on them.  Row locks are skipped
 * (SKIP LOCKED) or refused (NOWAIT) by the workers' statements; as a
 * backstop, lock_timeout is pinned short and a unit of work is canceled
 * after WORK_TIMEOUT_MS (SPI arms no statement_timeout of its own).
 *
 * Every commit of a worker is at least flushed locally (synchronous_commit
 * 'local' when the database, role or server says 'off'; a stronger setting
 * is kept): a claim must be durable before its request leaves, and a
 * callback is answered 200 only once its event is on disk.
 *
 * SIGTERM sets ShutdownRequestPending and, while a unit of work runs,
 * cancels it, so a worker in any state stops within moments.  An ERROR in
 * a unit of work is logged and rolled back; the worker carries on, because
 * ending it would orphan requests it has in flight.  Within a unit of work,
 * plivo_otp_run_subtransaction isolates one row's work from the others'.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

#include "plivo_otp.h"

/* The backstops: no worker waits longer on a lock, nor runs a unit longer. */
#define WORKER_LOCK_TIMEOUT "500ms"
#define WORK_TIMEOUT_MS 10000

static bool extension_missing_logged = false;

/* True while a unit of work runs: SIGTERM then cancels it. */
static volatile sig_atomic_t in_work = false;

/*
 * SIGTERM: ask the loop to stop, and cancel the unit of work that runs, if
 * any, so that a wait inside it (a lock, a long statement) ends at once.
 */
static void
handle_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	ShutdownRequestPending = true;
	if (in_work)
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

/* Signals, database connection, pinned settings and application name of a worker. */
void
plivo_otp_worker_connect(const char *name)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, handle_sigterm);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(plivo_otp_database, NULL, 0);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", WORKER_LOCK_TIMEOUT, PGC_SUSET, PGC_S_OVERRIDE);
	/* small statements, many a second: compiling one costs more than it saves */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
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
 * At least a local flush for this transaction's commit, whatever the
 * database, role or server says; read again for every transaction, so that
 * a stronger server setting (remote_apply, say) given at reload still wins.
 * SET LOCAL: it ends with the transaction.
 */
static void
pin_commit_durability(void)
{
	if (synchronous_commit < SYNCHRONOUS_COMMIT_LOCAL_FLUSH)
		(void) set_config_option("synchronous_commit", "local", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * Start a transaction for one unit of work, connected to SPI.  False (and
 * nothing left open) when the extension is absent or DROP EXTENSION holds
 * the queue.
 */
static bool
begin_work(const char *activity, int timeout_ms)
{
	Oid			extension;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pin_commit_durability();
	enable_timeout_after(STATEMENT_TIMEOUT, timeout_ms);
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
		disable_timeout(STATEMENT_TIMEOUT, false);
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
	disable_timeout(STATEMENT_TIMEOUT, false);
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* A unit of work is over: a SIGTERM from now on is the loop's to act on. */
static void
leave_work(void)
{
	in_work = false;
	if (ShutdownRequestPending)
		QueryCancelPending = false;
}

/* Log a failed unit of work; one that SIGTERM canceled is no error. */
static void
report_failed_work(const char *activity)
{
	if (ShutdownRequestPending && geterrcode() == ERRCODE_QUERY_CANCELED)
	{
		FlushErrorState();
		ereport(LOG,
				(errmsg("%s: %s stopped at shutdown", MyBgworkerEntry->bgw_name, activity)));
		return;
	}
	EmitErrorReport();
	FlushErrorState();
}

/*
 * Run work(arg) in its own transaction, canceled after timeout_ms; false if
 * it could not run or failed (the error is logged, the transaction rolled
 * back).
 */
bool
plivo_otp_run_work_within(const char *activity, PlivoOtpWork work, void *arg, int timeout_ms)
{
	MemoryContext caller = CurrentMemoryContext;
	bool		ok = true;

	in_work = true;
	PG_TRY();
	{
		if (begin_work(activity, timeout_ms))
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
		HOLD_INTERRUPTS();
		disable_timeout(STATEMENT_TIMEOUT, false);
		report_failed_work(activity);
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		RESUME_INTERRUPTS();
		ok = false;
	}
	PG_END_TRY();
	leave_work();
	MemoryContextSwitchTo(caller);
	return ok;
}

/* The same, with the default timeout of a unit of work (WORK_TIMEOUT_MS). */
bool
plivo_otp_run_work(const char *activity, PlivoOtpWork work, void *arg)
{
	return plivo_otp_run_work_within(activity, work, arg, WORK_TIMEOUT_MS);
}

/*
 * Run work(arg) in a subtransaction of the current unit of work; false if
 * it failed, with only the subtransaction rolled back.  The error goes to
 * *error (in the caller's memory context), or to the log when error is
 * NULL.  A cancel (SIGTERM, the unit's timeout) cancels the whole unit.
 */
static bool
subtransaction(PlivoOtpWork work, void *arg, ErrorData **error)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *edata = NULL;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		work(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		if (error == NULL && geterrcode() != ERRCODE_QUERY_CANCELED)
			EmitErrorReport();
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
	if (edata == NULL)
		return true;
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		ReThrowError(edata);
	if (error)
		*error = edata;
	else
		FreeErrorData(edata);
	return false;
}

/* One row's work in a subtransaction; its error is logged.  See subtransaction(). */
bool
plivo_otp_run_subtransaction(PlivoOtpWork work, void *arg)
{
	return subtransaction(work, arg, NULL);
}

/* The same, with the error handed to the caller to log or act on. */
bool
plivo_otp_try_subtransaction(PlivoOtpWork work, void *arg, ErrorData **error)
{
	*error = NULL;
	return subtransaction(work, arg, error);
}
