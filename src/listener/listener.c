/*-------------------------------------------------------------------------
 *
 * listener.c
 *	  The webhook listener background worker: an HTTP endpoint for Plivo's
 *	  message-status callbacks, built on libmicrohttpd.
 *
 * One single-threaded event loop: libmicrohttpd runs without a thread of
 * its own, in epoll mode, and its epoll descriptor waits in the worker's
 * WaitEventSet beside the latch.  libmicrohttpd calls handle_request() from
 * MHD_run() in this same thread; that callback never calls into PostgreSQL
 * (no palloc, no ereport: nothing may longjmp through the library).  It
 * routes, limits, parses and authenticates with plain C (signature.c,
 * callback_auth.c), answers what it can refuse at once (404, 405, 413, 415,
 * 400, 403, 503), and suspends each authentic callback.
 *
 * After MHD_run() returns, the suspended callbacks are recorded together in
 * one short transaction (a subtransaction each, so one bad row cannot fail
 * the batch), and only after that transaction has committed are their
 * connections resumed and answered 200.  A callback therefore never gets a
 * 200 for an event that was not stored; Plivo retries anything else.
 *
 * The signed URL is plivo_otp.public_url + the request path (never the Host
 * header or the listening address), because Plivo signs the URL it called,
 * which a reverse proxy in front of us may rewrite.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <microhttpd.h>
#include <netdb.h>
#include <sys/socket.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/wait_event.h"

#include "listener/callback_auth.h"
#include "listener/delivery.h"
#include "plivo_otp.h"
#include "common/worker.h"

PGDLLEXPORT void plivo_otp_listener_main(Datum main_arg);

#define MAX_BODY_BYTES		16384
#define MAX_PARAMS			128
#define CONNECTION_TIMEOUT_SECS 10
#define CONNECTION_MEMORY	(64 * 1024)

/* What a path serves.  Voice answer and call-status routes join this table. */
typedef enum RouteKind
{
	ROUTE_SMS_STATUS
} RouteKind;

typedef struct Route
{
	const char *path;
	RouteKind	kind;
} Route;

static const Route routes[] = {
	{"/plivo/sms-status", ROUTE_SMS_STATUS},
};

/* One request, from its first byte to its answer; malloc'd. */
typedef struct CallbackRequest
{
	struct MHD_Connection *conn;
	const Route *route;
	const char *method;			/* "GET" or "POST" */
	char	   *body;
	size_t		body_len;
	unsigned int status;		/* the answer, once decided */
	const char *text;			/* its body (a static string) */
	PlivoParam	params[MAX_PARAMS];
	int			nparams;
	char	   *storage;		/* the params' strings */
	char	   *nonce;
	char	   *other_nonce;	/* V2's, when V3 verified and V2 came too */
	struct CallbackRequest *next_ready;
} CallbackRequest;

static struct MHD_Daemon *http_daemon = NULL;
static CallbackRequest *ready = NULL;	/* authentic, suspended, to record */

/* Configuration read at start and on SIGHUP (TopMemoryContext). */
static char *auth_token = NULL;
static char *public_base = NULL;
static bool configured = false;

static enum MHD_Result
answer(struct MHD_Connection *conn, unsigned int status, const char *text)
{
	struct MHD_Response *response;
	enum MHD_Result ret;

	response = MHD_create_response_from_buffer(strlen(text), (void *) text,
											   MHD_RESPMEM_PERSISTENT);
	if (response == NULL)
		return MHD_NO;
	MHD_add_response_header(response, "Content-Type", "text/plain; charset=utf-8");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(response, "Allow", "GET, POST");
	ret = MHD_queue_response(conn, status, response);
	MHD_destroy_response(response);
	return ret;
}

static void
decide(CallbackRequest *req, unsigned int status, const char *text)
{
	if (req->status == 0)
	{
		req->status = status;
		req->text = text;
	}
}

typedef struct QueryCopy
{
	CallbackRequest *req;
	size_t		bytes;
	char	   *next;
	bool		too_many;
} QueryCopy;

static enum MHD_Result
measure_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	QueryCopy  *q = cls;

	q->bytes += strlen(key) + 1 + (value ? strlen(value) : 0) + 1;
	return MHD_YES;
}

