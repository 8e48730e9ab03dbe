/*-------------------------------------------------------------------------
 *
 * outbound.c
 *	  Queue one message (an SMS or a call) carrying a verification's code:
 *	  the row in plivo_otp.messages, its text sealed under the message's id.
 *
 * Used by otp_send, otp_resend and the dispatcher's voice fallback, inside
 * their transaction (SPI connected).  An SMS row holds the SMS text; a call
 * row holds the sentence the call speaks (it stays sealed until the call
 * fetched its script, or the code expired), the digest of its answer-URL
 * token (crypto/answer_token.c) and the template's Speak language and
 * voice, if it has them.  The text comes from the template chosen for the
 * verification's locale and purpose (common/templates.c); an SMS row
 * records its encoding and segments (common/segments.c), counted in
 * api_stats.  The caller wakes the
 * dispatcher at commit (plivo_otp_wake_at_commit) when it is not the
 * dispatcher itself.  The sender is chosen here (common/senders.c) and
 * recorded on the row: the dispatcher sends from it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

static PlivoOtpStatement insert_message = {
	"INSERT INTO plivo_otp.messages"
	" (id, verification_id, channel, phone, body, next_try_at, expires_at,"
	"  created_at, updated_at, caller_key_digest, idempotency_key, origin, answer_token_digest,"
	"  sender, encoding, segments, voice_language, voice_name)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $6, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
	16, {UUIDOID, UUIDOID, TEXTOID, TEXTOID, BYTEAOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	BYTEAOID, TEXTOID, TEXTOID, BYTEAOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID},
	.forced_plan = true, .indexes = "verifications_pkey"
};

/* 0.1.0's table, while an upgrade is pending: SMS only, no origin. */
static PlivoOtpStatement insert_message_v1 = {
	"INSERT INTO plivo_otp.messages"
	" (id, verification_id, channel, phone, body, next_try_at, expires_at,"
	"  created_at, updated_at)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $6)",
	7, {UUIDOID, UUIDOID, TEXTOID, TEXTOID, BYTEAOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
	.forced_plan = true, .indexes = "verifications_pkey"
};

/*
 * Insert the message *m describes; its new id goes to *message_id.  The
 * rendered text is wiped from memory once sealed.
 */
void
plivo_otp_queue_message(const PlivoOtpOutbound *m, pg_uuid_t *message_id)
{
	bool		voice = strcmp(m->channel, "voice") == 0;
	int			ttl = (int) ((m->expires_at - m->now) / USECS_PER_SEC);
	char	   *text;
	char	   *sender;
	PlivoOtpTemplate template;
	PlivoOtpSmsSegments seg = {0};
	Datum		args[16];
	char		nulls[16];

	if (voice && !m->v2)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("code not sent: voice codes need version 0.2.0 of plivo_otp"),
				 errhint("Run ALTER EXTENSION plivo_otp UPDATE."),
				 errhidestmt(true)));

	/*
	 * The sender, from plivo_otp.senders or the settings (0.1.0 has no
	 * table); NULL when neither gives one, and the dispatcher's settings
	 * then do.  A call needs a number: with only a sender ID configured,
	 * none could be placed.
	 */
	sender = m->v2 ? plivo_otp_choose_sender(m->channel, m->phone, m->region) : NULL;
	if (voice && sender == NULL && plivo_otp_sender[0] != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("code not sent: no number to place the call from"),
				 errdetail("No row of plivo_otp.senders serves this number for calls, and plivo_otp.sender is a sender ID."),
				 errhint("Ask the administrator to set plivo_otp.voice_sender to a Plivo number, or to add a row for calls to plivo_otp.senders."),
				 errhidestmt(true)));

	memset(nulls, ' ', sizeof(nulls));
	plivo_otp_new_id(message_id);
	plivo_otp_choose_template(m->verification_id, m->channel, m->locale, m->v2, &template);
	text = plivo_otp_render(m->channel, template.body, m->code, ttl);
	if (!voice)
		plivo_otp_sms_segments(text, &seg);

	args[0] = UUIDPGetDatum(message_id);
	args[1] = UUIDPGetDatum(m->verification_id);
	args[2] = CStringGetTextDatum(m->channel);
	args[3] = CStringGetTextDatum(m->phone);
	args[4] = PointerGetDatum(plivo_otp_seal(PLIVO_OTP_KEY_QUEUE_BODY, message_id, text));
	explicit_bzero(text, strlen(text));
	args[5] = TimestampTzGetDatum(m->now);
	args[6] = TimestampTzGetDatum(m->expires_at);
	if (!m->v2)
	{
		plivo_otp_exec(&insert_message_v1, args, nulls, false, 0);
		return;
	}
	args[7] = m->caller_digest ? PointerGetDatum(m->caller_digest) : (Datum) 0;
	nulls[7] = m->caller_digest ? ' ' : 'n';
	args[8] = m->idempotency_key ? CStringGetTextDatum(m->idempotency_key) : (Datum) 0;
	nulls[8] = m->idempotency_key ? ' ' : 'n';
	args[9] = CStringGetTextDatum(m->origin);
	nulls[10] = 'n';
	if (voice)
	{
		char		token[PLIVO_OTP_ANSWER_TOKEN_LEN + 1];

		plivo_otp_answer_token(message_id, token);
		args[10] = PointerGetDatum(plivo_otp_answer_token_digest(token));
		nulls[10] = ' ';
		explicit_bzero(token, sizeof(token));
	}
	args[11] = sender ? CStringGetTextDatum(sender) : (Datum) 0;
	nulls[11] = sender ? ' ' : 'n';
	args[12] = voice ? (Datum) 0 : CStringGetTextDatum(seg.ucs2 ? "ucs2" : "gsm7");
	nulls[12] = voice ? 'n' : ' ';
	args[13] = voice ? (Datum) 0 : Int32GetDatum(seg.segments);
	nulls[13] = voice ? 'n' : ' ';
	args[14] = template.voice_language ? CStringGetTextDatum(template.voice_language) : (Datum) 0;
	nulls[14] = template.voice_language ? ' ' : 'n';
	args[15] = template.voice_name ? CStringGetTextDatum(template.voice_name) : (Datum) 0;
	nulls[15] = template.voice_name ? ' ' : 'n';
	plivo_otp_exec(&insert_message, args, nulls, false, 0);
	if (!voice)
		plivo_otp_count(PLIVO_OTP_COUNTER_SMS_SEGMENTS, seg.segments);
}
