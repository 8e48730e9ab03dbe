/*-------------------------------------------------------------------------
 *
 * http.c
 *	  Concurrent HTTP requests with libcurl's multi interface in
 *	  socket-action style, for a worker's single-threaded event loop.
 *
 * libcurl tells us which sockets to watch (socket callback) and when to
 * call it back (timer callback).  The sockets go into one epoll descriptor
 * owned here; the worker waits on that descriptor together with its latch,
 * because a WaitEventSet has a fixed size while HTTP sockets come and go.
 *
 * No callback here ever calls ereport, palloc or anything else that could
 * longjmp out of libcurl: they record what happened in plain C memory, and
 * the worker looks at it after the libcurl call has returned.
 *
 * Connections are kept alive and reused: they live in the multi handle's
 * cache (CURLMOPT_MAXCONNECTS, at least max_inflight of them, so a burst
 * does not close what it opened), and over TLS a server that offers HTTP/2
 * carries many requests on one connection (CURLPIPE_MULTIPLEX; no
 * CURLOPT_PIPEWAIT, see plivo_rest.c: a slow answer must not hold up the
 * requests after it).  The easy handle of a transfer that completed is
 * reset and kept for the next request (at most max_inflight of them): a
 * new one costs libcurl's allocation of its buffers, a tenth of the
 * dispatcher's time per message while a backlog drained.
 * Why reuse cannot send a message twice: see plivo_rest.c.
 *
 * At process exit (whatever the reason) the running transfers, the multi
 * handle and the epoll descriptor are released and libcurl cleaned up.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <unistd.h>

#include "storage/ipc.h"
#include "utils/timestamp.h"

#include "dispatcher.h"

static CURLM *multi = NULL;
static int	epoll_fd = -1;
static long timer_ms = -1;		/* libcurl's requested wake-up, -1 for none */
static TimestampTz timer_set_at = 0;
static int	running = 0;
static HttpTransfer *active = NULL;	/* running transfers, for abort_all */

/* Easy handles of completed transfers, reset, for the next requests. */
static CURL **spare = NULL;
static int	nspare = 0;
static int	spare_room = 0;


static void
link_active(HttpTransfer *t)
{
	t->prev = NULL;
	t->next = active;
	if (active)
		active->prev = t;
	active = t;
	running++;
}

static void
unlink_active(HttpTransfer *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		active = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->next = t->prev = NULL;
	running--;
}

/* Keep epoll in step with what libcurl wants to hear about a socket. */
static int
socket_callback(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.data.fd = fd;
	if (what == CURL_POLL_REMOVE)
	{
		/* The socket may already be closed; ENOENT/EBADF are harmless here. */
		(void) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, NULL);
		curl_multi_assign(multi, fd, NULL);
		return 0;
	}
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	if (socketp == NULL)
	{
		if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST)
			(void) epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &ev);
		curl_multi_assign(multi, fd, (void *) 1);
	}
	else
		(void) epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &ev);
	return 0;
}

static int
timer_callback(CURLM *m, long timeout_ms, void *userp)
{
	timer_ms = timeout_ms;
	timer_set_at = GetCurrentTimestamp();
	return 0;
}

static size_t
write_callback(char *data, size_t size, size_t nmemb, void *userp)
{
	HttpTransfer *t = (HttpTransfer *) userp;
	size_t		n = size * nmemb;
	size_t		room = HTTP_MAX_RESPONSE - t->response_len;
	size_t		take = Min(n, room);

	if (take > 0)
	{
		char	   *grown = realloc(t->response, t->response_len + take + 1);

		if (grown == NULL)
			return 0;			/* libcurl fails the transfer: CURLE_WRITE_ERROR */
		t->response = grown;
		memcpy(t->response + t->response_len, data, take);
		t->response_len += take;
		t->response[t->response_len] = '\0';
	}
	/* The rest of a response that large is dropped: no Plivo answer is. */
	return n;
}

/* Remember a Retry-After given in seconds (HTTP dates are rare from APIs). */
static size_t
header_callback(char *data, size_t size, size_t nmemb, void *userp)
{
	HttpTransfer *t = (HttpTransfer *) userp;
	size_t		n = size * nmemb;
	static const char name[] = "retry-after:";

	if (n > sizeof(name) && pg_strncasecmp(data, name, sizeof(name) - 1) == 0)
	{
		long		secs = 0;
		size_t		i = sizeof(name) - 1;
		bool		digits = false;

		while (i < n && (data[i] == ' ' || data[i] == '\t'))
			i++;
		while (i < n && data[i] >= '0' && data[i] <= '9' && secs < 86400)
		{
			secs = secs * 10 + (data[i++] - '0');
			digits = true;
		}
		if (digits)
			t->retry_after = secs;
	}
	return n;
}

/* At process exit: what libcurl and epoll hold goes back. */
static void
http_cleanup(int code, Datum arg)
{
	while (active)
	{
		HttpTransfer *t = active;

		curl_multi_remove_handle(multi, t->easy);
		unlink_active(t);
		curl_easy_cleanup(t->easy);
		t->easy = NULL;
	}
	while (nspare > 0)
		curl_easy_cleanup(spare[--nspare]);
	free(spare);
	spare = NULL;
	spare_room = 0;
	if (multi)
		curl_multi_cleanup(multi);
	multi = NULL;
	if (epoll_fd >= 0)
		close(epoll_fd);
	epoll_fd = -1;
	curl_global_cleanup();
}

