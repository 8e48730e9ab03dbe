/*-------------------------------------------------------------------------
 *
 * templates.c
 *	  The texts a code is delivered in: the SMS, and the sentence a call
 *	  speaks, rendered from plivo_otp.sms_template / plivo_otp.voice_template
 *	  ({code} and {minutes}); and the caller ID a call is placed from.
 *
 * Used where a message is queued: otp_send, otp_resend and the
 * dispatcher's voice fallback.  A call reads the code digit by digit with
 * pauses ("1, 2, 3, 4, 5, 6"), as text-to-speech would otherwise read it as
 * a number.  The spoken text is plain text: the listener escapes it when it
 * builds the call's XML script.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "plivo_otp.h"

/* template with {code} replaced by code_text and {minutes} by the lifetime. */
static char *
render(const char *template, const char *code_text, int ttl_seconds)
{
	StringInfoData buf;
	const char *p = template;

	initStringInfo(&buf);
	while (*p)
	{
		if (strncmp(p, "{code}", 6) == 0)
		{
			appendStringInfoString(&buf, code_text);
			p += 6;
		}
		else if (strncmp(p, "{minutes}", 9) == 0)
		{
			appendStringInfo(&buf, "%d", (ttl_seconds + 59) / 60);
			p += 9;
		}
		else
			appendStringInfoChar(&buf, *p++);
	}
	return buf.data;
}

/* The SMS text (palloc'd; the caller wipes it after use). */
char *
plivo_otp_render_sms(const char *code, int ttl_seconds)
{
	return render(plivo_otp_sms_template, code, ttl_seconds);
}

/* The sentence a call speaks, the code's digits read one by one. */
char *
plivo_otp_render_voice(const char *code, int ttl_seconds)
{
	StringInfoData digits;
	char	   *text;

	initStringInfo(&digits);
	for (const char *p = code; *p; p++)
	{
		if (p != code)
			appendStringInfoString(&digits, ", ");
		appendStringInfoChar(&digits, *p);
	}
	text = render(plivo_otp_voice_template, digits.data, ttl_seconds);
	explicit_bzero(digits.data, digits.len);
	pfree(digits.data);
	return text;
}

/*
 * The number calls are placed from: plivo_otp.voice_sender, or else
 * plivo_otp.sender when it is a number (a call cannot come from an
 * alphanumeric sender ID).  NULL when neither is.
 */
const char *
plivo_otp_voice_caller_id(void)
{
	const char *id = plivo_otp_voice_sender[0] != '\0' ? plivo_otp_voice_sender : plivo_otp_sender;
	const char *hint;

	return plivo_otp_sender_problem("voice", id, &hint) == NULL ? id : NULL;
}
