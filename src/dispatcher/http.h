/*-------------------------------------------------------------------------
 *
 * http_multi.h
 *	  Concurrent HTTP requests with libcurl's multi interface, driven from
 *	  a worker's own wait loop through one epoll descriptor.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_HTTP_MULTI_H
#define PLIVO_OTP_HTTP_MULTI_H

#include <curl/curl.h>

#define HTTP_MAX_RESPONSE 65536

/* One request; the caller owns it until plivo_otp_http_next_done returns it. */
typedef struct HttpTransfer
{
	CURL	   *easy;
	struct curl_slist *headers;
	void	   *owner;			/* the caller's data about this request */
	char	   *request_body;	/* palloc'd; wiped when the transfer is freed */
	size_t		request_len;
	size_t		request_off;	/* how much of it libcurl has read */
	struct HttpTransfer *next;	/* list of running transfers */
	struct HttpTransfer *prev;

	/* Filled while the transfer runs (malloc'd, never palloc'd: libcurl callbacks). */
	char	   *response;
	size_t		response_len;
	bool		response_truncated;
	long		retry_after;	/* seconds from a Retry-After header, or -1 */
	char		errbuf[CURL_ERROR_SIZE];

	/* Filled when done. */
	CURLcode	result;
	long		http_status;	/* 0 if no response */
	bool		request_sent;	/* did any byte of the request leave? */
} HttpTransfer;

extern void plivo_otp_http_init(void);
extern int	plivo_otp_http_epoll_fd(void);
extern long plivo_otp_http_timeout_ms(void);
extern void plivo_otp_http_start(HttpTransfer *transfer);
extern void plivo_otp_http_drive(bool socket_ready);
extern HttpTransfer *plivo_otp_http_next_done(void);
extern void plivo_otp_http_abort_all(void (*each) (HttpTransfer *transfer));
extern int	plivo_otp_http_inflight(void);
extern void plivo_otp_http_free(HttpTransfer *transfer);

#endif							/* PLIVO_OTP_HTTP_MULTI_H */
