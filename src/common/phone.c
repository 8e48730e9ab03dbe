/*-------------------------------------------------------------------------
 *
 * phone.c
 *	  Phone numbers: normalisation to E.164, masking for logs and status,
 *	  and the allow-list of calling-code prefixes and region codes.
 *
 * Accepted input: optional surrounding blanks, a leading "+" or "00", then
 * digits, with single spaces, dashes, dots or parentheses between them.
 * The result is "+" and 7 to 15 digits, the first not 0.  Nothing here
 * allocates or reports errors, so callers decide how to refuse.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "plivo_otp.h"

#define E164_MIN_DIGITS 7
#define E164_MAX_DIGITS 15

static bool
is_separator(char c)
{
	return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')';
}

/* Normalise input into out (PLIVO_OTP_MAX_PHONE_LEN + 1 bytes); false if malformed. */
bool
plivo_otp_normalize_phone(const char *input, char *out)
{
	const char *p = input;
	const char *end;
	int			ndigits = 0;
	char		prev = '\0';

	if (input == NULL)
		return false;
	while (*p == ' ' || *p == '\t')
		p++;
	end = p + strlen(p);
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;

	if (*p == '+')
		p++;
	else if (p[0] == '0' && p[1] == '0')
		p += 2;
	else
		return false;

	/* An optional opening parenthesis may come first: "+(44) 20 ...". */
	if (*p == '(')
		p++;
	if (p >= end || !isdigit((unsigned char) *p) || *p == '0')
		return false;

	out[0] = '+';
	for (; p < end; p++)
	{
		if (isdigit((unsigned char) *p))
		{
			if (ndigits == E164_MAX_DIGITS)
				return false;
			out[1 + ndigits++] = *p;
		}
		else if (is_separator(*p))
		{
			/* Separators sit between digits; two in a row only around parentheses. */
			if (is_separator(prev) && *p != '(' && prev != ')')
				return false;
		}
		else
			return false;
		prev = *p;
	}
	if (!isdigit((unsigned char) prev) && prev != ')')
		return false;
	if (ndigits < E164_MIN_DIGITS)
		return false;
	out[1 + ndigits] = '\0';
	return true;
}

/*
 * "+14155550199" -> "+1415*****99": the calling code and a little of the
 * area stay readable for operators, the subscriber part does not.  At least
 * half the digits are hidden, so short numbers stay masked too
 * ("+1234567" -> "+12***67").
 */
char *
plivo_otp_mask_phone(const char *e164)
{
	int			len = strlen(e164);
	int			ndigits = len - 1;
	int			shown_prefix = Min(4, ndigits - 2 - ndigits / 2);
	char	   *masked = pstrdup(e164);

	for (int i = 1 + Max(shown_prefix, 1); i < len - 2; i++)
		masked[i] = '*';
	return masked;
}

/* An ISO 3166-1 alpha-2 code in an allow-list: exactly two upper-case letters. */
static bool
is_region_item(const char *p)
{
	return isupper((unsigned char) p[0]) && isupper((unsigned char) p[1]) &&
		!isalnum((unsigned char) p[2]);
}

/* Does the allow list allow every number (unset, empty or only spaces)? */
bool
plivo_otp_allow_list_empty(const char *allow_list)
{
	if (allow_list == NULL)
		return true;
	while (*allow_list == ' ')
		allow_list++;
	return *allow_list == '\0';
}

/*
 * Is the number allowed by the comma-separated list of calling-code
 * prefixes ("44", "1876": a prefix of its digits) and region codes ("US",
 * "GB": its region, as libphonenumber gives it; "" matches none)?
 */
bool
plivo_otp_country_allowed(const char *e164, const char *region, const char *allow_list)
{
	const char *digits = e164 + (e164[0] == '+');
	const char *p = allow_list;

	if (plivo_otp_allow_list_empty(allow_list))
		return true;

	while (*p)
	{
		const char *start;
		int			len;

		while (*p == ' ' || *p == ',')
			p++;
		start = p;
		if (is_region_item(p))
		{
			if (region != NULL && region[0] != '\0' && strncmp(region, p, 2) == 0 &&
				region[2] == '\0')
				return true;
			p += 2;
		}
		else
		{
			while (isdigit((unsigned char) *p))
				p++;
			len = p - start;
			if (len > 0 && strncmp(digits, start, len) == 0)
				return true;
		}
		while (*p && *p != ',')
			p++;
	}
	return false;
}

/*
 * Syntax of plivo_otp.allowed_countries: empty, or a comma-separated list
 * of calling-code prefixes of 1-6 digits and ISO region codes of two
 * upper-case letters ("1,44,1876", "US,CA,GB", "44,US").  Whether a region
 * code is a real one is the setting's check (settings.c, libphonenumber).
 */
bool
plivo_otp_valid_prefix_list(const char *list)
{
	const char *p = list;
	bool		any = false;

	while (*p == ' ')
		p++;
	if (*p == '\0')
		return true;
	while (*p)
	{
		int			len = 0;

		while (*p == ' ')
			p++;
		if (*p == '+')
			return false;
		if (is_region_item(p))
			p += 2;
		else
		{
			while (isdigit((unsigned char) *p))
			{
				p++;
				len++;
			}
			if (len < 1 || len > 6)
				return false;
		}
		any = true;
		while (*p == ' ')
			p++;
		if (*p == ',')
		{
			p++;
			if (*p == '\0')
				return false;
		}
		else if (*p != '\0')
			return false;
	}
	return any;
}
