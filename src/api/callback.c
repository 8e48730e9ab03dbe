/*-------------------------------------------------------------------------
 *
 * callback.c
 *	  SQL functions for Plivo's callbacks: ingest_callback() for
 *	  applications that receive the webhooks in their own web tier, and
 *	  plivo_otp_signature_valid() to check one signature.  The latter is not
 *	  shipped as SQL since 0.2.0 (it takes the auth token as an argument);
 *	  the regression tests bind it to run every published test vector.
 *
 * ingest_callback applies exactly the listener's rules
 * (listener/callback_auth.c, listener/delivery.c): the signature must
 * verify over the URL Plivo called, and the nonce must be new; V2 alone
 * counts only for the message that URL names ({public_url}/plivo/sms-status/
 * {message id}), and only while it is recent.  A call's hang-up callback
 * (RequestUUID, CallStatus, no MessageUUID) counts only with V3; on the
 * call's own hang-up URL ({public_url}/plivo/voice-status/{message id}) a
 * call left 'unknown' adopts its RequestUUID, as in the listener.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_ingest_callback_sql);
PG_FUNCTION_INFO_V1(plivo_otp_signature_valid);

#define MAX_CALLBACK_PARAMS 256

/* A flat JSON object of strings as params; anything else is 22023. */
static int
jsonb_to_params(Jsonb *object, const char *what, PlivoParam **out)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	PlivoParam *params = palloc0(sizeof(PlivoParam) * MAX_CALLBACK_PARAMS);
	int			n = 0;
	char	   *key = NULL;

	if (!JB_ROOT_IS_OBJECT(object))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", what),
				 errhint("Pass the request's fields as {\"name\": \"value\", ...}.")));
	it = JsonbIteratorInit(&object->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
		{
			if (v.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s must hold only string values", what),
						 errdetail("The value of \"%s\" is not a string.", key)));
			if (n == MAX_CALLBACK_PARAMS)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("%s has too many fields", what),
						 errdetail("At most %d fields are accepted.", MAX_CALLBACK_PARAMS)));
			params[n].key = key;
			params[n].value = pnstrdup(v.val.string.val, v.val.string.len);
			n++;
		}
	}
	*out = params;
	return n;
}

static const char *
method_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *method = text_to_cstring(PG_GETARG_TEXT_PP(argno));

	if (pg_strcasecmp(method, "GET") == 0)
		return "GET";
	if (pg_strcasecmp(method, "POST") == 0)
		return "POST";
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("method must be GET or POST"),
			 errhint("Pass the HTTP method of the callback request.")));
	return NULL;
}

static const char *
describe(PlivoSigResult result)
{
	switch (result)
	{
		case PLIVO_SIG_MISSING:
			return "The request carries no X-Plivo-Signature-V3 or -V2 header.";
		case PLIVO_SIG_MISMATCH:
			return "No signature matches the URL, parameters and nonce.";
		case PLIVO_SIG_MALFORMED:
			return "The URL or the nonce cannot be used to check a signature.";
		default:
			return "The signature could not be checked.";
	}
}

static Datum ingest(PG_FUNCTION_ARGS);

/*
 * The URL must be under plivo_otp.public_url, as the listener's always is:
 * a V2 signature covers only URL and nonce, so a V2-signed callback that the
 * same Plivo account sent to some other endpoint must not count here.
 * Returns the message token the URL's path names (as the listener routes
 * it: callback_auth.c), or NULL.
 */
static char *
require_under_public_url(const char *url)
{
	char	   *token = palloc(PLIVO_OTP_TOKEN_LEN + 1);
	const char *path;
	char	   *base = plivo_otp_base_url(plivo_otp_public_url);
	size_t		len = strlen(base);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("plivo_otp.public_url is not set"),
				 errhint("Set it to the base URL that Plivo calls back (the one the dispatcher puts in each message).")));
	if (strncmp(url, base, len) != 0 || (url[len] != '\0' && url[len] != '/' && url[len] != '?'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("callback URL is not under plivo_otp.public_url"),
				 errdetail("Only callbacks to %s are accepted.", base),
				 errhint("Pass the URL exactly as Plivo called it.")));
	path = url + len;
	if ((plivo_otp_route_token(path, strcspn(path, "?#"), PLIVO_OTP_SMS_STATUS_PATH, token) ||
		 plivo_otp_route_token(path, strcspn(path, "?#"), PLIVO_OTP_VOICE_STATUS_PATH, token)) &&
		token[0] != '\0')
		return token;
	return NULL;
}

/* The statement carries the callback's numbers: errors hide it (api_args.c). */
Datum
plivo_otp_ingest_callback_sql(PG_FUNCTION_ARGS)
{
	return plivo_otp_hiding_statement(ingest, fcinfo);
}

/*
 * Check the request's signature with the token from the token file; an
 * ERROR unless it is valid.  *nonce and *other_nonce are the nonces to
 * record, *body_signed whether the signature covers the parameters.
 */
