/*-------------------------------------------------------------------------
 *
 * server.c
 *	  The listener's HTTP server: libmicrohttpd without a thread of its own,
 *	  in epoll mode, and the routes it serves.
 *
 * libmicrohttpd calls handle_request() from MHD_run() in the worker's own
 * thread; that callback never calls into PostgreSQL (no palloc, no ereport:
 * nothing may longjmp through the library).  It routes, limits, parses and
 * authenticates with plain C (crypto/signature.c, callback_auth.c),
 * answers what it can refuse at once (404, 405, 413, 415, 400, 403, 503),
 * and suspends each authentic callback on the ready list.  listener.c
 * records the ready list in a transaction and then has this file resume
 * each connection with its answer.
 *
 * The signed URL is plivo_otp.public_url + the request path (never the Host
 * header or the listening address), because Plivo signs the URL it called,
 * which a reverse proxy in front of us may rewrite.  The status route also
 * serves each message's own URL, the route + "/" + its token
 * (callback_auth.c): the signed path then names the message.
 *
 * A call's answer URL (voice route + "/" + its answer token) is answered
 * 200 with Plivo XML whatever happens: the call's script when
 * voice_answer.c serves it, and otherwise one fixed no-code answer (hang
 * up), byte for byte the same for every refusal, so that nothing about
 * tokens, signatures or codes can be learned by probing.  Only a request
 * with a valid V3 signature reaches the transaction; every other path
 * under the route, a request that could not be recorded, and a held one
 * at shutdown get the same no-code answer (only 405 and 413, which depend
 * on nothing but the method and the length, are shared with the other
 * routes).  Its answer may be
 * held (suspended) for up to VOICE_HOLD_MS while the dispatcher records
 * the call's UUID; the script lives in a malloc'd buffer wiped when
 * libmicrohttpd is done with it.  Call hang-up callbacks have their own
 * route and the status route's rules.
 *
 * The listening socket is ours, made without SO_REUSEPORT: no other process
 * can then bind the same address and port and take a share of the
 * callbacks.  connections.c gives each request its deadline.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listener.h"

#define MAX_BODY_BYTES		16384
#define CONNECTION_TIMEOUT_SECS 10
#define CONNECTION_MEMORY	(64 * 1024)

static const ListenerRoute routes[] = {
	{PLIVO_OTP_SMS_STATUS_PATH, ROUTE_SMS_STATUS, true},
	{PLIVO_OTP_VOICE_ANSWER_PATH, ROUTE_VOICE_ANSWER, true},
	{PLIVO_OTP_VOICE_STATUS_PATH, ROUTE_VOICE_STATUS, true},
};

/* Every answer of the voice route that is not a script. */
#define VOICE_NO_CODE "<Response><Hangup/></Response>"
#define XML_TYPE "application/xml; charset=utf-8"

static struct MHD_Daemon *http_daemon = NULL;
/* Both lists keep arrival order: the first of two requests is decided first. */
static CallbackRequest *ready = NULL;	/* authentic, suspended, to record */
static CallbackRequest *ready_tail = NULL;
static CallbackRequest *held = NULL;	/* voice answers to decide again */
static CallbackRequest *held_tail = NULL;
static int64 held_retry_ms = 0;		/* when */
static long next_deadline_ms = -1;	/* from connections.c's last look */

/* libmicrohttpd is done with a script's buffer: wipe it. */
static void
free_script(void *buffer)
{
	explicit_bzero(buffer, strlen(buffer));
	free(buffer);
}

/*
 * Queue an answer.  script: a malloc'd body that the response takes over
 * (*script is then NULL), or NULL for text, a static string.
 */
