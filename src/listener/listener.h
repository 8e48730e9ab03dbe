/*-------------------------------------------------------------------------
 *
 * listener.h
 *	  What the files of the webhook listener share; private to
 *	  src/listener/.
 *
 *	  listener.c		the worker's loop, its settings, recording callbacks
 *	  server.c			the HTTP server (libmicrohttpd) and its routes
 *	  connections.c		each request's deadline, room under a flood
 *	  callback_auth.c	which signature a callback must carry (plain C)
 *	  delivery.c		callbacks become delivery events and states
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_LISTENER_H
#define PLIVO_OTP_LISTENER_H

#include <microhttpd.h>

#include "plivo_otp.h"

#define LISTENER_MAX_PARAMS 128

/* What a path serves.  Voice answer and call-status routes join this list. */
typedef enum ListenerRouteKind
{
	ROUTE_SMS_STATUS
} ListenerRouteKind;

typedef struct ListenerRoute
{
	const char *path;
	ListenerRouteKind kind;
	bool		per_message;	/* path + "/" + a message's token is served too */
} ListenerRoute;

/*
 * One request, from its first byte to its answer; malloc'd by server.c,
 * which frees it when libmicrohttpd says the request is over.
 */
typedef struct CallbackRequest
{
	struct MHD_Connection *conn;
	const ListenerRoute *route;
	char		token[PLIVO_OTP_TOKEN_LEN + 1];	/* the message the path names, or "" */
	const char *method;			/* "GET" or "POST" */
	char	   *body;
	size_t		body_len;
	unsigned int status;		/* the answer, once decided */
	const char *text;			/* its body (a static string) */
	PlivoParam	params[LISTENER_MAX_PARAMS];
	int			nparams;
	char	   *storage;		/* the params' strings */
	char	   *nonce;
	char	   *other_nonce;	/* V2's, when V3 verified and V2 came too */
	bool		body_signed;	/* V3 verified (V2 does not cover the body) */
	struct CallbackRequest *next_ready;
} CallbackRequest;

/* The listener's settings, read at start and on SIGHUP (listener.c). */
typedef struct ListenerConfig
{
	bool		configured;
	char	   *auth_token;
	char	   *public_base;	/* plivo_otp.public_url without trailing slashes */
} ListenerConfig;

extern ListenerConfig plivo_otp_listener_config;

/* ---- server.c ---- */
extern bool plivo_otp_server_start(char *why, size_t whylen, int *err);
extern void plivo_otp_server_stop(void);
extern int	plivo_otp_server_epoll_fd(void);
extern void plivo_otp_server_run(void);
extern long plivo_otp_server_timeout_ms(void);
extern const char *plivo_otp_server_first_path(void);
extern CallbackRequest *plivo_otp_server_take_ready(void);
extern void plivo_otp_server_decide(CallbackRequest *req, unsigned int status,
									const char *text);
extern void plivo_otp_server_resume(CallbackRequest *req);

/* ---- connections.c (plain C: runs in libmicrohttpd's callbacks) ---- */
extern void plivo_otp_connection_notify(void *cls, struct MHD_Connection *conn,
										void **socket_context,
										enum MHD_ConnectionNotificationCode toe);
extern void plivo_otp_connection_request_arrived(struct MHD_Connection *conn);
extern void plivo_otp_connection_request_over(struct MHD_Connection *conn);
extern int	plivo_otp_connections_enforce(long *next_ms);

#endif							/* PLIVO_OTP_LISTENER_H */
