/*-------------------------------------------------------------------------
 *
 * segments.c
 *	  How Plivo counts an SMS text: its encoding (GSM-7 or UCS-2) and the
 *	  number of segments it is billed as.
 *
 * GSM-7 (3GPP TS 23.038): a text made only of the basic table's characters,
 * and of the extension table's (form feed ^ { } \ [ ~ ] | and the euro
 * sign, each sent as an escape and a septet, so counted as two), is sent
 * in GSM-7: 160 septets in one segment, 153 per segment when it is split.
 * Any other character makes the whole text UCS-2: 70 UTF-16 units in one
 * segment, 67 per segment when split; a character outside the Basic
 * Multilingual Plane takes two units.  Used at queue time (the counts are
 * recorded on the message) and when a template is checked.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "plivo_otp.h"

/* The GSM 03.38 basic table beyond printable ASCII, as Unicode code points. */
static const pg_wchar gsm_basic_extra[] = {
	0x00A3, 0x00A5, 0x00E8, 0x00E9, 0x00F9, 0x00EC, 0x00F2, 0x00C7, 0x00D8,
	0x00F8, 0x00C5, 0x00E5, 0x0394, 0x03A6, 0x0393, 0x039B, 0x03A9, 0x03A0,
	0x03A8, 0x03A3, 0x0398, 0x039E, 0x00C6, 0x00E6, 0x00DF, 0x00C9, 0x00A4,
	0x00A1, 0x00C4, 0x00D6, 0x00D1, 0x00DC, 0x00A7, 0x00BF, 0x00E4, 0x00F6,
	0x00F1, 0x00FC, 0x00E0
};

/* Septets c takes in GSM-7: 1 (basic table), 2 (extension table) or 0 (none). */
static int
gsm_septets(pg_wchar c)
{
	if (c == '\n' || c == '\r')
		return 1;
	if (c == '\f' || c == '^' || c == '{' || c == '}' || c == '\\' ||
		c == '[' || c == '~' || c == ']' || c == '|' || c == 0x20AC)
		return 2;
	/* The rest of printable ASCII is in the basic table, but for the backquote. */
	if (c >= 0x20 && c < 0x7F && c != '`')
		return 1;
	for (int i = 0; i < lengthof(gsm_basic_extra); i++)
		if (gsm_basic_extra[i] == c)
			return 1;
	return 0;
}

/* The encoding and segments of text (in the server encoding) into *out. */
void
plivo_otp_sms_segments(const char *text, PlivoOtpSmsSegments *out)
{
	int			len = strlen(text);
	const unsigned char *utf8 = (const unsigned char *) pg_server_to_any(text, len, PG_UTF8);
	const unsigned char *end;
	int			septets = 0;
	int			utf16 = 0;
	bool		gsm = true;

	len = strlen((const char *) utf8);
	end = utf8 + len;
	for (const unsigned char *p = utf8; p < end;)
	{
		int			n = pg_utf_mblen(p);
		pg_wchar	c = p + n <= end ? utf8_to_unicode(p) : 0xFFFD;
		int			s = gsm_septets(c);

		if (s == 0)
			gsm = false;
		septets += s;
		utf16 += c > 0xFFFF ? 2 : 1;
		p += n;
	}
	out->ucs2 = !gsm;
	out->characters = gsm ? septets : utf16;
	if (gsm)
		out->segments = septets <= 160 ? 1 : (septets + 152) / 153;
	else
		out->segments = utf16 <= 70 ? 1 : (utf16 + 66) / 67;
	if ((const char *) utf8 != text)
		pfree((void *) utf8);
}
