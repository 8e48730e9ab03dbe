/*-------------------------------------------------------------------------
 *
 * plivo_rest.c
 *	  Plivo's REST API as the dispatcher speaks it: the Send Message and
 *	  Make Call requests (their answers are read by plivo_response.c).
 *
 * Both are POSTs with HTTP Basic auth (Auth ID, Auth Token) and a JSON
 * body; https is required unless the API URL is a loopback address (tests
 * and local stand-ins; see common/url.c).  Errors carry {"error": "..."}.
 *
 * POST {api_url}/v1/Account/{auth_id}/Message/: src (or powerpack_uuid),
 * dst without the '+', text, type, url/method for status callbacks, log,
 * message_expiry.  A 2xx answer carries {"message_uuid": ["..."]}.
 *
 * POST {api_url}/v1/Account/{auth_id}/Call/: the fields and defaults that
 * Plivo's Python SDK (Calls.create) sends: from and to without the '+',
 * answer_url {public_url}/plivo/voice-answer/{answer token} (the message
 * id never appears in it, crypto/answer_token.c), hangup_url
 * {public_url}/plivo/voice-status/{message id}, their methods (POST),
 * ring_method, fallback_method, ring_timeout, time_limit,
 * machine_detection "hangup" (left out when the setting is off) and the
 * SDK's machine_detection_time/_method and error_if_parent_not_found.  A
 * 201 answer carries {"request_uuid": "..."}.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/json.h"

#include "dispatcher.h"

#define USER_AGENT "plivo_otp/" PLIVO_OTP_VERSION " (PostgreSQL " PG_MAJORVERSION ")"


static void
append_json_field(StringInfo buf, const char *name, const char *value)
{
	if (buf->len > 1)
		appendStringInfoChar(buf, ',');
	escape_json(buf, name);
	appendStringInfoChar(buf, ':');
	escape_json(buf, value);
}

/*
 * libcurl sends the body from memory (CURLOPT_POSTFIELDS: headers and body
 * leave in one write), and is never allowed to send it twice.  Connections
 * are reused (keep-alive, HTTP/2 streams), and libcurl retries a request by
 * itself on a fresh connection when a reused one dies before any answer
 * (the far end closed it while idle, or an HTTP/2 server refused the
 * stream or sent GOAWAY).  Whether the first attempt reached Plivo is
 * exactly what nobody can know there: a server may close a connection
 * after taking a request and before answering.  Every attempt passes
 * through this pre-request callback once its connection is ready and
 * before any byte of the request is written; the second one is refused,
 * so libcurl fails the transfer instead of sending it again, and the
 * dispatcher judges it as sent without an answer ('unknown', never
 * re-sent).  A request of which nothing left (a refused connection) is
 * pending again.  That keeps delivery at most once, at the price of an
 * occasional 'unknown' on a connection that went stale;
 * CURLOPT_MAXAGE_CONN below keeps those rare.  (Until 0.2.0 the body came
 * through a read callback without a seek callback, which libcurl could not
 * rewind for its retry: the same guarantee, but headers and body left in
 * two writes, each a packet for the server to wake up for.)
 */
static int
refuse_second_attempt(void *userp, char *conn_primary_ip, char *conn_local_ip,
					  int conn_primary_port, int conn_local_port)
{
	HttpTransfer *t = (HttpTransfer *) userp;

	if (++t->attempts > 1)
	{
		t->request_sent = true; /* (the attempt before may have reached Plivo) */
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}

/*
 * A ready-to-start POST of a JSON body (palloc'd; the transfer owns it from
 * here and wipes it when freed) to path under the API URL, authenticated as
 * the account.  The Message and Call APIs use it.  If libcurl
 * cannot be set up, what was allocated is freed before the ERROR.
 */
static HttpTransfer *
post_json(const PlivoConfig *config, const char *path, StringInfo body)
{
	HttpTransfer *t = palloc0(sizeof(HttpTransfer));
	char	   *url = psprintf("%s/v1/Account/%s/%s", config->api_url, config->auth_id, path);
	bool		ok;

	t->request_body = body->data;
	t->attempts = 0;

	/* From here to the end nothing may raise an ERROR: libcurl's memory is malloc'd. */
	t->headers = curl_slist_append(NULL, "Content-Type: application/json");
	t->headers = t->headers ? curl_slist_append(t->headers, "Accept: application/json") : NULL;
	t->headers = t->headers ? curl_slist_append(t->headers, "Expect:") : NULL;
	t->easy = plivo_otp_http_easy();

	ok = t->easy != NULL && t->headers != NULL &&
		curl_easy_setopt(t->easy, CURLOPT_URL, url) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR,
						 config->api_url_loopback ? "http,https" : "https") == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_USERNAME, config->auth_id) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_PASSWORD, config->auth_token) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_USERAGENT, USER_AGENT) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_POST, 1L) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body->len) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->request_body) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_PREREQFUNCTION, refuse_second_attempt) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_PREREQDATA, t) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, (long) config->request_timeout_ms) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS,
						 (long) Min(config->request_timeout_ms, 5000)) == CURLE_OK &&
		/* Reuse only fresh connections: a stale one that the far end closed
		 * makes a request fail as 'unknown' (see refuse_second_attempt). */
		curl_easy_setopt(t->easy, CURLOPT_MAXAGE_CONN, 20L) == CURLE_OK &&
		/* HTTP/2 where the server offers it over TLS (HTTP/1.1 keep-alive otherwise).
		 * No CURLOPT_PIPEWAIT: with it a request waited for a busy HTTP/1.1
		 * connection (a slow answer) instead of opening another, so one slow
		 * answer held up every request after it (TAP 018_dispatcher_wakeup). */
		curl_easy_setopt(t->easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS) == CURLE_OK &&
		curl_easy_setopt(t->easy, CURLOPT_VERBOSE, 0L) == CURLE_OK;
	pfree(url);
	if (!ok)
	{
		plivo_otp_http_free(t);
		elog(ERROR, "plivo_otp: could not set up an HTTP request");
	}
	return t;
}

