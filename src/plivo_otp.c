/*-------------------------------------------------------------------------
 *
 * plivo_otp.c
 *	  Entry point of the plivo_otp library: _PG_init in a fixed order.
 *
 * The library must be in shared_preload_libraries: it needs shared memory
 * (the failed-attempt ledger that survives rollbacks) and background
 * workers.  Loaded any other way, it defines nothing and every SQL function
 * refuses to run with a hint naming the setting.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"

#include "plivo_otp.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* True when loaded from shared_preload_libraries. */
bool		plivo_otp_preloaded = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
plivo_otp_shmem_request_chain(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	plivo_otp_ledger_shmem_request();
	plivo_otp_budget_shmem_request();
	plivo_otp_state_shmem_request();
	plivo_otp_activity_shmem_request();
}

static void
plivo_otp_shmem_startup_chain(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	plivo_otp_ledger_shmem_startup();
	plivo_otp_budget_shmem_startup();
	plivo_otp_state_shmem_startup();
	plivo_otp_activity_shmem_startup();
}

/*
 * Register one of the workers: primary only (BgWorkerStart_RecoveryFinished,
 * so the postmaster starts it after promotion), restarted a second after a
 * failure, named so pg_stat_activity.backend_type shows what it is.
 */
static void
register_worker(const char *name, const char *function)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	strlcpy(worker.bgw_library_name, "plivo_otp", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker.bgw_name, name, BGW_MAXLEN);
	strlcpy(worker.bgw_type, name, BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

void
_PG_init(void)
{
	/* pg_upgrade loads libraries only to check them; do nothing then. */
	if (IsBinaryUpgrade)
		return;

	if (!process_shared_preload_libraries_in_progress)
		return;

	plivo_otp_define_settings();

	plivo_otp_preloaded = true;

	/* The index lists of the statements run with forced plans. */
	plivo_otp_forced_plans_init();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = plivo_otp_shmem_request_chain;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = plivo_otp_shmem_startup_chain;

	/*
	 * The postmaster creates the key file once, so that every process and
	 * every base backup sees the same secret.  Never on a server in
	 * recovery: see crypto/secret.c.
	 */
	plivo_otp_ensure_key_file();

	register_worker("plivo_otp dispatcher", "plivo_otp_dispatcher_main");
	/* The webhook listener only when plivo_otp.listen_port is set. */
	if (plivo_otp_listen_port != 0)
		register_worker("plivo_otp listener", "plivo_otp_listener_main");
}

/*
 * Every SQL-callable function starts here: without the shared memory that
 * preloading sets up, attempts could not be counted across rollbacks.
 */
void
plivo_otp_require_preload(void)
{
	if (!plivo_otp_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("plivo_otp must be loaded via shared_preload_libraries"),
				 errhint("Add plivo_otp to shared_preload_libraries in postgresql.conf and restart the server.")));
}
