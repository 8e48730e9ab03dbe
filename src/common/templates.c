/*-------------------------------------------------------------------------
 *
 * templates.c
 *	  The texts a code is delivered in: the SMS, and the sentence a call
 *	  speaks, rendered from a template ({code}, {minutes} and {app}) chosen
 *	  in plivo_otp.templates by locale and purpose, or from the settings
 *	  plivo_otp.sms_template / plivo_otp.voice_template; and the check every
 *	  template passes.  (The caller ID a call comes from is in senders.c.)
 *
 * Used where a message is queued: otp_send, otp_resend and the
 * dispatcher's voice fallback.  The choice, for a verification's locale
 * (given to otp_send, or the verification's) and purpose: the exact
 * locale (fr-FR), then its language (fr), then 'default'; within each, the
 * purpose, then the purpose 'default'; then the setting.  A template is
 * rendered in one pass: text a placeholder brings in (an app name holding
 * "{code}") is never expanded again.  A call reads the code digit by digit
 * with pauses ("1, 2, 3, 4, 5, 6"), as text-to-speech would otherwise read
 * it as a number.  The spoken text is plain text: the listener escapes it
 * when it builds the call's XML script.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "plivo_otp.h"

/* Longest {minutes}: plivo_otp.code_ttl is at most a day. */
#define LONGEST_MINUTES "1440"

static PlivoOtpStatement choose_template = {
	"SELECT t.body, t.voice_language, t.voice_name"
	" FROM plivo_otp.verifications v, plivo_otp.templates t"
	" WHERE v.id = $1 AND t.channel = $2 AND t.purpose IN (v.purpose, 'default')"
	" AND t.locale IN (coalesce($3, v.locale), split_part(coalesce($3, v.locale), '-', 1), 'default')"
	" ORDER BY CASE WHEN t.locale = coalesce($3, v.locale) THEN 0"
	"  WHEN t.locale = 'default' THEN 2 ELSE 1 END, t.purpose = 'default'"
	" LIMIT 1",
	3, {UUIDOID, TEXTOID, TEXTOID},
	.forced_plan = true, .indexes = "verifications_pkey templates_pkey"
};

/* A placeholder at p: its length, and what it is; 0 when p starts none. */
static int
placeholder(const char *p, const char **name)
{
	static const char *const names[] = {"{code}", "{minutes}", "{app}"};

	for (int i = 0; i < lengthof(names); i++)
		if (strncmp(p, names[i], strlen(names[i])) == 0)
		{
			*name = names[i];
			return strlen(names[i]);
		}
	return 0;
}

/* Something that looks like a placeholder ({ then letters or _ then }) at p: its length. */
static int
placeholder_like(const char *p)
{
	int			n = 1;

	if (*p != '{')
		return 0;
	while (isalpha((unsigned char) p[n]) || p[n] == '_')
		n++;
	return n > 1 && p[n] == '}' ? n + 1 : 0;
}

/* template with each placeholder replaced, in one pass. */
static char *
render(const char *template, const char *code_text, const char *minutes, const char *app)
{
	StringInfoData buf;
	const char *p = template;

	initStringInfo(&buf);
	/* Room for all of it at once: a buffer that grew would leave copies of the code behind. */
	enlargeStringInfo(&buf, strlen(template) * (strlen(code_text) + strlen(minutes) + strlen(app) + 1) + 1);
	while (*p)
	{
		const char *name;
		int			n = placeholder(p, &name);

		if (n == 0)
		{
			appendStringInfoChar(&buf, *p++);
			continue;
		}
		if (name[1] == 'c')
			appendStringInfoString(&buf, code_text);
		else if (name[1] == 'm')
			appendStringInfoString(&buf, minutes);
		else
			appendStringInfoString(&buf, app);
		p += n;
	}
	return buf.data;
}

/* The code as a call reads it: "1, 2, 3". */
static char *
spoken_digits(const char *code)
{
	StringInfoData digits;

	initStringInfo(&digits);
	enlargeStringInfo(&digits, 3 * strlen(code) + 1);
	for (const char *p = code; *p; p++)
	{
		if (p != code)
			appendStringInfoString(&digits, ", ");
		appendStringInfoChar(&digits, *p);
	}
	return digits.data;
}

/*
 * The text of a message on channel ("sms" or "voice") from template
 * (palloc'd; the caller wipes it after use).
 */
char *
plivo_otp_render(const char *channel, const char *template, const char *code, int ttl_seconds)
{
	char		minutes[16];
	char	   *text;

	snprintf(minutes, sizeof(minutes), "%d", (ttl_seconds + 59) / 60);
	if (strcmp(channel, "voice") != 0)
		return render(template, code, minutes, plivo_otp_app_name);
	code = spoken_digits(code);
	text = render(template, code, minutes, plivo_otp_app_name);
	explicit_bzero((char *) code, strlen(code));
	pfree((char *) code);
	return text;
}

/*
 * The template of a message on channel for verification_id (in the locale
 * given, or NULL for the verification's), into *t; voice_language and
 * voice_name NULL mean the settings'.  SPI connected.
 */
