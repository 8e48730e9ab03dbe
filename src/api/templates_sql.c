/*-------------------------------------------------------------------------
 *
 * templates_sql.c
 *	  SQL functions for the administrator's templates: template_check(),
 *	  which the trigger on plivo_otp.templates calls for every row written,
 *	  and sms_segments(), how Plivo would count a text.
 *
 * template_check refuses a row whose text is not a template Plivo can
 * deliver (common/templates.c: no {code}, an unknown placeholder, too long,
 * more than plivo_otp.max_segments segments), a malformed locale, purpose
 * or Speak attribute, and returns the locale in its canonical case, so
 * 'FR-fr' and 'fr-FR' are the same row.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_template_check);
PG_FUNCTION_INFO_V1(plivo_otp_sms_segments_sql);

static const char *
text_arg(FunctionCallInfo fcinfo, int argno)
{
	return PG_ARGISNULL(argno) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

static void
refuse(int sqlstate, const char *message, const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("%s", message),
			 detail ? errdetail("%s", detail) : 0,
			 errhint("%s", hint)));
}

/* template_check(purpose, channel, locale, body, voice_language, voice_name) returns the locale. */
Datum
plivo_otp_template_check(PG_FUNCTION_ARGS)
{
	const char *purpose = text_arg(fcinfo, 0);
	const char *channel = text_arg(fcinfo, 1);
	const char *locale = text_arg(fcinfo, 2);
	const char *body = text_arg(fcinfo, 3);
	const char *language = text_arg(fcinfo, 4);
	const char *voice = text_arg(fcinfo, 5);
	char	   *canonical = palloc0(PLIVO_OTP_MAX_LOCALE_LEN + 1);
	char	   *detail;
	PlivoOtpTemplateProblem problem;

	if (purpose == NULL || !plivo_otp_valid_purpose(purpose))
		refuse(ERRCODE_INVALID_PARAMETER_VALUE, "invalid template purpose",
			   "A purpose is 1 to 64 letters, digits, '_', '-', '.' or ':'.",
			   "Use the purpose otp_send is given, such as 'login', or 'default' for every purpose.");
	if (locale == NULL || strcmp(locale, "default") == 0)
		strcpy(canonical, "default");
	else if (!plivo_otp_canonical_locale(locale, canonical))
		refuse(ERRCODE_INVALID_PARAMETER_VALUE, "invalid template locale",
			   "A locale is a BCP 47 language tag, such as fr-FR or fr, or 'default'.",
			   "Use the tags otp_send's locale argument is given, or 'default'.");
	if (channel == NULL || (strcmp(channel, "sms") != 0 && strcmp(channel, "voice") != 0))
		refuse(ERRCODE_INVALID_PARAMETER_VALUE, "invalid template channel", NULL,
			   "A template is for channel 'sms' or 'voice'.");
	if (strcmp(channel, "sms") == 0 && (language != NULL || voice != NULL))
		refuse(ERRCODE_INVALID_PARAMETER_VALUE, "an SMS template has no voice",
			   "voice_language and voice_name are the Speak attributes of a call.",
			   "Leave them NULL for an SMS template.");
	if (language != NULL && !plivo_otp_valid_voice_language(language))
		refuse(ERRCODE_INVALID_PARAMETER_VALUE, "invalid voice_language",
			   NULL, "Give a language tag such as en-US, en-GB or fr-FR, or NULL for plivo_otp.voice_language.");
	if (voice != NULL && !plivo_otp_valid_voice_name(voice))
		refuse(ERRCODE_INVALID_PARAMETER_VALUE, "invalid voice_name",
			   NULL, "Give WOMAN, MAN or an Amazon Polly voice such as Polly.Celine, or NULL for plivo_otp.voice_name.");
	if (body == NULL)
		refuse(ERRCODE_NOT_NULL_VIOLATION, "a template needs a body", NULL,
			   "Give the text, with the placeholder {code}.");

	problem = plivo_otp_check_template(channel, body, &detail);
	switch (problem)
	{
		case PLIVO_OTP_TEMPLATE_OK:
			break;
		case PLIVO_OTP_TEMPLATE_NO_CODE:
			refuse(ERRCODE_INVALID_PARAMETER_VALUE, "a template must contain {code}", detail,
				   "Put {code} where the code goes, such as 'Your code is {code}.'.");
			break;
		case PLIVO_OTP_TEMPLATE_UNKNOWN_PLACEHOLDER:
			refuse(ERRCODE_INVALID_PARAMETER_VALUE, "a template holds an unknown placeholder", detail,
				   "The placeholders are {code}, {minutes} and {app}.");
			break;
		case PLIVO_OTP_TEMPLATE_TOO_LONG:
			refuse(ERRCODE_CHECK_VIOLATION, "template too long", detail,
				   "Shorten the text; it is checked with a 10-digit code and the current plivo_otp.app_name.");
			break;
		case PLIVO_OTP_TEMPLATE_TOO_MANY_SEGMENTS:
			refuse(ERRCODE_CHECK_VIOLATION, "template needs too many SMS segments", detail,
				   "Shorten the text, avoid characters outside GSM-7 (they make it UCS-2: 70 per segment), or raise plivo_otp.max_segments: each segment is billed.");
			break;
	}
	PG_RETURN_TEXT_P(cstring_to_text(canonical));
}

/* sms_segments(text, OUT encoding, OUT segments, OUT characters) */
Datum
plivo_otp_sms_segments_sql(PG_FUNCTION_ARGS)
{
	char	   *body = text_to_cstring(PG_GETARG_TEXT_PP(0));
	PlivoOtpSmsSegments seg;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "plivo_otp: return type must be a row type");
	plivo_otp_sms_segments(body, &seg);
	values[0] = CStringGetTextDatum(seg.ucs2 ? "ucs2" : "gsm7");
	values[1] = Int32GetDatum(seg.segments);
	values[2] = Int32GetDatum(seg.characters);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
