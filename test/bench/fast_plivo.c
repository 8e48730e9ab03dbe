/*-------------------------------------------------------------------------
 *
 * fast_plivo.c
 *	  A fast local Plivo target for the benchmarks (test/bench/run.sh).
 *
 * It answers POST /v1/Account/{id}/Message/ with 202 {"api_id", "message":
 * "message(s) queued", "message_uuid": [one unique UUID per destination]}
 * and POST /v1/Account/{id}/Call/ with 201 {"api_id", "message": "call
 * fired", "request_uuid"}, as test/plivo_standin.py does (Basic auth and a
 * JSON content type checked, 401/400/404 otherwise), but in C on
 * libmicrohttpd's epoll thread pool, so that the target is never what
 * limits the dispatcher.  --delay-ms holds each answer back without
 * blocking other requests (the connection is suspended and a timer thread
 * resumes it).  --limit-rps counts the requests above a per-second limit
 * (the 429s Plivo would send) and, with --enforce-limit, answers them 429.
 *
 * Every API request is recorded: its arrival time (CLOCK_REALTIME, in
 * microseconds, when its headers were read) and its destination ("dst" of
 * a message, "to" of a call), so that commit -> request latency can be
 * computed.  Loopback control routes:
 *	 GET  /_stats	JSON counters (requests, messages, calls, refused,
 *					over_limit, inflight_max, records)
 *	 GET  /_records lines "arrival_us kind dst" (kind m or c)
 *	 POST /_reset	forget the records and zero the counters
 *
 * Usage: fast_plivo --port N [--port-file F] --auth-id ID --auth-token-file F
 *		  [--delay-ms D] [--threads T] [--limit-rps R] [--enforce-limit]
 *		  [--max-records N]
 * (--port 0 picks a free port and writes it to --port-file.)
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <microhttpd.h>

#define MAX_BODY	(64 * 1024)
#define MAX_DST		32

typedef struct Record
{
	int64_t		arrival_us;
	char		kind;
	char		dst[MAX_DST];
} Record;

/* One request in progress (libmicrohttpd's per-request pointer). */
typedef struct Request
{
	int64_t		arrival_us;
	size_t		len;
	int			suspended;		/* 0 none, 1 waiting for the timer, 2 resumed */
	struct MHD_Connection *conn;
	struct Request *next;		/* in the timer's FIFO */
	int64_t		due_us;
	char		body[MAX_BODY + 1];
} Request;

static const char *auth_id;
static char expected_auth[1024];
static int	delay_ms;
static long limit_rps;
static int	enforce_limit;

static Record *records;
static long max_records = 2000000;
static atomic_long nrecords;

static atomic_long n_requests, n_messages, n_calls, n_refused, n_over_limit;
static atomic_long inflight, inflight_max;

static uint64_t uuid_prefix;
static atomic_ulong uuid_counter;

static pthread_mutex_t limit_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t limit_second;
static long limit_count;