static void
require_valid_signature(const char *method, const char *url, const PlivoParam *params,
						int nparams, const PlivoParam *headers, int nheaders,
						const char **nonce, const char **other_nonce, bool *body_signed)
{
	PlivoCallbackHeaders h;
	PlivoSigResult result;
	char	   *token;
	char	   *why;

	h.v3 = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-V3", true);
	h.ma_v3 = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-Ma-V3", true);
	h.v3_nonce = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-V3-Nonce", true);
	h.v2 = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-V2", true);
	h.ma_v2 = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-Ma-V2", true);
	h.v2_nonce = plivo_otp_find_param(headers, nheaders, "X-Plivo-Signature-V2-Nonce", true);

	token = plivo_otp_read_auth_token(&why);
	if (token == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot check callback signatures"),
				 errdetail_internal("%s", why),
				 errhint("Put the Plivo auth token in the file named by plivo_otp.auth_token_file, mode 0600.")));
	result = plivo_otp_authenticate_callback(method, url, params, nparams, &h, token, nonce,
											  other_nonce, body_signed);
	explicit_bzero(token, strlen(token));
	if (result != PLIVO_SIG_VALID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("callback signature is not valid"),
				 errdetail_internal("%s", describe(result)),
				 errhint("Pass the URL exactly as Plivo called it, with every parameter and X-Plivo-Signature-* header of the request.")));
}

/* What ingest_callback answers for what recording the callback did. */
static Datum
ingest_answer(PlivoIngestResult ingested)
{
	switch (ingested)
	{
		case PLIVO_INGEST_REPLAYED:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("callback nonce was already used"),
					 errdetail("A request with this signature nonce was accepted before; a replay changes nothing."),
					 errhint("Answer the sender with 403.")));
			break;
		case PLIVO_INGEST_INCOMPLETE:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("callback lacks MessageUUID and Status, or RequestUUID and CallStatus"),
					 errhint("Pass a message-status callback (MessageUUID, Status) or a call's hang-up callback (RequestUUID, CallStatus).")));
			break;
		case PLIVO_INGEST_V3_REQUIRED:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("call callback is not signed with V3"),
					 errdetail("Plivo signs voice callbacks with X-Plivo-Signature-V3; a V2 signature does not cover the parameters."),
					 errhint("Answer the sender with 403.")));
			break;
		case PLIVO_INGEST_STALE_V2:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("callback signature is too old for this message"),
					 errdetail("A V2 signature does not cover the parameters, so it counts only for a message queued less than %d hours ago.",
							   PLIVO_OTP_NONCE_WINDOW_SECS / 3600),
					 errhint("Answer the sender with 403.")));
			break;
		case PLIVO_INGEST_V2_UNBOUND:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("callback signature does not name a message"),
					 errdetail("A V2 signature does not cover the parameters, so it counts only on a message's own callback URL, plivo_otp.public_url followed by %s/<message id>.",
							   PLIVO_OTP_SMS_STATUS_PATH),
					 errhint("Answer the sender with 403.")));
			break;
		case PLIVO_INGEST_V2_OTHER_MESSAGE:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("callback is for another message than its URL"),
					 errdetail("A V2 signature does not cover the parameters, so the MessageUUID must be the Plivo UUID recorded for the message that the URL names."),
					 errhint("Answer the sender with 403.")));
			break;
		case PLIVO_INGEST_DUPLICATE:
			PG_RETURN_TEXT_P(cstring_to_text("duplicate"));
		case PLIVO_INGEST_RECORDED:
			break;
	}
	PG_RETURN_TEXT_P(cstring_to_text("recorded"));
}

static Datum
ingest(PG_FUNCTION_ARGS)
{
	const char *method;
	char	   *url;
	char	   *token;
	PlivoParam *params;
	PlivoParam *headers;
	int			nparams;
	int			nheaders;
	const char *nonce;
	const char *other_nonce;
	bool		body_signed;
	PlivoIngestResult ingested;

	plivo_otp_require_preload();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("method, url, params and headers must not be null")));
	method = method_arg(fcinfo, 0);
	url = text_to_cstring(PG_GETARG_TEXT_PP(1));
	token = require_under_public_url(url);
	nparams = jsonb_to_params(PG_GETARG_JSONB_P(2), "params", &params);
	nheaders = jsonb_to_params(PG_GETARG_JSONB_P(3), "headers", &headers);
	require_valid_signature(method, url, params, nparams, headers, nheaders,
							&nonce, &other_nonce, &body_signed);

	plivo_otp_spi_connect();
	ingested = plivo_otp_ingest_callback(params, nparams, nonce, other_nonce, body_signed,
										 token);
	SPI_finish();
	return ingest_answer(ingested);
}

/* signature_valid(version, method, url, params, nonce, signature, auth_token) */
Datum
plivo_otp_signature_valid(PG_FUNCTION_ARGS)
{
	char	   *version = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *method = method_arg(fcinfo, 1);
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *nonce = text_to_cstring(PG_GETARG_TEXT_PP(4));
	char	   *signature = text_to_cstring(PG_GETARG_TEXT_PP(5));
	char	   *token = text_to_cstring(PG_GETARG_TEXT_PP(6));
	PlivoParam *params;
	int			nparams = jsonb_to_params(PG_GETARG_JSONB_P(3), "params", &params);

	plivo_otp_require_preload();
	if (pg_strcasecmp(version, "v3") == 0)
		PG_RETURN_BOOL(plivo_otp_check_v3(method, url, params, nparams, nonce,
										  signature, token) == PLIVO_SIG_VALID);
	if (pg_strcasecmp(version, "v2") == 0)
		PG_RETURN_BOOL(plivo_otp_check_v2(url, nonce, signature, token) == PLIVO_SIG_VALID);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid signature version \"%s\"", version),
			 errhint("Use 'v2' or 'v3'.")));
	PG_RETURN_NULL();
}
