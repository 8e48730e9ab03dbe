/*-------------------------------------------------------------------------
 *
 * senders.c
 *	  Who a message goes out from: the row of plivo_otp.senders that serves
 *	  its destination and channel, else the settings; and what a sender or
 *	  a prefix of that table may look like.
 *
 * The choice is made when a message is queued (common/outbound.c) and
 * recorded on its row: the dispatcher sends what the row says.  Rule: a
 * row whose prefix is the number's ISO region ("JM", from
 * plivo_otp_phone_info) wins; else the row with the longest calling-code
 * prefix of the number's digits ("1876" before "1"); else the fallback,
 * plivo_otp.sender for an SMS and plivo_otp_voice_caller_id() for a call.
 * One indexed statement per message: the table is read at every send, so
 * a change is seen by the next send, without a reload.
 *
 * Forms (Plivo's, plivo-api §6): a number is 3 to 15 digits with an
 * optional '+'; an alphanumeric sender ID is 3 to 11 letters and digits,
 * with at least one letter, and only for SMS; "powerpack:<uuid>" names a
 * Plivo Powerpack, only for SMS.  A call comes from a number only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "plivo_otp.h"

static PlivoOtpStatement select_sender = {
	"SELECT sender FROM plivo_otp.senders"
	" WHERE channel = $1 AND prefix = ANY ($2)"
	" ORDER BY prefix = $3 DESC, length(prefix) DESC LIMIT 1",
	3, {TEXTOID, TEXTARRAYOID, TEXTOID},
	.forced_plan = true, .indexes = "senders_pkey"
};

/* A number: '+' optional, then 3 to 15 digits. */
static bool
is_number(const char *s)
{
	const char *p = s[0] == '+' ? s + 1 : s;
	int			n = 0;

	for (; *p; p++, n++)
		if (!isdigit((unsigned char) *p))
			return false;
	return n >= 3 && n <= 15;
}

/* An alphanumeric sender ID: 3 to 11 ASCII letters and digits, one letter at least. */
static bool
is_sender_id(const char *s)
{
	int			n = 0;
	bool		letter = false;

	for (const char *p = s; *p; p++, n++)
	{
		if (!isascii((unsigned char) *p) || !isalnum((unsigned char) *p))
			return false;
		letter |= isalpha((unsigned char) *p) != 0;
	}
	return letter && n >= 3 && n <= 11;
}

/* "powerpack:" and a UUID in its 8-4-4-4-12 hexadecimal form. */
static bool
is_powerpack(const char *s)
{
	const char *u = s + 10;

	if (strncmp(s, "powerpack:", 10) != 0 || strlen(u) != 36)
		return false;
	for (int i = 0; i < 36; i++)
	{
		bool		dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? u[i] != '-' : !isxdigit((unsigned char) u[i]))
			return false;
	}
	return true;
}

/*
 * Why sender cannot send on channel ("sms" or "voice"), with a hint, or
 * NULL when it can.
 */
const char *
plivo_otp_sender_problem(const char *channel, const char *sender, const char **hint)
{
	bool		voice = strcmp(channel, "voice") == 0;

	*hint = NULL;
	if (is_number(sender))
		return NULL;
	if (is_powerpack(sender))
	{
		if (!voice)
			return NULL;
		*hint = "A call comes from a number: give one with its country code, such as +14155550100.";
		return "a Powerpack sends SMS only, not calls";
	}
	if (is_sender_id(sender))
	{
		if (!voice)
			return NULL;
		*hint = "A call comes from a number: give one with its country code, such as +14155550100.";
		return "a call cannot come from an alphanumeric sender ID";
	}
	*hint = voice
		? "A call comes from a number: give one with its country code, such as +14155550100."
		: "Give a number with its country code (+14155550100), a sender ID of 3 to 11 letters and digits (MyBrand), or powerpack:<uuid>.";
	return voice ? "malformed caller number" : "malformed sender";
}

/*
 * Is prefix an ISO region code (two capital letters, "GB") or a
 * calling-code prefix (1 to 15 digits, not starting with 0, "1876")?
 */
bool
plivo_otp_valid_sender_prefix(const char *prefix)
{
	int			n = strlen(prefix);

	if (n == 2 && isupper((unsigned char) prefix[0]) && isupper((unsigned char) prefix[1]) &&
		isascii((unsigned char) prefix[0]) && isascii((unsigned char) prefix[1]))
		return true;
	if (n < 1 || n > 15 || prefix[0] == '0')
		return false;
	for (const char *p = prefix; *p; p++)
		if (!isdigit((unsigned char) *p))
			return false;
	return true;
}

/*
 * The sender of a message on channel to e164 whose region is region ("" when
 * unknown), from the table alone: palloc'd, or NULL when no row serves it.
 * SPI connected.
 */
char *
plivo_otp_table_sender(const char *channel, const char *e164, const char *region)
{
	const char *digits = e164[0] == '+' ? e164 + 1 : e164;
	int			ndigits = strlen(digits);
	Datum		candidates[PLIVO_OTP_MAX_PHONE_LEN + 1];
	int			n = 0;
	Datum		args[3];
	char	   *sender = NULL;

	/* No row for the channel at all (table_cache.c): none serves it. */
	if (!plivo_otp_config_table_has_rows(PLIVO_OTP_SENDERS, channel))
		return NULL;
	if (region[0] != '\0')
		candidates[n++] = CStringGetTextDatum(region);
	for (int len = 1; len <= ndigits && len <= 15; len++)
		candidates[n++] = PointerGetDatum(cstring_to_text_with_len(digits, len));
	args[0] = CStringGetTextDatum(channel);
	args[1] = PointerGetDatum(construct_array(candidates, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[2] = CStringGetTextDatum(region);
	if (plivo_otp_exec(&select_sender, args, NULL, false, 1) == 1)
		sender = plivo_otp_get_text(0, 1);
	return sender;
}

/*
 * The sender a message on channel to e164 goes out from: the table's row
 * for it, else the setting (NULL when the setting gives none).  SPI
 * connected.
 */
char *
plivo_otp_choose_sender(const char *channel, const char *e164, const char *region)
{
	PlivoOtpPhoneInfo info;
	char	   *sender;
	const char *fallback;

	if (region == NULL)
	{
		plivo_otp_phone_info(e164, &info);
		region = info.region;
	}
	sender = plivo_otp_table_sender(channel, e164, region);
	if (sender)
		return sender;
	if (strcmp(channel, "voice") == 0)
		fallback = plivo_otp_voice_caller_id();
	else
		fallback = plivo_otp_sender[0] != '\0' ? plivo_otp_sender : NULL;
	return fallback ? pstrdup(fallback) : NULL;
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
