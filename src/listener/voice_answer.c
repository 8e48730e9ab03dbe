/*-------------------------------------------------------------------------
 *
 * voice_answer.c
 *	  A voice call's answer URL ({public_url}/plivo/voice-answer/{token}):
 *	  the call's script, served once, or the no-code answer.
 *
 * Runs in the listener's transaction (SPI connected), for a request whose
 * V3 signature server.c has verified for the exact URL called.  The script
 * is served only when all of these hold:
 *	- the request's nonces are new (recorded here, in the same transaction
 *	  as everything else, so a failed try does not burn Plivo's retry);
 *	- the token's digest (crypto/answer_token.c) names a voice message;
 *	- its provider_uuid is the request's RequestUUID or ALegRequestUUID;
 *	- its verification is pending and unexpired;
 *	- its body (the sealed sentence) is still there: the script is served
 *	  once.
 * Serving wipes the body, sets answered_at and records an 'in-progress'
 * event for the call (delivery.c), so otp_status shows it was answered.
 * The script speaks in the message's language and voice (its template's,
 * common/templates.c), else plivo_otp.voice_language / voice_name.
 * Anything else gets the no-code answer and records only the nonces.  The
 * reason is logged at DEBUG1 only; neither the token nor the script is
 * ever logged.
 *
 * Two races with the dispatcher:
 *	- the call was placed but its outcome not recorded yet (the row still
 *	  'sending', no provider_uuid): the answer waits (PLIVO_VOICE_WAIT,
 *	  nothing recorded) and is decided again until VOICE_HOLD_MS have gone
 *	  by (last_try), then it is the no-code answer;
 *	- the outcome was 'unknown' (Plivo may have placed the call, its UUID
 *	  is not known): the request's RequestUUID is adopted as the message's
 *	  provider_uuid (dispatch_state 'accepted': Plivo evidently placed it),
 *	  unless another message has that UUID, and the script is served.
 * The message row is locked with SKIP LOCKED: a row that someone else
 * holds (the dispatcher recording the outcome) is waited for the same way,
 * never by blocking.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "listener.h"

/* The call a token's digest names, locked, with what the answer depends on. */
static PlivoOtpStatement lock_call = {
	"SELECT m.id, m.dispatch_state, m.provider_uuid, m.body,"
	"  v.state = 'pending' AND v.expires_at > $2 AND m.expires_at > $2,"
	"  m.voice_language, m.voice_name"
	" FROM plivo_otp.messages m JOIN plivo_otp.verifications v ON v.id = m.verification_id"
	" WHERE m.answer_token_digest = $1 AND m.channel = 'voice'"
	" FOR UPDATE OF m SKIP LOCKED",
	2, {BYTEAOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "messages_answer_token_digest_key verifications_pkey"
};

/* Is there such a call at all (when lock_call found none)? */
static PlivoOtpStatement call_exists = {
	"SELECT 1 FROM plivo_otp.messages WHERE answer_token_digest = $1 AND channel = 'voice'",
	1, {BYTEAOID},
	.forced_plan = true, .indexes = "messages_answer_token_digest_key"
};

/* The script was served: the sentence is wiped. */
static PlivoOtpStatement mark_answered = {
	"UPDATE plivo_otp.messages SET body = NULL, answered_at = $2, updated_at = $2"
	" WHERE id = $1",
	2, {UUIDOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "messages_pkey"
};

/* s with XML's five special characters escaped, appended to buf. */
static void
append_xml_escaped(StringInfo buf, const char *s)
{
	for (; *s; s++)
	{
		switch (*s)
		{
			case '&':
				appendStringInfoString(buf, "&amp;");
				break;
			case '<':
				appendStringInfoString(buf, "&lt;");
				break;
			case '>':
				appendStringInfoString(buf, "&gt;");
				break;
			case '"':
				appendStringInfoString(buf, "&quot;");
				break;
			case '\'':
				appendStringInfoString(buf, "&apos;");
				break;
			default:
				appendStringInfoChar(buf, *s);
		}
	}
}

/*
 * The call's Plivo XML, speaking sentence in language with voice (the
 * template's, or NULL for the settings'); palloc'd, the caller wipes it.
 */
static char *
build_script(const char *sentence, const char *language, const char *voice)
{
	StringInfoData buf;

	if (language == NULL)
		language = plivo_otp_voice_language;
	if (voice == NULL)
		voice = plivo_otp_voice_name;
	/* Room for all of it at once: a buffer that grew would leave copies behind. */
	initStringInfo(&buf);
	enlargeStringInfo(&buf, 6 * (strlen(sentence) + strlen(voice) + strlen(language)) + 128);
	appendStringInfoString(&buf, "<Response><Wait length=\"1\"/><Speak voice=\"");
	append_xml_escaped(&buf, voice);
	appendStringInfoString(&buf, "\" language=\"");
	append_xml_escaped(&buf, language);
	appendStringInfo(&buf, "\" loop=\"%d\">", plivo_otp_voice_loop);
	append_xml_escaped(&buf, sentence);
	appendStringInfoString(&buf, "</Speak><Hangup/></Response>");
	return buf.data;
}

/* The request's RequestUUID or ALegRequestUUID (non-empty), or NULL. */
static const char *
request_uuid(const PlivoParam *params, int nparams, const char *key)
{
	const char *v = plivo_otp_find_param(params, nparams, key, false);

	return v && v[0] != '\0' && strlen(v) <= 64 ? v : NULL;
}

/* The no-code answer, with its nonces recorded; why goes to DEBUG1 only. */
static PlivoVoiceAnswer
no_code(const char *nonce, const char *other_nonce, const char *why)
{
	if (nonce)
		(void) plivo_otp_record_nonces(nonce, other_nonce);
	elog(DEBUG1, "plivo_otp listener: a call's answer URL got no script: %s", why);
	return PLIVO_VOICE_NO_CODE;
}

/*
 * Decide the answer to a V3-signed request for token's call; see the rules
 * above.  last_try: the answer has waited long enough, no more waiting.
 * PLIVO_VOICE_SCRIPT with *xml (palloc'd; the caller wipes it once copied).
 */
PlivoVoiceAnswer
plivo_otp_voice_answer(const PlivoParam *params, int nparams, const char *nonce,
					   const char *other_nonce, const char *token, bool last_try,
					   char **xml)
{
	const char *req_uuid = request_uuid(params, nparams, "RequestUUID");
	const char *aleg_uuid = request_uuid(params, nparams, "ALegRequestUUID");
	TimestampTz now = GetCurrentTimestamp();
	bytea	   *digest = plivo_otp_answer_token_digest(token);
	Datum		args[3];
	bool		isnull;
	pg_uuid_t	id;
	char	   *state;
	char	   *uuid;
	bool		live;
	bytea	   *sealed;
	char	   *sentence;
	char	   *language;
	char	   *voice;

	*xml = NULL;
	/* 0.1.0's tables, while an upgrade is pending, have no calls. */
	if (!plivo_otp_schema_is_v2())
		return no_code(nonce, other_nonce, "the 0.2.0 schema is not installed");
	args[0] = PointerGetDatum(digest);
	args[1] = TimestampTzGetDatum(now);
	if (plivo_otp_exec(&lock_call, args, NULL, false, 1) == 0)
	{
		if (plivo_otp_exec(&call_exists, args, NULL, true, 1) == 0)
			return no_code(nonce, other_nonce, "no call has this token");
		if (!last_try)
			return PLIVO_VOICE_WAIT;
		return no_code(nonce, other_nonce, "the call's row stayed locked");
	}
	memcpy(&id, DatumGetUUIDP(plivo_otp_get(0, 1, &isnull)), sizeof(id));
	state = plivo_otp_get_text(0, 2);
	uuid = plivo_otp_get_text(0, 3);
	(void) plivo_otp_get(0, 4, &isnull);
	sealed = isnull ? NULL : DatumGetByteaPCopy(plivo_otp_get(0, 4, &isnull));
	live = DatumGetBool(plivo_otp_get(0, 5, &isnull));
	language = plivo_otp_get_text(0, 6);
	voice = plivo_otp_get_text(0, 7);

	if (!live)
		return no_code(nonce, other_nonce, "the code is no longer pending");
	if (sealed == NULL)
		return no_code(nonce, other_nonce, "the script was served already");
	if (uuid == NULL && strcmp(state, "sending") == 0)
	{
		if (!last_try)
			return PLIVO_VOICE_WAIT;
		return no_code(nonce, other_nonce, "the call's UUID was not recorded in time");
	}
	if (uuid == NULL && strcmp(state, "unknown") == 0 && (req_uuid || aleg_uuid))
	{
		/* Adopted only with new nonces: a replay must not change the row. */
		if (!plivo_otp_record_nonces(nonce, other_nonce))
			return no_code(NULL, NULL, "replayed nonce");
		if (!plivo_otp_adopt_call_uuid(UUIDPGetDatum(&id), req_uuid ? req_uuid : aleg_uuid))
		{
			elog(DEBUG1, "plivo_otp listener: a call's answer URL got no script: its UUID is another message's");
			return PLIVO_VOICE_NO_CODE;
		}
		uuid = pstrdup(req_uuid ? req_uuid : aleg_uuid);
	}
	else if (uuid == NULL ||
			 !((req_uuid && strcmp(uuid, req_uuid) == 0) ||
			   (aleg_uuid && strcmp(uuid, aleg_uuid) == 0)))
		return no_code(nonce, other_nonce, "the request is not for this call");
	else if (!plivo_otp_record_nonces(nonce, other_nonce))
		return no_code(NULL, NULL, "replayed nonce");

	sentence = plivo_otp_unseal(PLIVO_OTP_KEY_QUEUE_BODY, &id, sealed);
	if (sentence == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("plivo_otp listener: a call's sentence does not open with the key file"),
				 errhint("Check that plivo_otp.key_file is the key the codes were made with.")));
	*xml = build_script(sentence, language, voice);
	explicit_bzero(sentence, strlen(sentence));

	args[0] = UUIDPGetDatum(&id);
	args[1] = TimestampTzGetDatum(now);
	plivo_otp_exec(&mark_answered, args, NULL, false, 0);
	(void) plivo_otp_record_call_event(uuid, "in-progress", NULL, params, nparams);
	return PLIVO_VOICE_SCRIPT;
}
