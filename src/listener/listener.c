/*-------------------------------------------------------------------------
 *
 * listener.c
 *	  The webhook listener background worker: an HTTP endpoint for Plivo's
 *	  message-status callbacks, voice calls' answer URLs and call hang-up
 *	  callbacks.  This file is its loop, its settings and the recording of
 *	  callbacks.
 *
 * One single-threaded event loop: libmicrohttpd runs without a thread of
 * its own, in epoll mode (server.c), and its epoll descriptor waits in the
 * worker's WaitEventSet beside the latch.  Each turn runs the server, which
 * accepts, reads and judges requests and suspends each authentic callback.
 *
 * After that, the suspended callbacks are recorded together in one short
 * transaction (a subtransaction each, so one bad row cannot fail the
 * batch), and only after that transaction has committed are their
 * connections resumed and answered 200.  A callback therefore never gets a
 * 200 for an event that was not stored; Plivo retries anything else.  A
 * call's answer is decided in the same transaction (voice_answer.c): its
 * script is sent only once the wipe of its body has committed; an answer
 * that must wait for the dispatcher stays suspended and is decided again
 * in a later batch (server.c holds it).
 *
 * When the address and port are taken (by another server, say), the worker
 * does not exit, which would have the postmaster restart it every second,
 * each time with a log line: it logs once, tries again every
 * LISTEN_RETRY_SECS, and logs again only if the reason changes or every
 * LISTEN_REMIND_SECS while it lasts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <microhttpd.h>

#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "listener.h"

#define LISTEN_RETRY_SECS 2
#define LISTEN_REMIND_SECS 600

PGDLLEXPORT void plivo_otp_listener_main(Datum main_arg);

ListenerConfig plivo_otp_listener_config = {false, NULL, NULL};

/* Decide a call's answer (a subtransaction of the batch). */
static void
answer_call(CallbackRequest *req)
{
	char	   *xml = NULL;

	switch (plivo_otp_voice_answer(req->params, req->nparams, req->nonce, req->other_nonce,
								   req->token, plivo_otp_server_hold_over(req), &xml))
	{
		case PLIVO_VOICE_SCRIPT:
			{
				bool		copied = plivo_otp_server_decide_script(req, xml);

				explicit_bzero(xml, strlen(xml));
				if (!copied)
					ereport(ERROR,
							(errcode(ERRCODE_OUT_OF_MEMORY),
							 errmsg("out of memory")));
			}
			break;
		case PLIVO_VOICE_NO_CODE:
			plivo_otp_server_decide_no_code(req);
			break;
		case PLIVO_VOICE_WAIT:
			req->hold = true;
			break;
	}
}

/* Record one callback (a subtransaction of the batch); decide its answer. */
static void
record_callback(void *arg)
{
	CallbackRequest *req = (CallbackRequest *) arg;

	if (req->route->kind == ROUTE_VOICE_ANSWER)
	{
		answer_call(req);
		return;
	}
	switch (plivo_otp_ingest_callback(req->params, req->nparams, req->nonce,
									  req->other_nonce, req->body_signed,
									  req->token[0] ? req->token : NULL))
	{
		case PLIVO_INGEST_RECORDED:
		case PLIVO_INGEST_DUPLICATE:
			plivo_otp_server_decide(req, MHD_HTTP_OK, "OK\n");
			break;
		case PLIVO_INGEST_REPLAYED:
			plivo_otp_server_decide(req, MHD_HTTP_FORBIDDEN, "nonce already used\n");
			break;
		case PLIVO_INGEST_STALE_V2:
			/* Plivo's retries get the same; only V3 counts for an old message. */
			plivo_otp_server_decide(req, MHD_HTTP_FORBIDDEN,
									"V2 signature too old for this message\n");
			break;
		case PLIVO_INGEST_V2_UNBOUND:
			plivo_otp_server_decide(req, MHD_HTTP_FORBIDDEN,
									"V2 signature counts only on a message's own callback URL\n");
			break;
		case PLIVO_INGEST_V2_OTHER_MESSAGE:
			plivo_otp_server_decide(req, MHD_HTTP_FORBIDDEN,
									"V2 signature is for another message\n");
			break;
		case PLIVO_INGEST_V3_REQUIRED:
			plivo_otp_server_decide(req, MHD_HTTP_FORBIDDEN,
									"call callbacks must carry a V3 signature\n");
			break;
		case PLIVO_INGEST_INCOMPLETE:
			plivo_otp_server_decide(req, MHD_HTTP_BAD_REQUEST,
									req->route->kind == ROUTE_VOICE_STATUS ?
									"RequestUUID and CallStatus are required\n" :
									"MessageUUID and Status are required\n");
			break;
	}
}

/* The unit of work of record_ready: every callback of the batch. */
static void
record_batch(void *arg)
{
	for (CallbackRequest *req = (CallbackRequest *) arg; req; req = req->next_ready)
	{
		req->hold = false;
		if (!plivo_otp_run_subtransaction(record_callback, req))
			plivo_otp_server_decide_failed(req, MHD_HTTP_INTERNAL_SERVER_ERROR,
										   "could not record\n");
	}
}