/*
 * A ready-to-start Send Message request for one SMS, the message id's,
 * from sender (a number, a sender ID or powerpack:<uuid>).
 */
HttpTransfer *
plivo_otp_message_request(const PlivoConfig *config, const pg_uuid_t *id,
						  const char *e164, const char *sender,
						  const char *text, int expiry_seconds)
{
	StringInfoData body;

	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	if (strncmp(sender, "powerpack:", 10) == 0)
		append_json_field(&body, "powerpack_uuid", sender + 10);
	else
		append_json_field(&body, "src", sender);
	append_json_field(&body, "dst", e164[0] == '+' ? e164 + 1 : e164);
	append_json_field(&body, "text", text);
	append_json_field(&body, "type", "sms");
	if (config->callback_url)
	{
		/* (The caller's context may be long-lived: free what is made here.) */
		char		token[PLIVO_OTP_TOKEN_LEN + 1];
		char	   *url;

		plivo_otp_format_uuid(id, token);
		url = psprintf("%s/%s", config->callback_url, token);
		append_json_field(&body, "url", url);
		append_json_field(&body, "method", "POST");
		pfree(url);
	}
	append_json_field(&body, "log", config->message_log);
	appendStringInfo(&body, ",\"message_expiry\":%d}", expiry_seconds);
	return post_json(config, "Message/", &body);
}

/*
 * A ready-to-start Make Call request for the call of message id (to e164,
 * from the number caller_id), as the config says; the caller checked that
 * it has a public URL.
 */
HttpTransfer *
plivo_otp_call_request(const PlivoConfig *config, const pg_uuid_t *id, const char *e164,
					   const char *caller_id)
{
	StringInfoData body;
	char		token[Max(PLIVO_OTP_ANSWER_TOKEN_LEN, PLIVO_OTP_TOKEN_LEN) + 1];
	char	   *url;

	Assert(config->public_base && caller_id);
	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	append_json_field(&body, "from", caller_id[0] == '+' ? caller_id + 1 : caller_id);
	append_json_field(&body, "to", e164[0] == '+' ? e164 + 1 : e164);

	/* (The caller's context may be long-lived: free what is made here.) */
	plivo_otp_answer_token(id, token);
	url = psprintf("%s/plivo/voice-answer/%s", config->public_base, token);
	explicit_bzero(token, sizeof(token));
	append_json_field(&body, "answer_url", url);
	explicit_bzero(url, strlen(url));
	pfree(url);
	append_json_field(&body, "answer_method", "POST");
	append_json_field(&body, "ring_method", "POST");

	plivo_otp_format_uuid(id, token);
	url = psprintf("%s/plivo/voice-status/%s", config->public_base, token);
	append_json_field(&body, "hangup_url", url);
	pfree(url);
	append_json_field(&body, "hangup_method", "POST");
	append_json_field(&body, "fallback_method", "POST");

	appendStringInfo(&body, ",\"time_limit\":%d", config->call_time_limit);
	if (config->machine_detection)
		append_json_field(&body, "machine_detection", "hangup");
	appendStringInfoString(&body, ",\"machine_detection_time\":5000");
	append_json_field(&body, "machine_detection_method", "POST");
	appendStringInfo(&body, ",\"ring_timeout\":%d", config->ring_timeout);
	appendStringInfoString(&body, ",\"error_if_parent_not_found\":false}");
	return post_json(config, "Call/", &body);
}