void
plivo_otp_choose_template(const pg_uuid_t *verification_id, const char *channel,
						  const char *locale, bool v2, PlivoOtpTemplate *t)
{
	bool		voice = strcmp(channel, "voice") == 0;
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};

	t->body = voice ? plivo_otp_voice_template : plivo_otp_sms_template;
	t->voice_language = NULL;
	t->voice_name = NULL;
	/* 0.1.0's tables, while an upgrade is pending, have no templates. */
	if (!v2)
		return;
	/* No template for the channel at all (table_cache.c): the settings'. */
	if (!plivo_otp_config_table_has_rows(PLIVO_OTP_TEMPLATES, channel))
		return;
	args[0] = UUIDPGetDatum(verification_id);
	args[1] = CStringGetTextDatum(channel);
	args[2] = locale ? CStringGetTextDatum(locale) : (Datum) 0;
	nulls[2] = locale ? ' ' : 'n';
	/* The latest snapshot: a template committed a moment ago counts. */
	if (plivo_otp_exec_latest(&choose_template, args, nulls, 1) != 1)
		return;
	t->body = plivo_otp_get_text(0, 1);
	t->voice_language = plivo_otp_get_text(0, 2);
	t->voice_name = plivo_otp_get_text(0, 3);
}

/*
 * Is in a BCP 47 language tag (a language of 2 or 3 letters, then subtags
 * of 1 to 8 letters or digits: fr, fr-FR, zh-Hant-TW, es-419)?  Its
 * canonical case (fr-FR, zh-Hant-TW) into out (PLIVO_OTP_MAX_LOCALE_LEN + 1
 * bytes).
 */
bool
plivo_otp_canonical_locale(const char *in, char *out)
{
	int			len = strlen(in);
	int			start = 0;

	if (len < 2 || len > PLIVO_OTP_MAX_LOCALE_LEN)
		return false;
	for (int i = 0; i <= len; i++)
	{
		int			n;

		if (in[i] != '-' && in[i] != '\0')
		{
			if (!isalnum((unsigned char) in[i]))
				return false;
			continue;
		}
		n = i - start;
		if (n < 1 || n > 8)
			return false;
		for (int j = start; j < i; j++)
		{
			char		c = in[j];

			if (start == 0)
			{
				if (!isalpha((unsigned char) c) || n > 3 || n < 2)
					return false;
				c = tolower((unsigned char) c);
			}
			else if (n == 2)
				c = toupper((unsigned char) c);		/* region */
			else if (n == 4 && j == start)
				c = toupper((unsigned char) c);		/* script */
			else
				c = tolower((unsigned char) c);
			out[j] = c;
		}
		out[i] = in[i];
		start = i + 1;
	}
	return true;
}

/*
 * Is body a template Plivo can deliver on channel?  PLIVO_OTP_TEMPLATE_OK,
 * or the problem, with *detail saying what it is.  It is rendered with the
 * longest code and lifetime and the current plivo_otp.app_name.
 */
PlivoOtpTemplateProblem
plivo_otp_check_template(const char *channel, const char *body, char **detail)
{
	bool		voice = strcmp(channel, "voice") == 0;
	char		code[PLIVO_OTP_MAX_CODE_LEN + 1];
	char	   *code_text;
	char	   *text;
	PlivoOtpSmsSegments seg;

	*detail = NULL;
	if (strlen(body) > PLIVO_OTP_TEMPLATE_MAX_BYTES)
	{
		*detail = psprintf("A template is at most %d bytes long.", PLIVO_OTP_TEMPLATE_MAX_BYTES);
		return PLIVO_OTP_TEMPLATE_TOO_LONG;
	}
	for (const char *p = body; *p; p++)
	{
		const char *name;
		int			n = placeholder_like(p);

		if (n > 0 && placeholder(p, &name) == 0)
		{
			*detail = psprintf("The placeholder %.*s is unknown: use {code}, {minutes} and {app}.", n, p);
			return PLIVO_OTP_TEMPLATE_UNKNOWN_PLACEHOLDER;
		}
	}
	if (strstr(body, "{code}") == NULL)
	{
		*detail = pstrdup("The template must contain the placeholder {code}.");
		return PLIVO_OTP_TEMPLATE_NO_CODE;
	}

	memset(code, '0', PLIVO_OTP_MAX_CODE_LEN);
	code[PLIVO_OTP_MAX_CODE_LEN] = '\0';
	code_text = voice ? spoken_digits(code) : code;
	text = render(body, code_text, LONGEST_MINUTES, plivo_otp_app_name);
	if (voice)
	{
		if (strlen(text) > PLIVO_OTP_VOICE_MAX_BYTES)
		{
			*detail = psprintf("The spoken text would be %d bytes long; a call speaks at most %d.",
							   (int) strlen(text), PLIVO_OTP_VOICE_MAX_BYTES);
			return PLIVO_OTP_TEMPLATE_TOO_LONG;
		}
		return PLIVO_OTP_TEMPLATE_OK;
	}
	plivo_otp_sms_segments(text, &seg);
	if (seg.characters > (seg.ucs2 ? PLIVO_OTP_SMS_MAX_UCS2 : PLIVO_OTP_SMS_MAX_GSM7))
	{
		*detail = psprintf("The text would be %d %s characters long; Plivo takes at most %d.",
						   seg.characters, seg.ucs2 ? "UCS-2" : "GSM-7",
						   seg.ucs2 ? PLIVO_OTP_SMS_MAX_UCS2 : PLIVO_OTP_SMS_MAX_GSM7);
		return PLIVO_OTP_TEMPLATE_TOO_LONG;
	}
	if (seg.segments > plivo_otp_max_segments)
	{
		*detail = psprintf("The text would be %d %s characters, %d segments; plivo_otp.max_segments is %d.",
						   seg.characters, seg.ucs2 ? "UCS-2" : "GSM-7",
						   seg.segments, plivo_otp_max_segments);
		return PLIVO_OTP_TEMPLATE_TOO_MANY_SEGMENTS;
	}
	return PLIVO_OTP_TEMPLATE_OK;
}
