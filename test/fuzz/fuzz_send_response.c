/*-------------------------------------------------------------------------
 *
 * fuzz_send_response.c
 *	  libFuzzer target for plivo_otp_parse_send_response
 *	  (src/dispatcher/plivo_response.c): what the dispatcher reads from the
 *	  body of Plivo's answer to a Send Message request.
 *
 * plivo_response.c is compiled against the server headers and linked with
 * PostgreSQL's own JSON lexer from libpgcommon_shlib.a (the frontend build
 * of the same common/jsonapi.c the server runs; it lacks only the server's
 * stack-depth check), libpgport_shlib.a, libcurl (for the request half,
 * never called here) and pg_shims.c (palloc on malloc); escape_json, the
 * elog entry points (an ERROR traps: the parser must never raise) and
 * plivo_otp_http_free are stood in for here.  libpgcommon is not
 * instrumented: the fuzzer sees coverage of plivo_response.c's callbacks, not
 * of the lexer.
 *
 * The input is a response body.  Besides the sanitizers, the target traps
 * when:
 *	- a body that does not parse returns anything but NULL, NULL;
 *	- parsing is not repeatable (same answer twice);
 *	- a body without backslashes yields a value that is not one of its
 *	  string tokens ("value" appears in the body);
 *	- a parsed body nested one level down ({"x": BODY}, [BODY]) yields a
 *	  message UUID or an error: only top-level fields count;
 *	- {"message_uuid": [BODY]} with BODY a scalar does not yield BODY's
 *	  string value (NULL for a number, true, false, null) or with BODY an
 *	  array yields anything (BODY an object is not checked: the parser
 *	  takes that object's first string value as the UUID today, a shape
 *	  Plivo never sends);
 *	- a string s made from the input (as valid UTF-8 without NUL) does not
 *	  come back exactly from Plivo's response shapes: {"api_id", "message",
 *	  "message_uuid": [s, ...]}, the bare {"message_uuid": s}, {"error": s},
 *	  each with s escaped as escape_json does and with every character as
 *	  \uXXXX (surrogate pairs above U+FFFF);
 *	- palloc'd memory is left over that the dispatcher's loop context would
 *	  not reset (checked: everything is freed by pg_shims_reset).
 *
 * Built by run.sh with clang -fsanitize=fuzzer,address,undefined.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdint.h>
#include <stdlib.h>

#include "lib/stringinfo.h"
#include "utils/json.h"

#include "dispatcher/dispatcher.h"

#include "pg_shims.h"

/* At most this many code points of the input go into the round-trip string. */
#define FUZZ_MAX_CHARS 256

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Never called: the target builds no request. */
void
plivo_otp_http_free(HttpTransfer *transfer)
{
	__builtin_trap();
}

/*
 * utils/adt/json.c's escape_json, the same rules: the two-character escapes
 * JSON has, \u00XX for other control characters, everything else as is.
 */
void
escape_json(StringInfo buf, const char *str)
{
	appendStringInfoCharMacro(buf, '"');
	for (const char *p = str; *p; p++)
	{
		switch (*p)
		{
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			default:
				if ((unsigned char) *p < ' ')
					appendStringInfo(buf, "\\u%04x", (int) *p);
				else
					appendStringInfoCharMacro(buf, *p);
				break;
		}
	}
	appendStringInfoCharMacro(buf, '"');
}

