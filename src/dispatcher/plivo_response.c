/*-------------------------------------------------------------------------
 *
 * plivo_response.c
 *	  Plivo's answers to the dispatcher's requests: the message or call
 *	  UUID of an accepted request, the error text of a refused one.
 *
 * A Send Message answer carries {"message_uuid": ["..."]}, a Make Call
 * answer {"request_uuid": "..."} (a list for several destinations), an
 * error {"error": "..."}.  Plain parsing with PostgreSQL's JSON lexer and
 * no other dependency, so that the fuzz target fuzz_send_response links
 * this file alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "dispatcher.h"

/* How deep a response may nest (Plivo's nest two levels). */
#define MAX_RESPONSE_DEPTH 16

/*
 * PostgreSQL 16 made the parser's semantic actions return a
 * JsonParseErrorType (15's return nothing).
 */
#if PG_VERSION_NUM >= 160000
#define JSON_ACTION JsonParseErrorType
#define JSON_ACTION_DONE JSON_SUCCESS
#else
#define JSON_ACTION void
#define JSON_ACTION_DONE
#endif

/* message_uuid (a Send Message answer) or request_uuid (a Make Call answer) */
static bool
is_uuid_field(const char *field)
{
	return field && (strcmp(field, "message_uuid") == 0 || strcmp(field, "request_uuid") == 0);
}

typedef struct SendResponseState
{
	int			depth;
	bool		in_uuid_array;
	char	   *field;
	char	   *uuid;
	char	   *error;
} SendResponseState;

static JSON_ACTION
response_object_start(void *state)
{
	((SendResponseState *) state)->depth++;
	return JSON_ACTION_DONE;
}

static JSON_ACTION
response_end(void *state)
{
	SendResponseState *s = state;

	s->depth--;
	s->in_uuid_array = false;
	return JSON_ACTION_DONE;
}

static JSON_ACTION
response_array_start(void *state)
{
	SendResponseState *s = state;

	s->depth++;
	s->in_uuid_array = s->depth == 2 && is_uuid_field(s->field);
	return JSON_ACTION_DONE;
}

static JSON_ACTION
response_field_start(void *state, char *fname, bool isnull)
{
	SendResponseState *s = state;

	if (s->depth == 1)
		s->field = fname;
	return JSON_ACTION_DONE;
}

static JSON_ACTION
response_scalar(void *state, char *token, JsonTokenType tokentype)
{
	SendResponseState *s = state;

	if (tokentype != JSON_TOKEN_STRING)
		return JSON_ACTION_DONE;
	if (s->depth == 1 && s->field && strcmp(s->field, "error") == 0 && s->error == NULL)
		s->error = token;
	else if (s->in_uuid_array && s->depth == 2 && s->uuid == NULL)
		s->uuid = token;
	else if (s->depth == 1 && is_uuid_field(s->field) && s->uuid == NULL)
		s->uuid = token;		/* a call's request_uuid is a bare string */
	return JSON_ACTION_DONE;
}

/*
 * Does JSON text nest no deeper than max?  Checked before parsing: the
 * parser recurses per level and raises an ERROR past max_stack_depth, and
 * an answer of Plivo's nests two levels deep.  Plain C, no ERROR.
 */
static bool
json_depth_within(const char *body, int max)
{
	int			depth = 0;
	bool		in_string = false;

	for (const char *p = body; *p; p++)
	{
		if (in_string)
		{
			if (*p == '\\' && p[1] != '\0')
				p++;
			else if (*p == '"')
				in_string = false;
		}
		else if (*p == '"')
			in_string = true;
		else if (*p == '[' || *p == '{')
		{
			if (++depth > max)
				return false;
		}
		else if (*p == ']' || *p == '}')
			depth--;
	}
	return true;
}

/*
 * Read the UUID Plivo gave (message_uuid, the first of its array, or a
 * call's request_uuid, a string or the first of an array) and error from a
 * response body.  False if the body is not JSON (or nests deeper than any
 * answer of Plivo's: MAX_RESPONSE_DEPTH).
 */
bool
plivo_otp_parse_send_response(const char *body, char **uuid, char **error)
{
	SendResponseState state = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;

	*uuid = NULL;
	*error = NULL;
	if (body == NULL || !json_depth_within(body, MAX_RESPONSE_DEPTH))
		return false;
	sem.semstate = &state;
	sem.object_start = response_object_start;
	sem.object_end = response_end;
	sem.array_start = response_array_start;
	sem.array_end = response_end;
	sem.object_field_start = response_field_start;
	sem.scalar = response_scalar;
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, body, strlen(body), PG_UTF8, true);
#else
	lex = makeJsonLexContextCstringLen(pstrdup(body), strlen(body), PG_UTF8, true);
#endif
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS)
		return false;
	*uuid = state.uuid;
	*error = state.error;
	return true;
}