static enum MHD_Result
answer_with(struct MHD_Connection *conn, unsigned int status, const char *text,
			const char *content_type, char **script)
{
	struct MHD_Response *response;
	enum MHD_Result ret;

	plivo_otp_connection_request_arrived(conn);
	if (script && *script)
	{
		response = MHD_create_response_from_buffer_with_free_callback(strlen(*script), *script,
																	  free_script);
		if (response != NULL)
			*script = NULL;
	}
	else
		response = MHD_create_response_from_buffer(strlen(text), (void *) text,
												   MHD_RESPMEM_PERSISTENT);
	if (response == NULL)
		return MHD_NO;
	MHD_add_response_header(response, "Content-Type",
							content_type ? content_type : "text/plain; charset=utf-8");
	if (content_type)
		MHD_add_response_header(response, "Cache-Control", "no-store");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(response, "Allow", "GET, POST");
	ret = MHD_queue_response(conn, status, response);
	MHD_destroy_response(response);
	return ret;
}

static enum MHD_Result
answer(struct MHD_Connection *conn, unsigned int status, const char *text)
{
	return answer_with(conn, status, text, NULL, NULL);
}

/* Set the answer of a request, unless one was decided already. */
void
plivo_otp_server_decide(CallbackRequest *req, unsigned int status, const char *text)
{
	if (req->status == 0)
	{
		req->status = status;
		req->text = text;
	}
}

/* The voice route's one answer for everything but a script. */
void
plivo_otp_server_decide_no_code(CallbackRequest *req)
{
	if (req->status == 0)
		req->content_type = XML_TYPE;
	plivo_otp_server_decide(req, MHD_HTTP_OK, VOICE_NO_CODE);
}

/* Whatever was decided, the no-code answer (a refusal before the transaction). */
static void
force_no_code(CallbackRequest *req)
{
	req->status = 0;
	req->text = NULL;
	req->content_type = NULL;
	plivo_otp_server_decide_no_code(req);
}

/*
 * A request that could not be recorded (or not in time): any script
 * forgotten; a callback gets status and text, which Plivo retries, a call's
 * answer the no-code answer like every other refusal on its route.
 */
void
plivo_otp_server_decide_failed(CallbackRequest *req, unsigned int status, const char *text)
{
	plivo_otp_server_undecide_script(req);
	req->hold = false;
	if (req->route->kind == ROUTE_VOICE_ANSWER)
		force_no_code(req);
	else
	{
		req->status = status;
		req->text = text;
		req->content_type = NULL;
	}
}

/*
 * Answer with a call's script (copied; the copy is wiped once sent).
 * False when out of memory.
 */
bool
plivo_otp_server_decide_script(CallbackRequest *req, const char *xml)
{
	if (req->status != 0)
		return true;
	req->script = strdup(xml);
	if (req->script == NULL)
		return false;
	req->status = MHD_HTTP_OK;
	req->text = req->script;
	req->content_type = XML_TYPE;
	return true;
}

