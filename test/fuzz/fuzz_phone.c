/*-------------------------------------------------------------------------
 *
 * fuzz_phone.c
 *	  libFuzzer target for src/common/phone.c: plivo_otp_normalize_phone,
 *	  plivo_otp_mask_phone, plivo_otp_country_allowed and
 *	  plivo_otp_valid_prefix_list.
 *
 * An input is "number \n allow-list" (no newline: the whole input is both).
 * phone.c includes postgres.h: it is compiled against the server headers
 * and linked with pg_shims.c (pstrdup).  Besides the sanitizers, the target
 * traps when a property of the README's rules breaks:
 *	- normalize: the result is "+", then 7 to 15 digits, the first not 0,
 *	  and those are exactly the input's digits after its "+" or "00"; it
 *	  never writes past PLIVO_OTP_MAX_PHONE_LEN + 1 bytes (an exact-size
 *	  heap buffer, so ASan sees one byte more); normalising the result
 *	  gives it back; an input with a byte that is not a digit, blank,
 *	  separator or "+" is refused;
 *	- mask: same length, every character either itself or "*"; for a
 *	  normalised number, "+", the first digit and the last two kept and at
 *	  least half the digits hidden;
 *	- valid_prefix_list agrees with a POSIX regular expression of the
 *	  setting's grammar (blank, or 1-6 digit prefixes and two-letter
 *	  upper-case region codes separated by commas);
 *	- country_allowed, for a valid list, agrees with a plain reference:
 *	  blank allows all, else some listed prefix starts the digits or some
 *	  listed region is the number's (the region is made up here from the
 *	  calling code: libphonenumber is not linked; "" matches no region).
 *
 * Built by run.sh with clang -fsanitize=fuzzer,address,undefined.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>

#include "plivo_otp.h"

#include "pg_shims.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static regex_t prefix_list_re;
static bool prefix_list_re_ready = false;

/* Trap, so libFuzzer records the input, when an invariant does not hold. */
static void
require(bool ok)
{
	if (!ok)
		__builtin_trap();
}

/* A NUL-terminated copy of len bytes (truncated at any NUL inside). */
static char *
dup_bytes(const uint8_t *data, size_t len)
{
	char	   *s = malloc(len + 1);

	require(s != NULL);
	if (len > 0)
		memcpy(s, data, len);
	s[len] = '\0';
	return s;
}

/* The input's digits after its "+" or "00" (NULL if it has neither). */
static char *
digits_after_prefix(const char *input)
{
	const char *p = input;
	char	   *out = malloc(strlen(input) + 1);
	char	   *o = out;

	require(out != NULL);
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '+')
		p++;
	else if (p[0] == '0' && p[1] == '0')
		p += 2;
	else
	{
		free(out);
		return NULL;
	}
	for (; *p; p++)
		if (*p >= '0' && *p <= '9')
			*o++ = *p;
	*o = '\0';
	return out;
}

static void
check_normalize(const char *input)
{
	/* exactly the documented size, on the heap: one byte more is an ASan report */
	char	   *out = malloc(PLIVO_OTP_MAX_PHONE_LEN + 1);
	bool		ok;

	require(out != NULL);
	ok = plivo_otp_normalize_phone(input, out);
	if (ok)
	{
		size_t		len = strlen(out);
		char	   *digits = digits_after_prefix(input);
		char		again[PLIVO_OTP_MAX_PHONE_LEN + 1];

		require(len >= 1 + 7 && len <= 1 + 15);
		require(out[0] == '+' && out[1] >= '1' && out[1] <= '9');
		for (size_t i = 1; i < len; i++)
			require(out[i] >= '0' && out[i] <= '9');
		require(digits != NULL && strcmp(digits, out + 1) == 0);
		free(digits);
		for (const char *p = input; *p; p++)
			require(isdigit((unsigned char) *p) || strchr(" \t-.()+", *p) != NULL);
		require(plivo_otp_normalize_phone(out, again) && strcmp(again, out) == 0);
	}
	free(out);
	require(!plivo_otp_normalize_phone(NULL, NULL));
}