static enum MHD_Result
copy_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	QueryCopy  *q = cls;
	CallbackRequest *req = q->req;

	if (req->nparams == MAX_PARAMS)
	{
		q->too_many = true;
		return MHD_NO;
	}
	req->params[req->nparams].key = strcpy(q->next, key);
	q->next += strlen(key) + 1;
	req->params[req->nparams].value = strcpy(q->next, value ? value : "");
	q->next += strlen(q->next) + 1;
	req->nparams++;
	return MHD_YES;
}

/* The request's parameters: the form body of a POST, the query of a GET. */
static bool
collect_params(CallbackRequest *req)
{
	QueryCopy	q = {req, 0, NULL, false};
	int			nargs = MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, NULL, NULL);

	if (strcmp(req->method, "POST") == 0)
	{
		const char *type = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
													   MHD_HTTP_HEADER_CONTENT_TYPE);

		/* Our callback URL has no query: one on a POST is not Plivo's. */
		if (nargs > 0)
			return false;
		if (req->body_len == 0)
			return true;
		if (type == NULL || strncasecmp(type, "application/x-www-form-urlencoded", 33) != 0)
		{
			decide(req, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "form data expected\n");
			return false;
		}
		req->nparams = plivo_otp_parse_form(req->body, req->body_len, req->params,
											MAX_PARAMS, &req->storage);
		if (req->nparams == -2)
			decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
		return req->nparams >= 0;
	}

	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, measure_arg, &q);
	if (q.bytes == 0)
		return true;
	req->storage = malloc(q.bytes);
	if (req->storage == NULL)
	{
		decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
		return false;
	}
	q.next = req->storage;
	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, copy_arg, &q);
	return !q.too_many;
}

static bool
has_param(CallbackRequest *req, const char *key)
{
	for (int i = 0; i < req->nparams; i++)
		if (strcmp(req->params[i].key, key) == 0 && req->params[i].value[0] != '\0')
			return true;
	return false;
}

/* Parse and authenticate a complete request; plain C only. */
static void
validate(CallbackRequest *req)
{
	PlivoCallbackHeaders h;
	PlivoSigResult result;
	const char *nonce = NULL;
	const char *other_nonce = NULL;
	char		url[2048];

	if (!configured)
	{
		decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "listener not configured\n");
		return;
	}
	if (!collect_params(req))
	{
		decide(req, MHD_HTTP_BAD_REQUEST, "malformed request\n");
		return;
	}

	h.v3 = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-V3");
	h.ma_v3 = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-Ma-V3");
	h.v3_nonce = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-V3-Nonce");
	h.v2 = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-V2");
	h.ma_v2 = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-Ma-V2");
	h.v2_nonce = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-V2-Nonce");

	if (snprintf(url, sizeof(url), "%s%s", public_base, req->route->path) >= (int) sizeof(url))
	{
		decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "public URL too long\n");
		return;
	}
	result = plivo_otp_authenticate_callback(req->method, url, req->params, req->nparams,
											 &h, auth_token, &nonce, &other_nonce);
	if (result == PLIVO_SIG_ERROR)
	{
		decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "could not check the signature\n");
		return;
	}
	if (result != PLIVO_SIG_VALID || nonce == NULL || strlen(nonce) > 128 ||
		(other_nonce != NULL && strlen(other_nonce) > 128))
	{
		decide(req, MHD_HTTP_FORBIDDEN, "invalid signature\n");
		return;
	}
	if (!has_param(req, "MessageUUID") || !has_param(req, "Status"))
	{
		decide(req, MHD_HTTP_BAD_REQUEST, "MessageUUID and Status are required\n");
		return;
	}
	req->nonce = strdup(nonce);
	req->other_nonce = other_nonce ? strdup(other_nonce) : NULL;
	if (req->nonce == NULL || (other_nonce != NULL && req->other_nonce == NULL))
		decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
}

/*
 * libmicrohttpd's access handler: called for the headers, for each piece of
 * the body, once the body is complete, and again after a resume.
 */