/* Forget a script decided in a transaction that did not commit. */
void
plivo_otp_server_undecide_script(CallbackRequest *req)
{
	if (req->script)
	{
		explicit_bzero(req->script, strlen(req->script));
		free(req->script);
		req->script = NULL;
		req->status = 0;
		req->text = NULL;
		req->content_type = NULL;
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

	if (req->nparams == LISTENER_MAX_PARAMS)
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
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_MEDIA_TYPE);
			plivo_otp_server_decide(req, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "form data expected\n");
			return false;
		}
		req->nparams = plivo_otp_parse_form(req->body, req->body_len, req->params,
											LISTENER_MAX_PARAMS, &req->storage);
		if (req->nparams == -2)
			plivo_otp_server_decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
		return req->nparams >= 0;
	}

	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, measure_arg, &q);
	if (q.bytes == 0)
		return true;
	req->storage = malloc(q.bytes);
	if (req->storage == NULL)
	{
		plivo_otp_server_decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
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

/* The X-Plivo-Signature-* headers of the request. */
static void
signature_headers(CallbackRequest *req, PlivoCallbackHeaders *h)
{
	h->v3 = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-V3");
	h->ma_v3 = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-Ma-V3");
	h->v3_nonce = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-V3-Nonce");
	h->v2 = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-V2");
	h->ma_v2 = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-Ma-V2");
	h->v2_nonce = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Plivo-Signature-V2-Nonce");
}

/*
 * Is the request signed for the URL Plivo called?  True with the nonces to
 * record kept on the request; otherwise the refusal is decided (403, or
 * 503 when the signature could not be checked).
 */
static bool
authenticate(CallbackRequest *req)
{
	PlivoCallbackHeaders h;
	PlivoSigResult result;
	const char *nonce = NULL;
	const char *other_nonce = NULL;
	char		url[2048];

	signature_headers(req, &h);
	/* The path as called: the route, and the token when it named one. */
	if (snprintf(url, sizeof(url), "%s%s%s%s", plivo_otp_listener_config.public_base,
				 req->route->path, req->token[0] ? "/" : "", req->token) >= (int) sizeof(url))
	{
		plivo_otp_server_decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "public URL too long\n");
		return false;
	}
	result = plivo_otp_authenticate_callback(req->method, url, req->params, req->nparams, &h,
											 plivo_otp_listener_config.auth_token,
											 &nonce, &other_nonce, &req->body_signed);
	if (result == PLIVO_SIG_ERROR)
	{
		plivo_otp_listener_count(PLIVO_OTP_ACT_CB_SIGNATURE_ERROR);
		plivo_otp_server_decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "could not check the signature\n");
		return false;
	}
	if (result != PLIVO_SIG_VALID || nonce == NULL || strlen(nonce) > 128 ||
		(other_nonce != NULL && strlen(other_nonce) > 128))
	{
		plivo_otp_listener_count(PLIVO_OTP_ACT_CB_BAD_SIGNATURE);
		plivo_otp_server_decide(req, MHD_HTTP_FORBIDDEN, "invalid signature\n");
		return false;
	}
	req->nonce = strdup(nonce);
	req->other_nonce = other_nonce ? strdup(other_nonce) : NULL;
	if (req->nonce == NULL || (other_nonce != NULL && req->other_nonce == NULL))
	{
		plivo_otp_server_decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
		return false;
	}
	return true;
}

/*
 * A call's answer URL: only a complete, V3-signed request naming a token
 * goes on to the transaction; everything else gets the no-code answer.
 */
static void
validate_voice_answer(CallbackRequest *req)
{
	if (!plivo_otp_listener_config.configured || req->token[0] == '\0' ||
		!collect_params(req) || !authenticate(req) || !req->body_signed)
	{
		plivo_otp_listener_count(PLIVO_OTP_ACT_VOICE_ANSWER_REFUSED);
		force_no_code(req);
	}
}

/* Parse and authenticate a complete request; plain C only. */
static void
validate(CallbackRequest *req)
{
	bool		call = req->route->kind == ROUTE_VOICE_STATUS;

	if (req->route->kind == ROUTE_VOICE_ANSWER)
		validate_voice_answer(req);
	else if (!plivo_otp_listener_config.configured)
	{
		plivo_otp_listener_count(PLIVO_OTP_ACT_CB_NOT_CONFIGURED);
		plivo_otp_server_decide(req, MHD_HTTP_SERVICE_UNAVAILABLE, "listener not configured\n");
	}
	else if (!collect_params(req))
	{
		/* (415 and out of memory were decided, and counted, inside.) */
		if (req->status == 0)
			plivo_otp_listener_count(PLIVO_OTP_ACT_CB_MALFORMED);
		plivo_otp_server_decide(req, MHD_HTTP_BAD_REQUEST, "malformed request\n");
	}
	else if (!authenticate(req))
		return;
	else if (!call && (!has_param(req, "MessageUUID") || !has_param(req, "Status")))
	{
		plivo_otp_listener_count(PLIVO_OTP_ACT_CB_INCOMPLETE);
		plivo_otp_server_decide(req, MHD_HTTP_BAD_REQUEST, "MessageUUID and Status are required\n");
	}
	else if (call && (!has_param(req, "CallStatus") ||
					  (!has_param(req, "RequestUUID") && !has_param(req, "ALegRequestUUID"))))
	{
		plivo_otp_listener_count(PLIVO_OTP_ACT_CB_INCOMPLETE);
		plivo_otp_server_decide(req, MHD_HTTP_BAD_REQUEST,
								"RequestUUID and CallStatus are required\n");
	}
}

/*
 * A new request, its headers read: route, method and announced length.
 * Returns the answer to queue for a refusal, or MHD_YES to read on.
 */