/* The delay timer: a FIFO (every request waits the same delay). */
static pthread_mutex_t timer_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t timer_cond = PTHREAD_COND_INITIALIZER;
static Request *timer_head, *timer_tail;

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A unique v4-shaped UUID: a random per-process prefix and a counter. */
static void
make_uuid(char *out)
{
	uint64_t	hi = uuid_prefix;
	uint64_t	lo = atomic_fetch_add(&uuid_counter, 1);

	hi = (hi & 0xFFFFFFFFFFFF0FFFULL) | 0x4000ULL;
	lo = (lo & 0x0FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;
	sprintf(out, "%08x-%04x-%04x-%04x-%012llx",
			(unsigned) (hi >> 32), (unsigned) ((hi >> 16) & 0xFFFF), (unsigned) (hi & 0xFFFF),
			(unsigned) (lo >> 48), (unsigned long long) (lo & 0xFFFFFFFFFFFFULL));
}

static void
base64(const unsigned char *in, size_t len, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t		i;

	for (i = 0; i + 2 < len; i += 3)
	{
		*out++ = tab[in[i] >> 2];
		*out++ = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*out++ = tab[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		*out++ = tab[in[i + 2] & 63];
	}
	if (i < len)
	{
		*out++ = tab[in[i] >> 2];
		if (i + 1 < len)
		{
			*out++ = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
			*out++ = tab[(in[i + 1] & 15) << 2];
		}
		else
		{
			*out++ = tab[(in[i] & 3) << 4];
			*out++ = '=';
		}
		*out++ = '=';
	}
	*out = '\0';
}

/* The string value of top-level-ish "key" in a JSON body (first match), or 0. */
static int
json_string(const char *body, const char *key, char *out, size_t outlen)
{
	char		pattern[64];
	const char *p;
	size_t		n = 0;

	snprintf(pattern, sizeof(pattern), "\"%s\"", key);
	if ((p = strstr(body, pattern)) == NULL)
		return 0;
	p += strlen(pattern);
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ':')
		p++;
	if (*p++ != '"')
		return 0;
	while (*p && *p != '"' && n + 1 < outlen)
		out[n++] = *p++;
	out[n] = '\0';
	return 1;
}

static enum MHD_Result
answer(struct MHD_Connection *conn, unsigned status, char *json)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(strlen(json), json, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
answer_error(struct MHD_Connection *conn, unsigned status, const char *error)
{
	char		id[40];
	char	   *json = malloc(256);

	atomic_fetch_add(&n_refused, 1);
	if (status == MHD_HTTP_UNAUTHORIZED)
	{
		strcpy(json, "{\"error\": \"authentication credentials were not provided\"}");
		return answer(conn, status, json);
	}
	make_uuid(id);
	snprintf(json, 256, "{\"api_id\": \"%s\", \"error\": \"%s\"}", id, error);
	return answer(conn, status, json);
}

static void
record(int64_t arrival, char kind, const char *dst)
{
	long		i = atomic_fetch_add(&nrecords, 1);
	size_t		n;

	if (i >= max_records)
		return;
	records[i].arrival_us = arrival;
	records[i].kind = kind;
	n = strnlen(dst, MAX_DST - 1);
	memcpy(records[i].dst, dst, n);
	records[i].dst[n] = '\0';
}

/* Is this request above --limit-rps in its wall-clock second? */
static int
over_limit(int64_t arrival)
{
	int			over;

	if (limit_rps <= 0)
		return 0;
	pthread_mutex_lock(&limit_lock);
	if (arrival / 1000000 != limit_second)
	{
		limit_second = arrival / 1000000;
		limit_count = 0;
	}
	over = ++limit_count > limit_rps;
	pthread_mutex_unlock(&limit_lock);
	if (over)
		atomic_fetch_add(&n_over_limit, 1);
	return over;
}

/* The Plivo API: a message or a call, after the checks Plivo makes. */
static enum MHD_Result
plivo(struct MHD_Connection *conn, const char *url, Request *req)
{
	const char *auth, *ctype;
	const char *rest;
	size_t		idlen = strlen(auth_id);
	int			is_call;
	char		id[40], dst[4096];
	char	   *json;

	/* /v1/Account/{any id}/Message/ or .../Call/; another id is refused 401. */
	if (strncmp(url, "/v1/Account/", 12) != 0 || (rest = strchr(url + 12, '/')) == NULL ||
		rest == url + 12)
		return answer_error(conn, MHD_HTTP_NOT_FOUND, "not found");
	if (strcmp(rest, "/Message/") == 0)
		is_call = 0;
	else if (strcmp(rest, "/Call/") == 0)
		is_call = 1;
	else
		return answer_error(conn, MHD_HTTP_NOT_FOUND, "not found");
	auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if ((size_t) (rest - (url + 12)) != idlen || strncmp(url + 12, auth_id, idlen) != 0 ||
		auth == NULL || strcmp(auth, expected_auth) != 0)
		return answer_error(conn, MHD_HTTP_UNAUTHORIZED, NULL);
	ctype = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	if (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0 ||
		(ctype[16] != '\0' && ctype[16] != ';' && ctype[16] != ' '))
		return answer_error(conn, MHD_HTTP_BAD_REQUEST, "Content-Type must be application/json");
	if (!json_string(req->body, is_call ? "to" : "dst", dst, sizeof(dst)) || dst[0] == '\0')
		return answer_error(conn, MHD_HTTP_BAD_REQUEST, is_call ? "to is required" : "dst is required");
	if (over_limit(req->arrival_us) && enforce_limit)
		return answer_error(conn, 429, "too many requests");

	make_uuid(id);
	if (is_call)
	{
		char		u[40];

		atomic_fetch_add(&n_calls, 1);
		record(req->arrival_us, 'c', dst);
		make_uuid(u);
		json = malloc(256);
		snprintf(json, 256, "{\"api_id\": \"%s\", \"message\": \"call fired\", \"request_uuid\": \"%s\"}",
				 id, u);
		return answer(conn, MHD_HTTP_CREATED, json);
	}
	else
	{
		/* One message and UUID per destination (dst "a<b<c"). */
		size_t		cap = 256;
		size_t		len;
		char	   *d = dst;

		json = malloc(cap);
		len = snprintf(json, cap, "{\"api_id\": \"%s\", \"message\": \"message(s) queued\", \"message_uuid\": [", id);
		for (;;)
		{
			char	   *end = strchr(d, '<');
			char		u[40];

			if (end)
				*end = '\0';
			atomic_fetch_add(&n_messages, 1);
			record(req->arrival_us, 'm', d);
			make_uuid(u);
			if (len + 64 > cap)
				json = realloc(json, cap *= 2);
			len += snprintf(json + len, cap - len, "%s\"%s\"", d == dst ? "" : ", ", u);
			if (!end)
				break;
			d = end + 1;
		}
		snprintf(json + len, cap - len, "]}");
		return answer(conn, MHD_HTTP_ACCEPTED, json);
	}
}

static enum MHD_Result
control(struct MHD_Connection *conn, const char *url, const char *method)
{
	char	   *json;

	if (strcmp(url, "/_stats") == 0 && strcmp(method, "GET") == 0)
	{
		json = malloc(512);
		snprintf(json, 512,
				 "{\"requests\": %ld, \"messages\": %ld, \"calls\": %ld, \"refused\": %ld, "
				 "\"over_limit\": %ld, \"inflight_max\": %ld, \"records\": %ld, \"delay_ms\": %d}",
				 atomic_load(&n_requests), atomic_load(&n_messages), atomic_load(&n_calls),
				 atomic_load(&n_refused), atomic_load(&n_over_limit), atomic_load(&inflight_max),
				 atomic_load(&nrecords) < max_records ? atomic_load(&nrecords) : max_records,
				 delay_ms);
		return answer(conn, MHD_HTTP_OK, json);
	}
	if (strcmp(url, "/_records") == 0 && strcmp(method, "GET") == 0)
	{
		long		n = atomic_load(&nrecords);
		size_t		cap, len = 0;
		struct MHD_Response *resp;
		enum MHD_Result ret;

		if (n > max_records)
			n = max_records;
		cap = (size_t) n * (MAX_DST + 24) + 1;
		json = malloc(cap);
		json[0] = '\0';
		for (long i = 0; i < n; i++)
			len += snprintf(json + len, cap - len, "%lld %c %s\n",
							(long long) records[i].arrival_us, records[i].kind, records[i].dst);
		resp = MHD_create_response_from_buffer(len, json, MHD_RESPMEM_MUST_FREE);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
		ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
		MHD_destroy_response(resp);
		return ret;
	}
	if (strcmp(url, "/_reset") == 0 && strcmp(method, "POST") == 0)
	{
		atomic_store(&nrecords, 0);
		atomic_store(&n_requests, 0);
		atomic_store(&n_messages, 0);
		atomic_store(&n_calls, 0);
		atomic_store(&n_refused, 0);
		atomic_store(&n_over_limit, 0);
		atomic_store(&inflight_max, atomic_load(&inflight));
		json = strdup("{\"reset\": true}");
		return answer(conn, MHD_HTTP_OK, json);
	}
	json = strdup("{\"error\": \"not found\"}");
	return answer(conn, MHD_HTTP_NOT_FOUND, json);
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
	   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	Request    *req = *con_cls;

	if (req == NULL)
	{
		long		now, max;

		req = malloc(sizeof(Request));
		req->arrival_us = now_us();
		req->len = 0;
		req->suspended = 0;
		req->conn = conn;
		*con_cls = req;
		now = atomic_fetch_add(&inflight, 1) + 1;
		max = atomic_load(&inflight_max);
		while (now > max && !atomic_compare_exchange_weak(&inflight_max, &max, now))
			;
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		size_t		n = *upload_data_size;

		if (req->len + n > MAX_BODY)
			n = MAX_BODY - req->len;
		memcpy(req->body + req->len, upload_data, n);
		req->len += n;
		*upload_data_size = 0;
		return MHD_YES;
	}
	req->body[req->len] = '\0';
	if (strncmp(url, "/_", 2) == 0)
		return control(conn, url, method);
	if (req->suspended == 0)
	{
		atomic_fetch_add(&n_requests, 1);
		if (delay_ms > 0)
		{
			req->suspended = 1;
			req->due_us = req->arrival_us + (int64_t) delay_ms * 1000;
			req->next = NULL;
			pthread_mutex_lock(&timer_lock);
			MHD_suspend_connection(conn);
			if (timer_tail)
				timer_tail->next = req;
			else
				timer_head = req;
			timer_tail = req;
			pthread_cond_signal(&timer_cond);
			pthread_mutex_unlock(&timer_lock);
			return MHD_YES;
		}
	}
	if (strcmp(method, "POST") != 0)
		return answer_error(conn, MHD_HTTP_NOT_FOUND, "not found");
	return plivo(conn, url, req);
}

static void
completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	if (*con_cls)
	{
		free(*con_cls);
		*con_cls = NULL;
		atomic_fetch_sub(&inflight, 1);
	}
}

/*
 * Every accepted connection gets TCP_NODELAY: an answer must never wait for
 * the client's delayed ACK (Nagle), which would add ~40 ms to a keep-alive
 * exchange and make the target, not the dispatcher, the bottleneck.
 */
static void
connection_started(void *cls, struct MHD_Connection *conn, void **socket_context,
				   enum MHD_ConnectionNotificationCode toe)
{
	const union MHD_ConnectionInfo *info;
	int			one = 1;

	if (toe != MHD_CONNECTION_NOTIFY_STARTED)
		return;
	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (info)
		setsockopt(info->connect_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Resume each delayed request when its time has come. */
static void *
timer_main(void *arg)
{
	pthread_mutex_lock(&timer_lock);
	for (;;)
	{
		Request    *req = timer_head;
		int64_t		now;

		if (req == NULL)
		{
			pthread_cond_wait(&timer_cond, &timer_lock);
			continue;
		}
		now = now_us();
		if (req->due_us > now)
		{
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += (req->due_us - now) * 1000;
			ts.tv_sec += ts.tv_nsec / 1000000000;
			ts.tv_nsec %= 1000000000;
			pthread_cond_timedwait(&timer_cond, &timer_lock, &ts);
			continue;
		}
		timer_head = req->next;
		if (timer_head == NULL)
			timer_tail = NULL;
		req->suspended = 2;
		MHD_resume_connection(req->conn);
	}
	return NULL;
}

static void
usage(void)
{
	fprintf(stderr, "usage: fast_plivo --port N [--port-file F] --auth-id ID --auth-token-file F "
			"[--delay-ms D] [--threads T] [--limit-rps R] [--enforce-limit] [--max-records N]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	int			port = -1, threads = 2;
	const char *port_file = NULL, *token_file = NULL;
	char		token[512], creds[1024];
	FILE	   *f;
	int			fd;
	struct sockaddr_in addr;
	socklen_t	alen = sizeof(addr);
	struct MHD_Daemon *daemon;
	pthread_t	timer;
	sigset_t	sigs;
	int			sig;

	for (int i = 1; i < argc; i++)
	{
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--enforce-limit") == 0)
		{
			enforce_limit = 1;
			continue;
		}
		if (v == NULL)
			usage();
		i++;
		if (strcmp(a, "--port") == 0)
			port = atoi(v);
		else if (strcmp(a, "--port-file") == 0)
			port_file = v;
		else if (strcmp(a, "--auth-id") == 0)
			auth_id = v;
		else if (strcmp(a, "--auth-token-file") == 0)
			token_file = v;
		else if (strcmp(a, "--delay-ms") == 0)
			delay_ms = atoi(v);
		else if (strcmp(a, "--threads") == 0)
			threads = atoi(v);
		else if (strcmp(a, "--limit-rps") == 0)
			limit_rps = atol(v);
		else if (strcmp(a, "--max-records") == 0)
			max_records = atol(v);
		else
			usage();
	}
	if (port < 0 || auth_id == NULL || token_file == NULL || threads < 1)
		usage();
	if ((f = fopen(token_file, "r")) == NULL || fgets(token, sizeof(token), f) == NULL)
	{
		fprintf(stderr, "fast_plivo: cannot read %s\n", token_file);
		return 1;
	}
	fclose(f);
	token[strcspn(token, "\r\n")] = '\0';
	snprintf(creds, sizeof(creds), "%s:%s", auth_id, token);
	strcpy(expected_auth, "Basic ");
	base64((const unsigned char *) creds, strlen(creds), expected_auth + 6);

	records = calloc(max_records, sizeof(Record));
	if ((fd = open("/dev/urandom", O_RDONLY)) < 0 || read(fd, &uuid_prefix, sizeof(uuid_prefix)) != sizeof(uuid_prefix))
		return 1;
	close(fd);

	/* Signals go to the waiting main thread only. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	fd = socket(AF_INET, SOCK_STREAM, 0);
	{
		int			one = 1;

		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	}
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons(port);
	if (bind(fd, (struct sockaddr *) &addr, sizeof(addr)) != 0 || listen(fd, 4096) != 0 ||
		getsockname(fd, (struct sockaddr *) &addr, &alen) != 0)
	{
		fprintf(stderr, "fast_plivo: cannot listen on port %d: %s\n", port, strerror(errno));
		return 1;
	}

	pthread_create(&timer, NULL, timer_main, NULL);
	daemon = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME,
							  0, NULL, NULL, handle, NULL,
							  MHD_OPTION_LISTEN_SOCKET, (MHD_socket) fd,
							  MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) threads,
							  MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 10000,
							  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 120,
							  MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
							  MHD_OPTION_NOTIFY_CONNECTION, connection_started, NULL,
							  MHD_OPTION_END);
	if (daemon == NULL)
	{
		fprintf(stderr, "fast_plivo: cannot start libmicrohttpd\n");
		return 1;
	}
	if (port_file)
	{
		char		tmp[4096];

		snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
		if ((f = fopen(tmp, "w")) == NULL)
			return 1;
		fprintf(f, "%d\n", ntohs(addr.sin_port));
		fclose(f);
		rename(tmp, port_file);
	}
	fprintf(stderr, "fast_plivo: listening on 127.0.0.1:%d, %d threads, delay %d ms\n",
			ntohs(addr.sin_port), threads, delay_ms);
	sigwait(&sigs, &sig);
	MHD_stop_daemon(daemon);
	return 0;
}