/*
 * Record the ready callbacks in one transaction, then resume their
 * connections with the answer.  Runs outside libmicrohttpd's callbacks.
 * False if there were none.
 */
static bool
record_ready(void)
{
	CallbackRequest *batch = plivo_otp_server_take_ready();
	bool		committed;

	if (batch == NULL)
		return false;
	committed = plivo_otp_run_work("recording Plivo callbacks", record_batch, batch);
	for (CallbackRequest *req = batch, *next; req; req = next)
	{
		next = req->next_ready;
		/* Nothing counts as recorded unless its transaction committed. */
		if (!committed)
			plivo_otp_server_decide_failed(req, MHD_HTTP_SERVICE_UNAVAILABLE,
										   "could not record, retry later\n");
		if (req->hold)
			plivo_otp_server_hold(req);
		else
			plivo_otp_server_resume(req);
	}
	return true;
}

/* (Re)read the public URL and the auth token; say what is missing. */
static void
load_listener_config(void)
{
	ListenerConfig *c = &plivo_otp_listener_config;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	char	   *why = NULL;

	if (c->auth_token)
	{
		explicit_bzero(c->auth_token, strlen(c->auth_token));
		pfree(c->auth_token);
		c->auth_token = NULL;
	}
	if (c->public_base)
		pfree(c->public_base);
	c->public_base = plivo_otp_base_url(plivo_otp_public_url);
	if (c->public_base[0] == '\0')
		why = "plivo_otp.public_url is not set.";
	else
		c->auth_token = plivo_otp_read_auth_token(&why);
	MemoryContextSwitchTo(old);

	c->configured = c->auth_token != NULL && why == NULL;
	if (!c->configured)
		ereport(LOG,
				(errmsg("plivo_otp listener answers 503 to every callback"),
				 errdetail_internal("%s", why),
				 errhint("Set plivo_otp.public_url to the URL at which Plivo reaches this listener, and the auth token file.")));
}

/* Act on SIGTERM (exit) and SIGHUP (reload the settings). */
static void
handle_signals(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ShutdownRequestPending)
		proc_exit(1);			/* 0 would unregister the worker: see dispatcher.c */
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		load_listener_config();
	}
}

/* Start the server, waiting for the address and port as long as it takes. */
static void
start_server(void)
{
	char		why[256];
	char		logged[256] = "";
	TimestampTz logged_at = 0;
	int			err;

	while (!plivo_otp_server_start(why, sizeof(why), &err))
	{
		TimestampTz now = GetCurrentTimestamp();

		if (strcmp(why, logged) != 0 ||
			TimestampDifferenceExceeds(logged_at, now, LISTEN_REMIND_SECS * 1000))
		{
			ereport(LOG,
					(errcode(err == EADDRINUSE ? ERRCODE_OBJECT_IN_USE :
							 ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("plivo_otp listener cannot listen on %s port %d: %s",
							plivo_otp_listen_address, plivo_otp_listen_port, why),
					 errdetail("It accepts no callbacks until it can; it tries again every %d seconds.",
							   LISTEN_RETRY_SECS),
					 err == EADDRINUSE ?
					 errhint("Another process is using this address and port: stop it, or set plivo_otp.listen_port to a free port and restart the server.") :
					 errhint("Check plivo_otp.listen_address and plivo_otp.listen_port, then restart the server.")));
			strlcpy(logged, why, sizeof(logged));
			logged_at = now;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LISTEN_RETRY_SECS * 1000L,
						 plivo_otp_wait_event(PLIVO_OTP_WAIT_LISTENER_RETRY));
		ResetLatch(MyLatch);
		handle_signals();
	}
}

/* Connect, read the settings, start the server; the set to wait on. */
static WaitEventSet *
listener_init(void)
{
	WaitEventSet *wait_set;

	plivo_otp_worker_connect("plivo_otp listener");
	load_listener_config();
	start_server();

	wait_set = plivo_otp_worker_wait_set(plivo_otp_server_epoll_fd());

	ereport(LOG,
			(errmsg("plivo_otp listener accepts callbacks on %s port %d for %s%s",
					plivo_otp_listen_address, plivo_otp_listen_port,
					plivo_otp_listener_config.public_base, plivo_otp_server_first_path())));
	return wait_set;
}

void
plivo_otp_listener_main(Datum main_arg)
{
	WaitEventSet *wait_set = listener_init();
	MemoryContext loop_context = AllocSetContextCreate(TopMemoryContext,
													   "plivo_otp listener loop",
													   ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		WaitEvent	events[3];

		/* Whatever a turn of the loop allocates lives until the next turn. */
		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);
		(void) WaitEventSetWait(wait_set, plivo_otp_server_timeout_ms(), events,
								lengthof(events),
								plivo_otp_wait_event(plivo_otp_connections_open() > 0 ?
													 PLIVO_OTP_WAIT_LISTENER_CLIENTS :
													 PLIVO_OTP_WAIT_LISTENER_IDLE));
		ResetLatch(MyLatch);
		if (ShutdownRequestPending)
			plivo_otp_server_stop();
		handle_signals();

		/* Accept, read and judge; then record the batch and answer it. */
		plivo_otp_server_run();
		if (record_ready())
			plivo_otp_server_run();	/* send the answers */
	}
}