static enum MHD_Result
handle_request(void *cls, struct MHD_Connection *conn, const char *path,
			   const char *method, const char *version, const char *upload_data,
			   size_t *upload_data_size, void **con_cls)
{
	CallbackRequest *req = *con_cls;

	if (req == NULL)
	{
		const char *length;

		req = calloc(1, sizeof(CallbackRequest));
		if (req == NULL)
			return MHD_NO;
		req->conn = conn;
		*con_cls = req;
		for (int i = 0; i < lengthof(routes); i++)
			if (strcmp(path, routes[i].path) == 0)
				req->route = &routes[i];
		if (req->route == NULL)
			return answer(conn, MHD_HTTP_NOT_FOUND, "not found\n");
		if (strcmp(method, "POST") == 0)
			req->method = "POST";
		else if (strcmp(method, "GET") == 0)
			req->method = "GET";
		else
			return answer(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
		length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (length && strtoull(length, NULL, 10) > MAX_BODY_BYTES)
			return answer(conn, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n");
		return MHD_YES;
	}

	if (*upload_data_size > 0)
	{
		if (req->status == 0)
		{
			char	   *grown = NULL;

			if (req->body_len + *upload_data_size <= MAX_BODY_BYTES)
				grown = realloc(req->body, req->body_len + *upload_data_size + 1);
			if (grown == NULL)
				decide(req, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n");
			else
			{
				req->body = grown;
				memcpy(req->body + req->body_len, upload_data, *upload_data_size);
				req->body_len += *upload_data_size;
				req->body[req->body_len] = '\0';
			}
		}
		*upload_data_size = 0;
		return MHD_YES;
	}

	/* The request is complete (or resumed with its answer decided). */
	if (req->status == 0)
		validate(req);
	if (req->status != 0)
		return answer(conn, req->status, req->text);

	req->next_ready = ready;
	ready = req;
	MHD_suspend_connection(conn);
	return MHD_YES;
}

static void
request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
				  enum MHD_RequestTerminationCode toe)
{
	CallbackRequest *req = *con_cls;

	if (req == NULL)
		return;
	free(req->body);
	free(req->storage);
	free(req->nonce);
	free(req->other_nonce);
	free(req);
	*con_cls = NULL;
}

/*
 * Record the ready callbacks in one transaction, then resume their
 * connections with the answer.  Runs outside libmicrohttpd's callbacks.
 */
static void
record_ready(void)
{
	CallbackRequest *batch = ready;
	MemoryContext caller = CurrentMemoryContext;
	bool		committed = false;

	ready = NULL;
	if (batch == NULL)
		return;

	PG_TRY();
	{
		if (plivo_otp_begin_work("recording Plivo callbacks"))
		{
			for (CallbackRequest *req = batch; req; req = req->next_ready)
			{
				ResourceOwner owner = CurrentResourceOwner;
				MemoryContext inner = CurrentMemoryContext;

				BeginInternalSubTransaction(NULL);
				PG_TRY();
				{
					switch (plivo_otp_ingest_callback(req->params, req->nparams, req->nonce,
													  req->other_nonce))
					{
						case PLIVO_INGEST_RECORDED:
						case PLIVO_INGEST_DUPLICATE:
							decide(req, MHD_HTTP_OK, "OK\n");
							break;
						case PLIVO_INGEST_REPLAYED:
							decide(req, MHD_HTTP_FORBIDDEN, "nonce already used\n");
							break;
						case PLIVO_INGEST_INCOMPLETE:
							decide(req, MHD_HTTP_BAD_REQUEST, "MessageUUID and Status are required\n");
							break;
					}
					ReleaseCurrentSubTransaction();
				}
				PG_CATCH();
				{
					MemoryContextSwitchTo(inner);
					EmitErrorReport();
					FlushErrorState();
					RollbackAndReleaseCurrentSubTransaction();
					decide(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "could not record\n");
				}
				PG_END_TRY();
				MemoryContextSwitchTo(inner);
				CurrentResourceOwner = owner;
			}
			plivo_otp_end_work();
			committed = true;
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);

	for (CallbackRequest *req = batch, *next; req; req = next)
	{
		next = req->next_ready;
		/* Nothing counts as recorded unless its transaction committed. */
		if (!committed)
		{
			req->status = MHD_HTTP_SERVICE_UNAVAILABLE;
			req->text = "could not record, retry later\n";
		}
		MHD_resume_connection(req->conn);
	}
}

static void
load_config(void)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	char	   *why = NULL;

	if (auth_token)
	{
		explicit_bzero(auth_token, strlen(auth_token));
		pfree(auth_token);
		auth_token = NULL;
	}
	if (public_base)
		pfree(public_base);
	public_base = pstrdup(plivo_otp_public_url);
	while (strlen(public_base) > 0 && public_base[strlen(public_base) - 1] == '/')
		public_base[strlen(public_base) - 1] = '\0';
	if (public_base[0] == '\0')
		why = "plivo_otp.public_url is not set";
	else
		auth_token = plivo_otp_read_auth_token(&why);
	MemoryContextSwitchTo(old);

	configured = auth_token != NULL && why == NULL;
	if (!configured)
		ereport(LOG,
				(errmsg("plivo_otp listener answers 503 to every callback: %s", why),
				 errhint("Set plivo_otp.public_url to the URL at which Plivo reaches this listener, and the auth token file.")));
}

static void
start_daemon(void)
{
	struct addrinfo hints;
	struct addrinfo *addr = NULL;
	char		port[16];
	unsigned int flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
	int			rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%d", plivo_otp_listen_port);
	rc = getaddrinfo(strcmp(plivo_otp_listen_address, "*") == 0 ? NULL : plivo_otp_listen_address,
					 port, &hints, &addr);
	if (rc != 0 || addr == NULL)
		ereport(ERROR,
				(errmsg("plivo_otp listener cannot resolve plivo_otp.listen_address \"%s\": %s",
						plivo_otp_listen_address, gai_strerror(rc))));
	if (addr->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;

	http_daemon = MHD_start_daemon(flags, (uint16_t) plivo_otp_listen_port, NULL, NULL,
								   handle_request, NULL,
								   MHD_OPTION_SOCK_ADDR, addr->ai_addr,
								   MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int) 1,
								   MHD_OPTION_CONNECTION_LIMIT,
								   (unsigned int) plivo_otp_listen_max_connections,
								   /* No one address may take every slot (0: no limit). */
								   MHD_OPTION_PER_IP_CONNECTION_LIMIT,
								   (unsigned int) plivo_otp_listen_max_connections_per_address,
								   MHD_OPTION_CONNECTION_TIMEOUT,
								   (unsigned int) CONNECTION_TIMEOUT_SECS,
								   MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) CONNECTION_MEMORY,
								   MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
								   MHD_OPTION_END);
	freeaddrinfo(addr);
	if (http_daemon == NULL)
		ereport(ERROR,
				(errmsg("plivo_otp listener could not listen on %s port %d: %m",
						plivo_otp_listen_address, plivo_otp_listen_port)));
}

static unsigned int
open_connections(void)
{
	const union MHD_DaemonInfo *info;

	info = MHD_get_daemon_info(http_daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	return info ? info->num_connections : 0;
}

/*
 * MHD_run, and once more if that closed connections: at the connection
 * limit libmicrohttpd takes its listening socket out of its epoll set and
 * puts it back only at the start of a run, so without the second run the
 * connections waiting to be accepted would wait for our next wake-up (up
 * to 10 s when no connection is left to time out).
 */
static void
run_daemon(void)
{
	unsigned int before = open_connections();

	MHD_run(http_daemon);
	if (open_connections() < before)
		MHD_run(http_daemon);
}

static long
daemon_timeout_ms(void)
{
	MHD_UNSIGNED_LONG_LONG timeout;

	if (MHD_get_timeout(http_daemon, &timeout) == MHD_YES)
		return (long) Min(timeout, 10000);
	return 10000;
}

void
plivo_otp_listener_main(Datum main_arg)
{
	WaitEventSet *wait_set;
	MemoryContext loop_context;
	const union MHD_DaemonInfo *info;

	plivo_otp_worker_connect("plivo_otp listener");
	load_config();
	start_daemon();
	info = MHD_get_daemon_info(http_daemon, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL)
		ereport(ERROR, (errmsg("plivo_otp listener has no epoll descriptor")));

	loop_context = AllocSetContextCreate(TopMemoryContext, "plivo_otp listener loop",
										 ALLOCSET_DEFAULT_SIZES);
	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, info->epoll_fd, NULL, NULL);

	ereport(LOG,
			(errmsg("plivo_otp listener accepts callbacks on %s port %d for %s%s",
					plivo_otp_listen_address, plivo_otp_listen_port, public_base,
					routes[0].path)));

	for (;;)
	{
		WaitEvent	events[3];

		/* Whatever a turn of the loop allocates lives until the next turn. */
		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);
		(void) WaitEventSetWait(wait_set, daemon_timeout_ms(), events, lengthof(events),
								PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
		{
			MHD_stop_daemon(http_daemon);
			proc_exit(1);		/* 0 would unregister the worker: see dispatcher.c */
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			load_config();
		}

		/* Accept, read and judge; then record the batch and answer it. */
		run_daemon();
		if (ready != NULL)
		{
			record_ready();
			run_daemon();
		}
	}
}