static enum MHD_Result
start_request(CallbackRequest *req, const char *path, const char *method)
{
	const char *length;

	for (int i = 0; i < lengthof(routes) && req->route == NULL; i++)
	{
		if (routes[i].per_message ?
			plivo_otp_route_token(path, strlen(path), routes[i].path, req->token) :
			strcmp(path, routes[i].path) == 0)
			req->route = &routes[i];
		/* Any other path under the voice route: its no-code answer (no token). */
		else if (routes[i].kind == ROUTE_VOICE_ANSWER &&
				 strncmp(path, routes[i].path, strlen(routes[i].path)) == 0)
			req->route = &routes[i];
	}
	if (req->route == NULL)
	{
		plivo_otp_listener_count(PLIVO_OTP_ACT_CB_NOT_FOUND);
		return answer(req->conn, MHD_HTTP_NOT_FOUND, "not found\n");
	}
	/* (405 and 413 depend on no token or code: the voice route shares them.) */
	if (strcmp(method, "POST") == 0)
		req->method = "POST";
	else if (strcmp(method, "GET") == 0)
		req->method = "GET";
	else
	{
		plivo_otp_listener_count(PLIVO_OTP_ACT_CB_METHOD);
		return answer(req->conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
	}
	length = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (length && strtoull(length, NULL, 10) > MAX_BODY_BYTES)
	{
		plivo_otp_listener_count(PLIVO_OTP_ACT_CB_TOO_LARGE);
		return answer(req->conn, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n");
	}
	return MHD_YES;
}

/* One piece of the body; beyond MAX_BODY_BYTES the request is refused. */
static void
append_body(CallbackRequest *req, const char *data, size_t size)
{
	char	   *grown = NULL;

	if (req->status != 0)
		return;
	if (req->body_len + size <= MAX_BODY_BYTES)
		grown = realloc(req->body, req->body_len + size + 1);
	if (grown == NULL)
	{
		plivo_otp_listener_count(PLIVO_OTP_ACT_CB_TOO_LARGE);
		plivo_otp_server_decide(req, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n");
		return;
	}
	req->body = grown;
	memcpy(req->body + req->body_len, data, size);
	req->body_len += size;
	req->body[req->body_len] = '\0';
}

static bool
same_nonce(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/*
 * Does a suspended request (ready or held) carry one of req's nonces?  A
 * call's answer is decided only after the transaction, and may be held, so
 * the nonce is reserved by the first arrival that carries it: a replay that
 * comes while the original waits gets the no-code answer at once, never
 * the script in its place.
 */
static bool
nonce_suspended(const CallbackRequest *req)
{
	const CallbackRequest *lists[2] = {ready, held};

	for (int i = 0; i < lengthof(lists); i++)
		for (const CallbackRequest *o = lists[i]; o; o = o->next_ready)
			if (same_nonce(req->nonce, o->nonce) || same_nonce(req->nonce, o->other_nonce) ||
				same_nonce(req->other_nonce, o->nonce) ||
				same_nonce(req->other_nonce, o->other_nonce))
				return true;
	return false;
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
		req = calloc(1, sizeof(CallbackRequest));
		if (req == NULL)
			return MHD_NO;
		req->conn = conn;
		*con_cls = req;
		return start_request(req, path, method);
	}

	if (*upload_data_size > 0)
	{
		append_body(req, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}

	/* The request is complete (or resumed with its answer decided). */
	if (req->status == 0)
		validate(req);
	if (req->status == 0 && req->route->kind == ROUTE_VOICE_ANSWER && nonce_suspended(req))
		force_no_code(req);
	if (req->status != 0)
		return answer_with(conn, req->status, req->text, req->content_type, &req->script);

	req->next_ready = NULL;
	if (ready_tail)
		ready_tail->next_ready = req;
	else
		ready = req;
	ready_tail = req;
	if (req->arrived_ms == 0)
		req->arrived_ms = plivo_otp_listener_now_ms();
	plivo_otp_connection_request_arrived(conn);
	MHD_suspend_connection(conn);
	return MHD_YES;
}

static void
request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
				  enum MHD_RequestTerminationCode toe)
{
	CallbackRequest *req = *con_cls;

	plivo_otp_connection_request_over(conn);
	if (req == NULL)
		return;
	free(req->body);
	free(req->storage);
	free(req->nonce);
	free(req->other_nonce);
	if (req->script)
		free_script(req->script);
	free(req);
	*con_cls = NULL;
}

/*
 * A listening socket on plivo_otp.listen_address and plivo_otp.listen_port,
 * or -1 with *why set (and *err, the errno, or 0).  SO_REUSEADDR lets a
 * restarted listener bind while its old connections linger in TIME_WAIT;
 * unlike SO_REUSEPORT, it never lets a second socket listen on the same
 * address and port.
 */
static int
listen_socket(bool *ipv6, char *why, size_t whylen, int *err)
{
	struct addrinfo hints;
	struct addrinfo *addr = NULL;
	char		port[16];
	int			on = 1;
	int			fd;
	int			rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%d", plivo_otp_listen_port);
	rc = getaddrinfo(strcmp(plivo_otp_listen_address, "*") == 0 ? NULL : plivo_otp_listen_address,
					 port, &hints, &addr);
	*err = 0;
	if (rc != 0 || addr == NULL)
	{
		snprintf(why, whylen, "cannot resolve the address: %s", gai_strerror(rc));
		return -1;
	}
	*ipv6 = addr->ai_family == AF_INET6;
	fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
		(*ipv6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) != 0) ||
		bind(fd, addr->ai_addr, addr->ai_addrlen) != 0 ||
		listen(fd, SOMAXCONN) != 0)
	{
		*err = errno;
		snprintf(why, whylen, "%s", strerror(*err));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(addr);
	return fd;
}

/*
 * Listen and serve (in the caller's loop).  False, with *why and *err (an
 * errno or 0), when the address and port cannot be had now (taken, not
 * ours, not resolvable): the caller tries again later.  Any other failure
 * is an ERROR.
 */
bool
plivo_otp_server_start(char *why, size_t whylen, int *err)
{
	unsigned int flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
	bool		ipv6 = false;
	int			fd = listen_socket(&ipv6, why, whylen, err);

	if (fd < 0)
		return false;
	if (ipv6)
		flags |= MHD_USE_IPv6;
	/* From here on the socket is libmicrohttpd's, which closes it. */
	http_daemon = MHD_start_daemon(flags, (uint16_t) plivo_otp_listen_port, NULL, NULL,
								   handle_request, NULL,
								   MHD_OPTION_LISTEN_SOCKET, (MHD_socket) fd,
								   MHD_OPTION_CONNECTION_LIMIT,
								   (unsigned int) plivo_otp_listen_max_connections,
								   /* No one address may take every slot (0: no limit). */
								   MHD_OPTION_PER_IP_CONNECTION_LIMIT,
								   (unsigned int) plivo_otp_listen_max_connections_per_address,
								   /* Idle time; connections.c bounds each request's total. */
								   MHD_OPTION_CONNECTION_TIMEOUT,
								   (unsigned int) CONNECTION_TIMEOUT_SECS,
								   MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) CONNECTION_MEMORY,
								   MHD_OPTION_NOTIFY_CONNECTION, plivo_otp_connection_notify, NULL,
								   MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
								   MHD_OPTION_END);
	if (http_daemon == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("plivo_otp listener could not start its HTTP server on %s port %d",
						plivo_otp_listen_address, plivo_otp_listen_port)));
	return true;
}

