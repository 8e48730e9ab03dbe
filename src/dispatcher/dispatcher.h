/*-------------------------------------------------------------------------
 *
 * dispatcher.h
 *	  What the files of the dispatcher worker share; private to
 *	  src/dispatcher/.
 *
 *	  dispatcher.c	the worker's loop, as named steps
 *	  queue.c		the statements on the outbound queue
 *	  outcome.c		what a finished request means, and recording it
 *	  rate_limit.c	the rate limits (bucket and window) of max_requests_per_second and
 *					max_calls_per_second
 *	  inflight_window.c	how many requests wait on Plivo at once (max_inflight,
 *					fewer while Plivo does not answer)
 *	  retention.c	purging old rows, redacting numbers
 *	  expiry.c		marking codes past their expiry 'expired'
 *	  fallback.c	the voice fallback: a call for a code whose SMS did not arrive
 *	  http.c		concurrent requests with libcurl's multi interface
 *	  plivo_rest.c	Plivo's REST API: the requests
 *	  plivo_response.c	Plivo's answers: message and call UUIDs, errors
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_DISPATCHER_H
#define PLIVO_OTP_DISPATCHER_H

#include <curl/curl.h>

#include "plivo_otp.h"

/* ---- http.c ---- */

#define HTTP_MAX_RESPONSE 65536

/* One request; the caller owns it until plivo_otp_http_next_done returns it. */
typedef struct HttpTransfer
{
	CURL	   *easy;
	struct curl_slist *headers;
	void	   *owner;			/* the caller's data about this request */
	int			kind;			/* the caller's kind of request (PlivoOtpRateKind) */
	char	   *request_body;	/* palloc'd; wiped when the transfer is freed */
	int			attempts;		/* connections libcurl was about to send it on */
	struct HttpTransfer *next;	/* list of running transfers */
	struct HttpTransfer *prev;

	/* Filled while the transfer runs (malloc'd, never palloc'd: libcurl callbacks). */
	char	   *response;		/* at most HTTP_MAX_RESPONSE bytes of it */
	size_t		response_len;
	long		retry_after;	/* seconds from a Retry-After header, or -1 */
	char		errbuf[CURL_ERROR_SIZE];

	/* Filled when done. */
	CURLcode	result;
	long		http_status;	/* 0 if no response */
	bool		request_sent;	/* did any byte of the request (may have) left? */
	bool		completed;		/* libcurl finished it (CURLE_OK): its handle is reusable */
	TimestampTz started_at;		/* when it was handed to libcurl */
} HttpTransfer;

extern void plivo_otp_http_init(void);
extern void plivo_otp_http_configure(int max_inflight);
extern CURL *plivo_otp_http_easy(void);
extern int	plivo_otp_http_epoll_fd(void);
extern long plivo_otp_http_timeout_ms(void);
extern bool plivo_otp_http_start(HttpTransfer *transfer);
extern void plivo_otp_http_drive(bool socket_ready);
extern HttpTransfer *plivo_otp_http_next_done(void);
extern void plivo_otp_http_abort_all(void (*each) (HttpTransfer *transfer));
extern int	plivo_otp_http_inflight(void);
extern int	plivo_otp_http_inflight_of(int kind);
extern void plivo_otp_http_free(HttpTransfer *transfer);

/* ---- plivo_rest.c ---- */

/* What a request needs besides the message; loaded at start and on SIGHUP. */
typedef struct PlivoConfig
{
	char	   *auth_id;
	char	   *auth_token;
	char	   *api_url;		/* without trailing slashes */
	bool		api_url_loopback;	/* plain http allowed */
	char	   *sender;			/* for rows queued without one */
	char	   *callback_url;	/* the status route (a message's URL is it + "/" +
								 * the message id); NULL when public_url is empty */
	char	   *message_log;
	int			request_timeout_ms;
	/* Calls: without public_base, or a caller ID (the row's or caller_id), a voice row is refused. */
	char	   *public_base;	/* public_url without trailing slashes */
	char	   *caller_id;		/* plivo_otp_voice_caller_id(), for rows queued without one */
	int			ring_timeout;	/* seconds */
	int			call_time_limit;	/* seconds */
	bool		machine_detection;
} PlivoConfig;

/* Plivo accepts message_expiry from 5 to 10799 seconds. */
#define PLIVO_MIN_MESSAGE_EXPIRY 5
#define PLIVO_MAX_MESSAGE_EXPIRY 10799
/* A call is placed only for a code with plivo_otp_min_call_life() seconds left. */

extern HttpTransfer *plivo_otp_message_request(const PlivoConfig *config, const pg_uuid_t *id,
											   const char *e164, const char *sender,
											   const char *text, int expiry_seconds);
extern HttpTransfer *plivo_otp_call_request(const PlivoConfig *config, const pg_uuid_t *id,
											const char *e164, const char *caller_id);

/* ---- plivo_response.c ---- */
extern bool plivo_otp_parse_send_response(const char *body, char **uuid,
										  char **error);

/* ---- queue.c ---- */

/* A sealed body larger than this is no SMS: the claim does not even fetch it. */
#define QUEUE_MAX_BODY 8192

/*
 * A row the claim marked 'sending', as the table holds it (any value its
 * constraints allow).  body is NULL when the row had none, or one larger
 * than QUEUE_MAX_BODY (body_too_large); expires_at is the earlier of the
 * message's and its code's.
 */