void
plivo_otp_http_init(void)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "plivo_otp: could not initialise libcurl");
	on_proc_exit(http_cleanup, (Datum) 0);
	multi = curl_multi_init();
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (multi == NULL || epoll_fd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("plivo_otp dispatcher: could not create its HTTP event loop: %m")));
	if (curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_callback) != CURLM_OK ||
		curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_callback) != CURLM_OK ||
		curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX) != CURLM_OK)
		elog(ERROR, "plivo_otp: could not configure libcurl");
	plivo_otp_http_configure(plivo_otp_max_inflight);
}

/*
 * Size the connection cache, and the spare easy handles, for up to
 * max_inflight requests at once (at start and on SIGHUP).  libcurl's own
 * default cache (four per easy handle added) shrinks and grows with the
 * handles in use, closing connections a moment later needed again.
 */
void
plivo_otp_http_configure(int max_inflight)
{
	int			room = Max(max_inflight, 4);
	CURL	  **grown;

	(void) curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) room);
	while (nspare > room)
		curl_easy_cleanup(spare[--nspare]);
	grown = realloc(spare, room * sizeof(CURL *));
	if (grown == NULL)
		return;					/* (keeps the old array and its room) */
	spare = grown;
	spare_room = room;
}

/* An easy handle in its initial state; NULL if none can be made. */
CURL *
plivo_otp_http_easy(void)
{
	if (nspare > 0)
		return spare[--nspare];
	return curl_easy_init();
}

int
plivo_otp_http_epoll_fd(void)
{
	return epoll_fd;
}

/* Milliseconds until libcurl wants to be called back, or -1. */
long
plivo_otp_http_timeout_ms(void)
{
	long		elapsed;

	if (timer_ms < 0)
		return -1;
	elapsed = (long) ((GetCurrentTimestamp() - timer_set_at) / 1000);
	return Max(0, timer_ms - elapsed);
}

/*
 * Hand a prepared easy handle to the multi handle.  False if libcurl
 * refused it: nothing was sent, and the caller still owns the transfer.
 */
bool
plivo_otp_http_start(HttpTransfer *t)
{
	t->retry_after = -1;
	t->errbuf[0] = '\0';
	t->started_at = GetCurrentTimestamp();
	if (curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, write_callback) != CURLE_OK ||
		curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t) != CURLE_OK ||
		curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, header_callback) != CURLE_OK ||
		curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, t) != CURLE_OK ||
		curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->errbuf) != CURLE_OK ||
		curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t) != CURLE_OK ||
		curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
		curl_multi_add_handle(multi, t->easy) != CURLM_OK)
	{
		strlcpy(t->errbuf, "libcurl refused the request", sizeof(t->errbuf));
		return false;
	}
	link_active(t);
	return true;
}

/*
 * Let libcurl make progress: on every ready socket when the epoll
 * descriptor is readable, and on its timer when that has expired.
 */
void
plivo_otp_http_drive(bool socket_ready)
{
	int			still;

	if (socket_ready)
	{
		struct epoll_event events[64];
		int			n = epoll_wait(epoll_fd, events, lengthof(events), 0);

		for (int i = 0; i < n; i++)
		{
			int			mask = 0;

			if (events[i].events & EPOLLIN)
				mask |= CURL_CSELECT_IN;
			if (events[i].events & EPOLLOUT)
				mask |= CURL_CSELECT_OUT;
			if (events[i].events & (EPOLLERR | EPOLLHUP))
				mask |= CURL_CSELECT_ERR;
			curl_multi_socket_action(multi, events[i].data.fd, mask, &still);
		}
	}
	if (timer_ms >= 0 && plivo_otp_http_timeout_ms() == 0)
	{
		timer_ms = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still);
	}
}

/* A finished transfer, removed from the multi handle, or NULL. */
HttpTransfer *
plivo_otp_http_next_done(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		HttpTransfer *t = NULL;
		long		request_size = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		t->result = msg->data.result;
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->http_status);
		curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &request_size);
		t->request_sent = t->request_sent || request_size > 0;
		t->completed = t->result == CURLE_OK;
		curl_multi_remove_handle(multi, t->easy);
		unlink_active(t);
		return t;
	}
	return NULL;
}

/* Stop every running transfer (at shutdown); each is passed to the callback. */
void
plivo_otp_http_abort_all(void (*each) (HttpTransfer *transfer))
{
	while (active)
	{
		HttpTransfer *t = active;
		long		request_size = 0;

		curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &request_size);
		t->result = CURLE_ABORTED_BY_CALLBACK;
		t->http_status = 0;
		t->request_sent = t->request_sent || request_size > 0;
		curl_multi_remove_handle(multi, t->easy);
		unlink_active(t);
		each(t);
	}
}

int
plivo_otp_http_inflight(void)
{
	return running;
}

/* Running transfers of one kind (HttpTransfer.kind); at most max_inflight to count. */
int
plivo_otp_http_inflight_of(int kind)
{
	int			n = 0;

	for (HttpTransfer *t = active; t != NULL; t = t->next)
		n += t->kind == kind;
	return n;
}

void
plivo_otp_http_free(HttpTransfer *t)
{
	/*
	 * Only the handle of a transfer that completed is kept: with libcurl 8
	 * (Debian 13) a handle reset and reused after a refused connection never
	 * reached the server again (TAP 006 on PostgreSQL 17).  Connections, DNS
	 * and TLS sessions stay with the multi handle either way.
	 */
	if (t->easy && t->completed && nspare < spare_room)
	{
		curl_easy_reset(t->easy);
		spare[nspare++] = t->easy;
	}
	else if (t->easy)
		curl_easy_cleanup(t->easy);
	if (t->headers)
		curl_slist_free_all(t->headers);
	free(t->response);
	if (t->request_body)
	{
		/* The body holds the message text, and so the code. */
		explicit_bzero(t->request_body, strlen(t->request_body));
		pfree(t->request_body);
	}
	pfree(t);
}
