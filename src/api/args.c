/*-------------------------------------------------------------------------
 *
 * args.c
 *	  Checks of the arguments every SQL function shares: phone numbers,
 *	  purposes, channels, caller keys and locales, refused with SQLSTATE 22023 and a
 *	  hint.
 *
 * Errors that concern a phone number or a code hide the statement from the
 * server log (errhidestmt): the statement text would carry them.  Messages
 * never repeat the number.  plivo_otp_hiding_statement() (common/errors.c)
 * extends that to every error raised while one of those functions runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "plivo_otp.h"

#define MAX_PURPOSE_LEN 64
#define MAX_CALLER_KEY_LEN 200

/* Normalised E.164 form of argument argno into out, or an ERROR. */
void
plivo_otp_phone_arg(FunctionCallInfo fcinfo, int argno, char *out)
{
	char	   *input;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("phone number must not be null"),
				 errhidestmt(true)));
	input = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (strlen(input) > 64 || !plivo_otp_normalize_phone(input, out))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid phone number"),
				 errdetail("A number must start with + or 00 and the country calling code, and hold 7 to 15 digits; spaces, dashes, dots and parentheses may separate them."),
				 errhint("Give the number in international format, such as +14155550100."),
				 errhidestmt(true)));
	pfree(input);
}

/* 1 to MAX_PURPOSE_LEN letters, digits, '_', '-', '.' or ':' (templates.purpose too). */
bool
plivo_otp_valid_purpose(const char *purpose)
{
	int			len = strlen(purpose);

	for (const char *p = purpose; *p; p++)
		if (!isalnum((unsigned char) *p) && *p != '_' && *p != '-' && *p != '.' && *p != ':')
			return false;
	return len >= 1 && len <= MAX_PURPOSE_LEN;
}

/* Purpose argument argno: 1 to 64 letters, digits, '_', '-', '.' or ':'. */
char *
plivo_otp_purpose_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *purpose;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("purpose must not be null"),
				 errhint("Omit the argument to use the purpose 'default'."),
				 errhidestmt(true)));
	purpose = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (!plivo_otp_valid_purpose(purpose))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid purpose"),
				 errdetail("A purpose is 1 to %d letters, digits, '_', '-', '.' or ':'.", MAX_PURPOSE_LEN),
				 errhint("Use a short fixed name such as 'login' or 'reset-password'."),
				 errhidestmt(true)));
	return purpose;
}

/*
 * Channel argument argno: 'sms' or 'voice'.  (Whether a call has a number
 * to come from depends on the destination: common/outbound.c checks it.)
 */
char *
plivo_otp_channel_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *channel;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("channel must not be null"),
				 errhint("Omit the argument to use 'sms'."),
				 errhidestmt(true)));
	channel = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (strcmp(channel, "sms") == 0 || strcmp(channel, "voice") == 0)
		return channel;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid channel \"%s\"", channel),
			 errhint("Use 'sms' or 'voice'."),
			 errhidestmt(true)));
	return NULL;				/* keep compiler quiet */
}

/*
 * Caller key argument argno (1 to MAX_CALLER_KEY_LEN bytes, or NULL): its
 * keyed hash, the only form stored, or NULL without one.  The key itself
 * goes to *key (NULL without one), for the caller's lock.
 */
bytea *
plivo_otp_caller_key_arg(FunctionCallInfo fcinfo, int argno, char **key)
{
	bytea	   *digest;

	*key = NULL;
	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return NULL;
	*key = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (strlen(*key) < 1 || strlen(*key) > MAX_CALLER_KEY_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid caller key"),
				 errdetail("A caller key is 1 to %d bytes long.", MAX_CALLER_KEY_LEN),
				 errhint("Pass what identifies the requester, such as 'ip:203.0.113.7' or 'account:42', or NULL."),
				 errhidestmt(true)));
	digest = palloc(VARHDRSZ + PLIVO_OTP_DIGEST_LEN);
	SET_VARSIZE(digest, VARHDRSZ + PLIVO_OTP_DIGEST_LEN);
	plivo_otp_keyed_hash(PLIVO_OTP_KEY_CALLER, *key, strlen(*key), (uint8 *) VARDATA(digest));
	return digest;
}

/*
 * The BCP 47 locale of argument argno (fr-FR, fr), in its canonical case,
 * or NULL when the argument is NULL or 'default' (the default templates).
 */
char *
plivo_otp_locale_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *locale;
	char	   *out;

	if (PG_ARGISNULL(argno))
		return NULL;
	locale = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (strcmp(locale, "default") == 0)
		return NULL;
	out = palloc0(PLIVO_OTP_MAX_LOCALE_LEN + 1);
	if (!plivo_otp_canonical_locale(locale, out))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid locale"),
				 errdetail("A locale is a BCP 47 language tag of at most %d characters.", PLIVO_OTP_MAX_LOCALE_LEN),
				 errhint("Use a tag such as 'fr-FR' or 'fr', or pass NULL for the default templates."),
				 errhidestmt(true)));
	return out;
}