void
plivo_otp_server_stop(void)
{
	/* No connection may stay suspended: held (voice) answers end with no code. */
	for (CallbackRequest *req = held, *next; req; req = next)
	{
		next = req->next_ready;
		plivo_otp_server_decide_failed(req, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down\n");
		MHD_resume_connection(req->conn);
	}
	held = held_tail = NULL;
	MHD_stop_daemon(http_daemon);
	http_daemon = NULL;
}

/* libmicrohttpd's epoll descriptor, for the worker's wait set. */
int
plivo_otp_server_epoll_fd(void)
{
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(http_daemon, MHD_DAEMON_INFO_EPOLL_FD);

	if (info == NULL)
		elog(ERROR, "plivo_otp: libmicrohttpd has no epoll descriptor");
	return info->epoll_fd;
}

static unsigned int
open_connections(void)
{
	const union MHD_DaemonInfo *info;

	info = MHD_get_daemon_info(http_daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	return info ? info->num_connections : 0;
}

/*
 * MHD_run; then cut the connections whose request is overdue (and under a
 * flood the oldest slow ones), and run again to close them.  Once more if
 * that closed connections: at the connection limit libmicrohttpd takes its
 * listening socket out of its epoll set and puts it back only at the start
 * of a run, so without that run the connections waiting to be accepted
 * would wait for our next wake-up.
 */
void
plivo_otp_server_run(void)
{
	unsigned int before = open_connections();

	MHD_run(http_daemon);
	if (plivo_otp_connections_enforce(&next_deadline_ms) > 0)
		MHD_run(http_daemon);
	if (open_connections() < before)
		MHD_run(http_daemon);
}

/* Milliseconds until libmicrohttpd or a deadline needs a run (at most 10 s). */
long
plivo_otp_server_timeout_ms(void)
{
	MHD_UNSIGNED_LONG_LONG timeout;
	long		ms = 10000;

	if (MHD_get_timeout(http_daemon, &timeout) == MHD_YES)
		ms = (long) Min(timeout, 10000);
	if (next_deadline_ms >= 0)
		ms = Min(ms, next_deadline_ms);
	if (held)
	{
		long		retry = (long) (held_retry_ms - plivo_otp_listener_now_ms());

		ms = Min(ms, Max(retry, 0));
	}
	return ms;
}

/* The path a callback URL ends with, for the start-up log line. */
const char *
plivo_otp_server_first_path(void)
{
	return routes[0].path;
}

/* How many authentic callbacks wait to be recorded (not counting held ones). */
int
plivo_otp_server_ready_count(void)
{
	int			n = 0;

	for (const CallbackRequest *req = ready; req; req = req->next_ready)
		n++;
	return n;
}

/*
 * Wait at most timeout_us for libmicrohttpd's epoll descriptor to become
 * readable (plain poll(2): WaitEventSetWait counts only milliseconds).
 */
bool
plivo_otp_server_wait_us(long timeout_us)
{
	struct pollfd pfd;
	struct timespec ts;

	pfd.fd = plivo_otp_server_epoll_fd();
	pfd.events = POLLIN;
	pfd.revents = 0;
	ts.tv_sec = timeout_us / 1000000;
	ts.tv_nsec = (timeout_us % 1000000) * 1000;
	return ppoll(&pfd, 1, &ts, NULL) > 0;
}

/*
 * The authentic callbacks suspended since the last call, as a list, and
 * the held voice answers once they are due again.
 */
CallbackRequest *
plivo_otp_server_take_ready(void)
{
	CallbackRequest *batch = ready;

	ready = ready_tail = NULL;
	/* The held answers came first: they go first. */
	if (held && plivo_otp_listener_now_ms() >= held_retry_ms)
	{
		held_tail->next_ready = batch;
		batch = held;
		held = held_tail = NULL;
	}
	return batch;
}

/* Keep a voice answer suspended, to decide again in VOICE_RETRY_MS. */
void
plivo_otp_server_hold(CallbackRequest *req)
{
	req->hold = false;
	req->next_ready = NULL;
	if (held_tail)
		held_tail->next_ready = req;
	else
		held = req;
	held_tail = req;
	held_retry_ms = plivo_otp_listener_now_ms() + VOICE_RETRY_MS;
}

/* Has a voice answer been held as long as it may be? */
bool
plivo_otp_server_hold_over(const CallbackRequest *req)
{
	return plivo_otp_listener_now_ms() - req->arrived_ms >= VOICE_HOLD_MS - VOICE_RETRY_MS / 2;
}

/* Answer a suspended request with what was decided for it. */
void
plivo_otp_server_resume(CallbackRequest *req)
{
	MHD_resume_connection(req->conn);
}
