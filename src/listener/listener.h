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
 *	  delivery.c		callbacks become delivery events and states (a batch
 *						in three statements)
 *	  voice_answer.c	a call's answer URL: its script, once, or a hang-up
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_LISTENER_H
#define PLIVO_OTP_LISTENER_H

#include <microhttpd.h>

#include "plivo_otp.h"

#define LISTENER_MAX_PARAMS 128

/* What a path serves. */
typedef enum ListenerRouteKind
{
	ROUTE_SMS_STATUS,			/* message-status callbacks */
	ROUTE_VOICE_ANSWER,			/* a call's answer URL: Plivo XML */
	ROUTE_VOICE_STATUS			/* call hang-up callbacks */
} ListenerRouteKind;

/*
 * A call whose UUID the dispatcher has not recorded yet (its row still
 * 'sending') has its answer held this long, re-checked every
 * VOICE_RETRY_MS, before it gets the no-code answer.
 */
#define VOICE_HOLD_MS		3000
#define VOICE_RETRY_MS		200

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
	const char *text;			/* its body (a static string, or script) */
	const char *content_type;	/* its Content-Type, or NULL for plain text */
	char	   *script;			/* a call's script (malloc'd, wiped when freed), or NULL */
	bool		hold;			/* voice answer: decide again in VOICE_RETRY_MS */
	int64		arrived_ms;		/* when it was first suspended (monotonic clock) */
	PlivoParam	params[LISTENER_MAX_PARAMS];
	int			nparams;
	char	   *storage;		/* the params' strings */
	char	   *nonce;
	char	   *other_nonce;	/* V2's, when V3 verified and V2 came too */
	bool		body_signed;	/* V3 verified (V2 does not cover the body) */
	bool		batched;		/* decided by its batch's statements (listener.c) */
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
extern int	plivo_otp_server_ready_count(void);
extern bool plivo_otp_server_wait_us(long timeout_us);
extern void plivo_otp_server_decide(CallbackRequest *req, unsigned int status,
									const char *text);
extern void plivo_otp_server_decide_no_code(CallbackRequest *req);
extern void plivo_otp_server_decide_failed(CallbackRequest *req, unsigned int status,
										   const char *text);
extern bool plivo_otp_server_decide_script(CallbackRequest *req, const char *xml);
extern void plivo_otp_server_undecide_script(CallbackRequest *req);
extern void plivo_otp_server_resume(CallbackRequest *req);
extern void plivo_otp_server_hold(CallbackRequest *req);
extern bool plivo_otp_server_hold_over(const CallbackRequest *req);

/* ---- delivery.c (in the listener's transaction, SPI connected) ---- */
typedef struct PlivoBatchItem
{
	const PlivoParam *params;
	int			nparams;
	const char *nonce;
	const char *other_nonce;	/* or NULL */
	bool		body_signed;
	bool		done;			/* out: recorded (or refused) by the batch */
	PlivoIngestResult result;	/* out, when done */
} PlivoBatchItem;

extern void plivo_otp_ingest_batch(PlivoBatchItem *items, int n);

/* ---- voice_answer.c (in the listener's transaction, SPI connected) ---- */
typedef enum PlivoVoiceAnswer
{
	PLIVO_VOICE_SCRIPT,			/* *xml is the call's script; body wiped */
	PLIVO_VOICE_NO_CODE,		/* the no-code answer (only the nonce recorded) */
	PLIVO_VOICE_WAIT			/* the call's UUID may be recorded soon: ask again */
} PlivoVoiceAnswer;

extern PlivoVoiceAnswer plivo_otp_voice_answer(const PlivoParam *params, int nparams,
											   const char *nonce, const char *other_nonce,
											   const char *token, bool last_try,
											   char **xml);

/* ---- connections.c (plain C: runs in libmicrohttpd's callbacks) ---- */
extern void plivo_otp_connection_notify(void *cls, struct MHD_Connection *conn,
										void **socket_context,
										enum MHD_ConnectionNotificationCode toe);
extern void plivo_otp_connection_request_arrived(struct MHD_Connection *conn);
extern void plivo_otp_connection_request_over(struct MHD_Connection *conn);
extern int	plivo_otp_connections_enforce(long *next_ms);
extern int64 plivo_otp_listener_now_ms(void);
extern int64 plivo_otp_listener_now_us(void);
extern int	plivo_otp_connections_open(void);

#endif							/* PLIVO_OTP_LISTENER_H */