/* elog and ereport: only ERROR and above matter here, and they must not happen. */
bool
errstart(int elevel, const char *domain)
{
	return elevel >= ERROR;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

int
errmsg_internal(const char *fmt,...)
{
	return 0;
}

int
errmsg(const char *fmt,...)
{
	return 0;
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	__builtin_trap();
}

/* Trap, so libFuzzer records the input, when an invariant does not hold. */
static void
require(bool ok)
{
	if (!ok)
		__builtin_trap();
}

static bool
same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool
parse(const char *body, char **uuid, char **error)
{
	bool		ok = plivo_otp_parse_send_response(body, uuid, error);

	if (!ok)
		require(*uuid == NULL && *error == NULL);
	return ok;
}

/* "value" occurs in body (for bodies without escapes, every string token does). */
static void
require_token_of(const char *body, const char *value)
{
	StringInfoData quoted;

	if (value == NULL)
		return;
	initStringInfo(&quoted);
	appendStringInfo(&quoted, "\"%s\"", value);
	require(strstr(body, quoted.data) != NULL);
	pfree(quoted.data);
}

static void
check_body(const char *body)
{
	char	   *uuid;
	char	   *error;
	char	   *uuid2;
	char	   *error2;
	bool		ok = parse(body, &uuid, &error);
	StringInfoData wrapped;

	require(parse(body, &uuid2, &error2) == ok);
	require(same(uuid, uuid2) && same(error, error2));
	if (!ok)
		return;
	if (strchr(body, '\\') == NULL)
	{
		require_token_of(body, uuid);
		require_token_of(body, error);
	}

	/* one level down, nothing counts */
	initStringInfo(&wrapped);
	appendStringInfo(&wrapped, "{\"x\": %s}", body);
	require(parse(wrapped.data, &uuid2, &error2));
	require(uuid2 == NULL && error2 == NULL);
	resetStringInfo(&wrapped);
	appendStringInfo(&wrapped, "[%s]", body);
	require(parse(wrapped.data, &uuid2, &error2));
	require(uuid2 == NULL && error2 == NULL);

	/* as the first element of message_uuid */
	resetStringInfo(&wrapped);
	appendStringInfo(&wrapped, "{\"message_uuid\": [%s]}", body);
	require(parse(wrapped.data, &uuid2, &error2));
	require(error2 == NULL);
	{
		const char *v = body + strspn(body, " \t\r\n");

		if (*v == '"')
		{
			char	   *alone;
			char	   *unused;
			StringInfoData obj;

			/* a string: its value, as {"error": BODY} reads it */
			initStringInfo(&obj);
			appendStringInfo(&obj, "{\"error\": %s}", body);
			require(parse(obj.data, &unused, &alone));
			require(unused == NULL && same(uuid2, alone));
			pfree(obj.data);
		}
		else if (*v == '[')
			require(uuid2 == NULL);
		else if (*v != '{')
			require(uuid2 == NULL);	/* number, true, false, null */
	}
	pfree(wrapped.data);
}

/* Code points from the input as UTF-8, invalid bytes, NUL and surrogates as U+FFFD. */
static int
decode_utf8(const uint8_t *data, size_t size, uint32_t *cps, int max)
{
	int			n = 0;
	size_t		i = 0;

	while (i < size && n < max)
	{
		uint8_t		c = data[i];
		int			len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 :
			(c & 0xF8) == 0xF0 ? 4 : 0;
		uint32_t	cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
		bool		good = len > 0 && i + len <= size;

		for (int k = 1; good && k < len; k++)
		{
			good = (data[i + k] & 0xC0) == 0x80;
			cp = (cp << 6) | (data[i + k] & 0x3F);
		}
		if (good)
			good = !((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
					 (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
					 (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0);
		cps[n++] = good ? cp : 0xFFFD;
		i += good ? (size_t) len : 1;
	}
	return n;
}

static void
append_utf8(StringInfo buf, uint32_t cp)
{
	if (cp < 0x80)
		appendStringInfoChar(buf, (char) cp);
	else if (cp < 0x800)
	{
		appendStringInfoChar(buf, (char) (0xC0 | (cp >> 6)));
		appendStringInfoChar(buf, (char) (0x80 | (cp & 0x3F)));
	}
	else if (cp < 0x10000)
	{
		appendStringInfoChar(buf, (char) (0xE0 | (cp >> 12)));
		appendStringInfoChar(buf, (char) (0x80 | ((cp >> 6) & 0x3F)));
		appendStringInfoChar(buf, (char) (0x80 | (cp & 0x3F)));
	}
	else
	{
		appendStringInfoChar(buf, (char) (0xF0 | (cp >> 18)));
		appendStringInfoChar(buf, (char) (0x80 | ((cp >> 12) & 0x3F)));
		appendStringInfoChar(buf, (char) (0x80 | ((cp >> 6) & 0x3F)));
		appendStringInfoChar(buf, (char) (0x80 | (cp & 0x3F)));
	}
}

/* s as a JSON string with every character written \uXXXX. */
static void
append_u_escaped(StringInfo buf, const uint32_t *cps, int n)
{
	appendStringInfoChar(buf, '"');
	for (int i = 0; i < n; i++)
	{
		uint32_t	cp = cps[i];

		if (cp >= 0x10000)
			appendStringInfo(buf, "\\u%04X\\u%04x", 0xD800 + ((cp - 0x10000) >> 10),
							 0xDC00 + ((cp - 0x10000) & 0x3FF));
		else
			appendStringInfo(buf, "\\u%04x", cp);
	}
	appendStringInfoChar(buf, '"');
}

static void
require_parses_to(const char *body, const char *uuid, const char *error)
{
	char	   *u;
	char	   *e;

	require(parse(body, &u, &e));
	require(same(u, uuid) && same(e, error));
}

/* Plivo's response shapes, with s in them, give s back exactly. */
static void
check_round_trip(const uint8_t *data, size_t size)
{
	uint32_t	cps[FUZZ_MAX_CHARS];
	int			n = decode_utf8(data, size, cps, FUZZ_MAX_CHARS);
	StringInfoData s;
	StringInfoData esc;
	StringInfoData uesc;
	StringInfoData body;

	initStringInfo(&s);
	for (int i = 0; i < n; i++)
		append_utf8(&s, cps[i]);
	initStringInfo(&esc);
	escape_json(&esc, s.data);
	initStringInfo(&uesc);
	append_u_escaped(&uesc, cps, n);
	initStringInfo(&body);

	for (int form = 0; form < 2; form++)
	{
		const char *v = form == 0 ? esc.data : uesc.data;

		resetStringInfo(&body);
		appendStringInfo(&body,
						 "{\"api_id\": \"db342550-e1b9-11e5-a5d9-0242ac110003\", "
						 "\"message\": \"message(s) queued\", \"message_uuid\": [%s, \"%s\"]}",
						 v, "0936ec98-7c4c-11e4-9bd8-22000afa12b9");
		require_parses_to(body.data, s.data, NULL);

		resetStringInfo(&body);
		appendStringInfo(&body, "{\"message_uuid\": %s}", v);
		require_parses_to(body.data, s.data, NULL);

		resetStringInfo(&body);
		appendStringInfo(&body, "{\"api_id\": \"x\", \"error\": %s}", v);
		require_parses_to(body.data, NULL, s.data);

		resetStringInfo(&body);
		appendStringInfo(&body, "{\"error\": %s, \"message_uuid\": [%s], \"error\": \"later\"}",
						 v, v);
		require_parses_to(body.data, s.data, s.data);
	}
	pfree(s.data);
	pfree(esc.data);
	pfree(uesc.data);
	pfree(body.data);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *body = malloc(size + 1);
	char	   *uuid = (char *) 1;
	char	   *error = (char *) 1;

	require(body != NULL);
	if (size > 0)
		memcpy(body, data, size);
	body[size] = '\0';

	require(!plivo_otp_parse_send_response(NULL, &uuid, &error));
	require(uuid == NULL && error == NULL);
	check_body(body);
	check_round_trip(data, size);

	free(body);
	pg_shims_reset();
	return 0;
}