typedef struct ClaimedMessage
{
	pg_uuid_t	id;
	char	   *phone;
	bytea	   *body;
	bool		body_too_large;
	bool		voice;			/* a call, not an SMS */
	char	   *sender;			/* recorded when queued (common/senders.c), or NULL */
	TimestampTz expires_at;
	int			tries;
} ClaimedMessage;

/* A finished request's result, waiting to be recorded. */
typedef struct Outcome
{
	pg_uuid_t	id;
	PlivoOtpDispatchState state;	/* accepted, refused, pending, expired, unknown */
	char	   *provider_uuid;
	int			http_status;	/* 0 for none */
	char	   *error;
	TimestampTz next_try_at;	/* for pending */
	bool		recorded;		/* by the open unit of work (outcome.c) */
} Outcome;

/* A position in a kind's claim order (next_try_at, id); not set: the beginning. */
typedef struct QueueKey
{
	bool		set;
	TimestampTz next_try_at;
	pg_uuid_t	id;
} QueueKey;

extern int	plivo_otp_queue_claim(TimestampTz now, const int *limits, int room,
								  const QueueKey *from, QueueKey *last, int *claimed,
								  ClaimedMessage **rows);
extern void plivo_otp_queue_earliest_due(TimestampTz after, TimestampTz *due);
extern void plivo_otp_queue_record(const Outcome *outcome, TimestampTz now);
extern void plivo_otp_queue_record_batch(Outcome *const *outcomes, int n, TimestampTz now,
										 bool *waiting);
extern void plivo_otp_queue_record_failure(const pg_uuid_t *id, const char *why,
										   TimestampTz now);
extern int	plivo_otp_queue_expire_unsendable(TimestampTz now);
extern void plivo_otp_queue_cancel_orphaned(TimestampTz now);
extern int	plivo_otp_queue_wipe_expired_codes(TimestampTz now);
extern void plivo_otp_queue_wipe_locked_codes(void);
extern int	plivo_otp_queue_wipe_call_bodies(TimestampTz now);
extern void plivo_otp_queue_find_stale(MemoryContext context);
extern int	plivo_otp_queue_stale_left(void);
extern void plivo_otp_queue_forget_stale(const pg_uuid_t *id);
extern int	plivo_otp_queue_recover_stale(TimestampTz now);

/* ---- outcome.c ---- */

/* A message in flight: what judging its outcome needs (the transfer's owner). */
typedef struct InflightMessage
{
	pg_uuid_t	id;
	TimestampTz expires_at;
	int			tries;
	bool		voice;			/* a call, not an SMS */
	char	   *masked_phone;
} InflightMessage;

extern void plivo_otp_outcomes_init(MemoryContext parent);
extern void plivo_otp_add_outcome(const pg_uuid_t *id, PlivoOtpDispatchState state,
								  const char *provider_uuid, int http_status,
								  const char *error, TimestampTz next_try_at);
extern void plivo_otp_judge_transfer(HttpTransfer *transfer);
extern void plivo_otp_outcomes_after_error(void);
extern void plivo_otp_abandon_transfer(HttpTransfer *transfer);
extern void plivo_otp_free_transfer(HttpTransfer *transfer);
extern int	plivo_otp_outcomes_waiting(void);
extern TimestampTz plivo_otp_outcomes_waiting_since(void);
extern void plivo_otp_outcomes_truncate(int n);
extern bool plivo_otp_record_outcomes(TimestampTz *next_due);
extern void plivo_otp_record_outcomes_here(TimestampTz *next_due);
extern void plivo_otp_outcomes_settle(bool committed);

/* ---- rate_limit.c ---- */

/* The kinds of request, each with a bucket of its own; also indexes claim limits. */
typedef enum PlivoOtpRateKind
{
	PLIVO_OTP_RATE_MESSAGES,
	PLIVO_OTP_RATE_CALLS,
	PLIVO_OTP_NUM_RATES
} PlivoOtpRateKind;

#define PLIVO_OTP_RATE_OF(voice) ((voice) ? PLIVO_OTP_RATE_CALLS : PLIVO_OTP_RATE_MESSAGES)

extern void plivo_otp_rate_reset(TimestampTz now);
extern int	plivo_otp_rate_available(PlivoOtpRateKind kind, TimestampTz now);
extern void plivo_otp_rate_take(PlivoOtpRateKind kind, TimestampTz now);
extern long plivo_otp_rate_wait_ms(PlivoOtpRateKind kind, TimestampTz now);

/* ---- inflight_window.c ---- */

/* What a finished request says about Plivo's health. */
typedef enum PlivoOtpAnswerKind
{
	PLIVO_OTP_ANSWERED,			/* 2xx, 4xx: Plivo answers */
	PLIVO_OTP_OVERLOADED,		/* 429, 5xx */
	PLIVO_OTP_NO_ANSWER			/* timeout, connection refused or dropped */
} PlivoOtpAnswerKind;

extern void plivo_otp_window_configure(int max_inflight);
extern int	plivo_otp_window(void);
extern void plivo_otp_window_note(PlivoOtpAnswerKind answer, TimestampTz started_at);

/* ---- retention.c ---- */
extern bool plivo_otp_purge_old_rows(int budget_ms);

/* ---- expiry.c ---- */
extern void plivo_otp_mark_expired_codes(void);

/* ---- fallback.c ---- */
extern void plivo_otp_queue_voice_fallbacks(TimestampTz now);

#endif							/* PLIVO_OTP_DISPATCHER_H */
