/*-------------------------------------------------------------------------
 *
 * plivo_api.h
 *	  Plivo's REST API as the dispatcher speaks it: the Send Message request
 *	  and its response.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_PLIVO_API_H
#define PLIVO_OTP_PLIVO_API_H

#include "dispatcher/http.h"

/* What a request needs besides the message; loaded at start and on SIGHUP. */
typedef struct PlivoConfig
{
	char	   *auth_id;
	char	   *auth_token;
	char	   *api_url;
	bool		api_url_loopback;	/* plain http allowed */
	char	   *sender;
	char	   *callback_url;	/* NULL when plivo_otp.public_url is empty */
	char	   *message_log;
	int			request_timeout_ms;
} PlivoConfig;

/* Plivo accepts message_expiry from 5 to 10799 seconds. */
#define PLIVO_MIN_MESSAGE_EXPIRY 5
#define PLIVO_MAX_MESSAGE_EXPIRY 10799

extern HttpTransfer *plivo_otp_message_request(const PlivoConfig *config, const char *e164,
											   const char *text, int expiry_seconds);
extern bool plivo_otp_parse_send_response(const char *body, char **message_uuid,
										  char **error);
extern char *plivo_otp_sanitize_error(const char *text);

#endif							/* PLIVO_OTP_PLIVO_API_H */