/* normalized: e164 came from plivo_otp_normalize_phone (else any string) */
static void
check_mask(const char *e164, bool normalized)
{
	char	   *masked = plivo_otp_mask_phone(e164);
	size_t		len = strlen(e164);
	size_t		hidden = 0;

	require(strlen(masked) == len);
	for (size_t i = 0; i < len; i++)
	{
		require(masked[i] == e164[i] || masked[i] == '*');
		hidden += masked[i] == '*' && e164[i] != '*';
	}
	if (normalized)
	{
		require(masked[0] == '+');
		require(masked[1] == e164[1]);	/* the calling code's first digit */
		require(strcmp(masked + len - 2, e164 + len - 2) == 0);
		require(hidden >= (len - 1) / 2);
	}
	pfree(masked);
}

static bool
blank(const char *s)
{
	return s[strspn(s, " ")] == '\0';
}

/* The allow-list rule, written from its description rather than the code. */
static bool
reference_allowed(const char *e164, const char *region, const char *list)
{
	const char *digits = e164 + (e164[0] == '+');
	const char *item = list;

	if (blank(list))
		return true;
	while (item != NULL)
	{
		const char *end = strchr(item, ',');
		size_t		itemlen = end ? (size_t) (end - item) : strlen(item);
		size_t		lead = strspn(item, " ");
		size_t		ndigits = 0;

		while (lead + ndigits < itemlen && isdigit((unsigned char) item[lead + ndigits]))
			ndigits++;
		if (ndigits > 0 && strncmp(digits, item + lead, ndigits) == 0)
			return true;
		if (ndigits == 0 && region[0] != '\0' && itemlen - lead >= 2 &&
			item[lead] == region[0] && item[lead + 1] == region[1])
			return true;
		item = end ? end + 1 : NULL;
	}
	return false;
}

/* A stand-in for libphonenumber's region: "US" for +1, "GB" for +44, else none. */
static const char *
fake_region(const char *e164)
{
	if (strncmp(e164, "+1", 2) == 0)
		return "US";
	if (strncmp(e164, "+44", 3) == 0)
		return "GB";
	return "";
}

static void
check_prefix_list(const char *list, const char *e164)
{
	bool		valid = plivo_otp_valid_prefix_list(list);
	const char *region = fake_region(e164);

	if (!prefix_list_re_ready)
	{
		require(regcomp(&prefix_list_re,
						"^ *(([0-9]{1,6}|[A-Z]{2}) *(, *([0-9]{1,6}|[A-Z]{2}) *)*)?$",
						REG_EXTENDED | REG_NOSUB) == 0);
		prefix_list_re_ready = true;
	}
	require(valid == (regexec(&prefix_list_re, list, 0, NULL, 0) == 0));

	/* for a list the setting accepts, the rule is the reference's */
	if (valid)
	{
		require(plivo_otp_country_allowed(e164, region, list) ==
				reference_allowed(e164, region, list));
		require(plivo_otp_country_allowed(e164, "", list) == reference_allowed(e164, "", list));
	}
	require(plivo_otp_country_allowed(e164, region, NULL));
	(void) plivo_otp_country_allowed(e164, region, list);	/* any list: no crash */
	(void) plivo_otp_country_allowed(e164, NULL, list);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *whole = dup_bytes(data, size);
	const uint8_t *nl = memchr(data, '\n', size);
	char	   *phone = nl ? dup_bytes(data, (size_t) (nl - data)) : dup_bytes(data, size);
	char	   *list = nl ? dup_bytes(nl + 1, size - (size_t) (nl + 1 - data)) : dup_bytes(data, size);
	char		e164[PLIVO_OTP_MAX_PHONE_LEN + 1];

	check_normalize(phone);
	check_normalize(whole);
	check_mask(phone, false);
	if (plivo_otp_normalize_phone(phone, e164))
	{
		check_mask(e164, true);
		check_prefix_list(list, e164);
	}
	else
		check_prefix_list(list, phone);
	require(pg_shims_live_chunks() == 0);

	free(list);
	free(phone);
	free(whole);
	pg_shims_reset();
	return 0;
}
