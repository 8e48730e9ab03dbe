/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  Every plivo_otp.* setting: definition, bounds, units and check hooks.
 *
 * Contexts are chosen so that an application role can never change policy:
 * server-wide settings are PGC_POSTMASTER or PGC_SIGHUP (set in
 * postgresql.conf, reloaded), policy and template settings are PGC_SUSET
 * (only a superuser, or a role granted SET on the parameter, may change them
 * for a session).  No setting holds a secret: the auth token and the key
 * live in files that settings only name, because a setting's value reaches
 * pg_settings for pg_read_all_settings members, the reload log line and
 * postgresql.auto.conf.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <limits.h>

#include "miscadmin.h"
#include "utils/guc.h"

#include "plivo_otp.h"

char	   *plivo_otp_database = NULL;
char	   *plivo_otp_key_file = NULL;
char	   *plivo_otp_auth_id = NULL;
char	   *plivo_otp_auth_token_file = NULL;
char	   *plivo_otp_sender = NULL;
char	   *plivo_otp_api_url = NULL;
char	   *plivo_otp_public_url = NULL;
char	   *plivo_otp_sms_template = NULL;
char	   *plivo_otp_voice_template = NULL;
char	   *plivo_otp_app_name = NULL;
int			plivo_otp_max_segments = 1;
char	   *plivo_otp_voice_sender = NULL;
char	   *plivo_otp_voice_language = NULL;
char	   *plivo_otp_voice_name = NULL;
int			plivo_otp_voice_loop = 2;
int			plivo_otp_max_calls_per_second = 2;
bool		plivo_otp_voice_machine_detection = true;
int			plivo_otp_ring_timeout = 30;
int			plivo_otp_call_time_limit = 60;
int			plivo_otp_voice_fallback_after = 0;
char	   *plivo_otp_allowed_countries = NULL;
bool		plivo_otp_allow_sms_to_fixed_line = false;
char	   *plivo_otp_message_log = NULL;
int			plivo_otp_code_length = 6;
int			plivo_otp_code_ttl = 600;
int			plivo_otp_max_attempts = 5;
int			plivo_otp_resend_interval = 30;
int			plivo_otp_number_max_sends = 5;
int			plivo_otp_number_window = 3600;
int			plivo_otp_global_max_sends_per_hour = 1000;
int			plivo_otp_send_lock_timeout = 5000;
int			plivo_otp_caller_max_sends = 10;
int			plivo_otp_caller_window = 3600;
int			plivo_otp_max_live_codes = 100000;
int			plivo_otp_max_inflight = 256;
int			plivo_otp_max_requests_per_second = 5;
int			plivo_otp_request_timeout = 10000;
int			plivo_otp_retention = 7 * 24 * 3600;
int			plivo_otp_redact_after = 0;
bool		plivo_otp_events = true;
char	   *plivo_otp_listen_address = NULL;
int			plivo_otp_listen_port = 0;
int			plivo_otp_listen_max_connections = 200;
int			plivo_otp_listen_max_connections_per_address = 50;

/* NIST SP 800-63B caps out-of-band authentication codes at 10 minutes. */
#define NIST_OOB_CODE_TTL 600

static bool
check_code_ttl(int *newval, void **extra, GucSource source)
{
	/*
	 * Warn where someone will read it: in the server log when the
	 * postmaster reads the file, and to the superuser who SETs it.
	 */
	if (*newval > NIST_OOB_CODE_TTL &&
		(!IsUnderPostmaster || source >= PGC_S_CLIENT))
		ereport(WARNING,
				(errmsg("plivo_otp.code_ttl of %d s is longer than 10 minutes", *newval),
				 errdetail("NIST SP 800-63B limits out-of-band authentication codes to 10 minutes."),
				 errhint("Longer-lived codes give an attacker more time to guess or intercept them.")));
	return true;
}

/* The checks of a template in plivo_otp.templates (common/templates.c), and 1000 bytes at most. */
static bool
check_template_text(const char *channel, char **newval)
{
	char	   *detail;

	if (*newval == NULL)
		return false;
	if (strlen(*newval) > 1000)
	{
		GUC_check_errdetail("The template may be at most 1000 bytes long.");
		return false;
	}
	if (plivo_otp_check_template(channel, *newval, &detail) != PLIVO_OTP_TEMPLATE_OK)
	{
		GUC_check_errdetail("%s", detail);
		return false;
	}
	return true;
}

static bool
check_sms_template(char **newval, void **extra, GucSource source)
{
	return check_template_text("sms", newval);
}

static bool
check_voice_template(char **newval, void **extra, GucSource source)
{
	return check_template_text("voice", newval);
}

static bool
check_app_name(char **newval, void **extra, GucSource source)
{
	if (*newval != NULL && strlen(*newval) > 40)
	{
		GUC_check_errdetail("The application name may be at most 40 bytes long.");
		return false;
	}
	return true;
}

/* A Speak voice Plivo accepts: WOMAN, MAN or an Amazon Polly voice (Polly.Name). */
bool
plivo_otp_valid_voice_name(const char *v)
{
	if (v != NULL && (strcmp(v, "WOMAN") == 0 || strcmp(v, "MAN") == 0))
		return true;
	if (v != NULL && strncmp(v, "Polly.", 6) == 0 && v[6] != '\0' && strlen(v) <= 40)
	{
		for (const char *p = v + 6; *p; p++)
			if (!isalnum((unsigned char) *p) && *p != '-')
				return false;
		return true;
	}
	return false;
}

static bool
check_voice_name(char **newval, void **extra, GucSource source)
{
	if (plivo_otp_valid_voice_name(*newval))
		return true;
	GUC_check_errdetail("Give WOMAN, MAN or an Amazon Polly voice such as Polly.Joanna.");
	return false;
}

/* A language tag such as en-US or fr-FR (letters, digits and hyphens). */
bool
plivo_otp_valid_voice_language(const char *v)
{
	int			n = 0;

	for (const char *p = v ? v : ""; *p; p++, n++)
		if (!isalnum((unsigned char) *p) && *p != '-')
			n = 100;
	return n >= 2 && n <= 20;
}

static bool
check_voice_language(char **newval, void **extra, GucSource source)
{
	if (plivo_otp_valid_voice_language(*newval))
		return true;
	GUC_check_errdetail("Give a language tag such as en-US, en-GB or fr-FR.");
	return false;
}

/* Empty, or a number a call can come from: country code and number, '+' optional. */
static bool
check_voice_sender(char **newval, void **extra, GucSource source)
{
	const char *v = *newval ? *newval : "";
	const char *hint;

	if (v[0] == '\0')
		return true;
	if (plivo_otp_sender_problem("voice", v, &hint) != NULL)
	{
		GUC_check_errdetail("A call is placed from a number: give it with its country code, such as +14155550100.");
		return false;
	}
	return true;
}

static bool
check_allowed_countries(char **newval, void **extra, GucSource source)
{
	const char *p;

	if (*newval == NULL)
		return true;
	if (!plivo_otp_valid_prefix_list(*newval))
	{
		GUC_check_errdetail("Give calling-code prefixes of 1 to 6 digits or ISO region codes of two upper-case letters, separated by commas, such as \"1,44,1876\" or \"US,CA,GB\".");
		return false;
	}
	/* The grammar holds: every two-letter item must be a region libphonenumber knows. */
	for (p = *newval; *p; p++)
	{
		char		region[3];

		if (!isupper((unsigned char) *p))
			continue;
		region[0] = p[0];
		region[1] = p[1];
		region[2] = '\0';
		if (!plivo_otp_region_known(region))
		{
			GUC_check_errdetail("\"%s\" is not an ISO 3166-1 region code that has phone numbers.", region);
			GUC_check_errhint("Use the ISO code, such as GB for the United Kingdom, or a calling-code prefix such as 44.");
			return false;
		}
		p++;
	}
	return true;
}

static bool
check_message_log(char **newval, void **extra, GucSource source)
{
	static const char *const allowed[] = {"false", "true", "number_only", "content_only"};

	for (int i = 0; i < lengthof(allowed); i++)
		if (*newval != NULL && strcmp(*newval, allowed[i]) == 0)
			return true;
	GUC_check_errdetail("Allowed values are false, true, number_only and content_only.");
	return false;
}

static bool
check_api_url_setting(char **newval, void **extra, GucSource source)
{
	bool		loopback;
	char	   *why = NULL;

	if (*newval == NULL || !plivo_otp_check_url(*newval, &loopback, &why))
	{
		GUC_check_errdetail("%s", why ? why : "A URL is required.");
		return false;
	}
	return true;
}

/* The public URL is also a base URL: no query or fragment. */
static bool
check_public_url_setting(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (strpbrk(*newval, "?#") != NULL)
	{
		GUC_check_errdetail("The public URL is a base URL: no query or fragment.");
		return false;
	}
	/* Plivo calls it over the internet: https, unless it is a local test. */
	return check_api_url_setting(newval, extra, source);
}

static bool
check_auth_id(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;

	if (p == NULL || *p == '\0')
		return true;
	/* Plivo Auth IDs: MA or SA followed by 18 upper-case letters or digits. */
	if (strlen(p) != 20 || (p[0] != 'M' && p[0] != 'S') || p[1] != 'A')
	{
		GUC_check_errdetail("A Plivo Auth ID is 20 characters starting with MA or SA.");
		return false;
	}
	for (p += 2; *p; p++)
		if (!isdigit((unsigned char) *p) && !(*p >= 'A' && *p <= 'Z'))
		{
			GUC_check_errdetail("A Plivo Auth ID holds only upper-case letters and digits.");
			return false;
		}
	return true;
}

void
plivo_otp_define_settings(void)
{
	/* Where things are: fixed at server start. */
	DefineCustomStringVariable("plivo_otp.database",
							   "Database in which the plivo_otp workers run.",
							   "The extension must be created in this database.",
							   &plivo_otp_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.key_file",
							   "File holding the secret key for code digests and queue encryption.",
							   "Relative paths are taken from the data directory. Created at first start on a primary.",
							   &plivo_otp_key_file, "plivo_otp.key",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.max_live_codes",
							"Capacity of the shared failed-attempt ledger.",
							"Verifications are refused, not left uncounted, when it is full of live codes.",
							&plivo_otp_max_live_codes, 100000, 100, 10000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);

	DefineCustomStringVariable("plivo_otp.listen_address",
							   "Address on which the webhook listener accepts Plivo's callbacks.",
							   "Put it behind a TLS-terminating reverse proxy; see plivo_otp.public_url.",
							   &plivo_otp_listen_address, "127.0.0.1",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.listen_port",
							"TCP port of the webhook listener; 0 (the default) starts no listener.",
							NULL, &plivo_otp_listen_port, 0, 0, 65535,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.listen_max_connections",
							"Maximum concurrent connections to the webhook listener.",
							NULL, &plivo_otp_listen_max_connections, 200, 4, 10000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.listen_max_connections_per_address",
							"Maximum concurrent listener connections from one client address.",
							"Behind a reverse proxy every connection comes from the proxy: raise it, or 0 for no limit.",
							&plivo_otp_listen_max_connections_per_address, 50, 0, 10000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);

	/* Credentials and endpoints: reloadable, read by the workers. */
	DefineCustomStringVariable("plivo_otp.auth_id",
							   "Plivo Auth ID (not secret; the token is in auth_token_file).",
							   NULL, &plivo_otp_auth_id, "",
							   PGC_SIGHUP, 0, check_auth_id, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.auth_token_file",
							   "File holding the Plivo Auth Token.",
							   "Relative paths are taken from the data directory.",
							   &plivo_otp_auth_token_file, "plivo_otp.token",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.sender",
							   "Source number or sender ID of messages and calls.",
							   NULL, &plivo_otp_sender, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.api_url",
							   "Base URL of Plivo's REST API.",
							   "https is required except for loopback addresses.",
							   &plivo_otp_api_url, "https://api.plivo.com",
							   PGC_SIGHUP, 0, check_api_url_setting, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.public_url",
							   "Base URL at which Plivo reaches the webhook listener.",
							   "Used in callback URLs and for signature checks; empty means no callbacks are requested.",
							   &plivo_otp_public_url, "",
							   PGC_SIGHUP, 0, check_public_url_setting, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.message_log",
							   "Plivo's log setting for sent messages.",
							   "false (default) keeps no content at Plivo.",
							   &plivo_otp_message_log, "false",
							   PGC_SIGHUP, 0, check_message_log, NULL, NULL);

	/* Voice calls: how they are placed and what they say. */
	DefineCustomStringVariable("plivo_otp.voice_sender",
							   "Number calls are placed from.",
							   "Empty uses plivo_otp.sender when it is a number; a call cannot come from a sender ID.",
							   &plivo_otp_voice_sender, "",
							   PGC_SIGHUP, 0, check_voice_sender, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.voice_language",
							   "Language of the spoken code (Plivo Speak language).",
							   NULL, &plivo_otp_voice_language, "en-US",
							   PGC_SIGHUP, 0, check_voice_language, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.voice_name",
							   "Voice that speaks the code: WOMAN, MAN or Polly.<Name>.",
							   NULL, &plivo_otp_voice_name, "WOMAN",
							   PGC_SIGHUP, 0, check_voice_name, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.voice_loop",
							"How many times a call repeats the spoken code.", NULL,
							&plivo_otp_voice_loop, 2, 1, 10,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.max_calls_per_second",
							"Maximum calls placed per second (they share max_inflight with messages).",
							"Plivo's default is 2 calls per second per account.",
							&plivo_otp_max_calls_per_second, 2, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("plivo_otp.voice_machine_detection",
							 "Hang up when an answering machine picks up, so no code is left on voicemail.",
							 NULL, &plivo_otp_voice_machine_detection, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.ring_timeout",
							"How long a call rings before it is given up.", NULL,
							&plivo_otp_ring_timeout, 30, 5, 120,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.call_time_limit",
							"Longest a call may last once answered.", NULL,
							&plivo_otp_call_time_limit, 60, 10, 600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.voice_fallback_after",
							"Call with the same code when its SMS failed, or was not delivered within this long; 0 turns fallback off.",
							"Each fallback is a paid call, and NIST SP 800-63B treats PSTN delivery as restricted.",
							&plivo_otp_voice_fallback_after, 0, 0, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	/* Dispatch. */
	DefineCustomIntVariable("plivo_otp.max_inflight",
							"Maximum concurrent requests to Plivo.",
							"Fewer while Plivo does not answer: the window drops to one and grows back with each answer.",
							&plivo_otp_max_inflight, 256, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.max_requests_per_second",
							"Maximum requests per second to Plivo.",
							"Plivo's default SMS throughput is 5 per second per account.",
							&plivo_otp_max_requests_per_second, 5, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.request_timeout",
							"Timeout of one request to Plivo.", NULL,
							&plivo_otp_request_timeout, 10000, 100, 120000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.retention",
							"How long finished verifications and their messages are kept.", NULL,
							&plivo_otp_retention, 7 * 24 * 3600, 3600, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.redact_after",
							"How long finished verifications and messages keep the full phone number; 0 keeps it until they are purged.",
							"Older finished rows get the masked number (as otp_status shows it); never sooner than plivo_otp.number_window and resend_interval, so the per-number limits still count them.",
							&plivo_otp_redact_after, 0, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomBoolVariable("plivo_otp.events",
							 "Send NOTIFY plivo_otp_events when a message or a code changes state.",
							 "Off: no notification (PostgreSQL serialises the commits of notifying transactions).",
							 &plivo_otp_events, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	/* Policy and templates: superuser-only, so an application cannot SET past them. */
	DefineCustomIntVariable("plivo_otp.code_length",
							"Number of digits in a code.", NULL,
							&plivo_otp_code_length, 6, 4, PLIVO_OTP_MAX_CODE_LEN,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.code_ttl",
							"How long a code can be verified.",
							"NIST SP 800-63B caps out-of-band codes at 10 minutes; longer values are warned about.",
							&plivo_otp_code_ttl, 600, 30, 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, check_code_ttl, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.max_attempts",
							"Verification attempts allowed per code.", NULL,
							&plivo_otp_max_attempts, 5, 1, 100,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.resend_interval",
							"Minimum time between two codes sent to one number.", NULL,
							&plivo_otp_resend_interval, 30, 0, 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.number_max_sends",
							"Maximum codes sent to one number within plivo_otp.number_window.",
							"0 disables the cap.",
							&plivo_otp_number_max_sends, 5, 0, 100000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.number_window",
							"Window of plivo_otp.number_max_sends.", NULL,
							&plivo_otp_number_window, 3600, 60, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.global_max_sends_per_hour",
							"Maximum codes sent per hour by the whole server.",
							"0 disables the cap.",
							&plivo_otp_global_max_sends_per_hour, 1000, 0, 100000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.send_lock_timeout",
							"How long otp_send waits for another send to the same number or key.",
							"A send that cannot take its turn by then fails with SQLSTATE 55P03.",
							&plivo_otp_send_lock_timeout, 5000, 10, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.caller_max_sends",
							"Maximum codes sent for one caller key within plivo_otp.caller_window.",
							"A caller key is otp_send's caller_key argument, such as a client address or an account id; 0 disables the cap.",
							&plivo_otp_caller_max_sends, 10, 0, 100000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.caller_window",
							"Window of plivo_otp.caller_max_sends.", NULL,
							&plivo_otp_caller_window, 3600, 60, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.allowed_countries",
							   "Calling-code prefixes and ISO region codes that may receive codes, comma-separated.",
							   "Empty allows every number. Give prefixes such as 1, 44 or 1876, or regions such as US, CA or GB (the number's region as libphonenumber tells it; +1876 is JM, not US).",
							   &plivo_otp_allowed_countries, "",
							   PGC_SUSET, 0, check_allowed_countries, NULL, NULL);
	DefineCustomBoolVariable("plivo_otp.allow_sms_to_fixed_line",
							 "Send SMS codes to numbers libphonenumber knows to be fixed lines.",
							 "Off: otp_send and otp_resend refuse channel sms to a fixed-line number (the SMS would be billed and never arrive) and hint at voice.",
							 &plivo_otp_allow_sms_to_fixed_line, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.app_name",
							   "Name of the application, put in the texts by the placeholder {app}.",
							   "Empty (the default) puts nothing in its place.",
							   &plivo_otp_app_name, "",
							   PGC_SUSET, 0, check_app_name, NULL, NULL);
	DefineCustomIntVariable("plivo_otp.max_segments",
							"Most SMS segments a template may render to; each segment is billed.",
							"Checked when a template is stored in plivo_otp.templates or set in plivo_otp.sms_template.",
							&plivo_otp_max_segments, 1, 1, 10,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.sms_template",
							   "Text of the SMS when plivo_otp.templates has none; {code} is replaced by the code, {minutes} by its lifetime, {app} by plivo_otp.app_name.",
							   NULL, &plivo_otp_sms_template,
							   "Your verification code is {code}. It expires in {minutes} minutes.",
							   PGC_SUSET, 0, check_sms_template, NULL, NULL);
	DefineCustomStringVariable("plivo_otp.voice_template",
							   "Sentence a call speaks when plivo_otp.templates has none; {code} is replaced by the code read digit by digit, {minutes} by its lifetime, {app} by plivo_otp.app_name.",
							   NULL, &plivo_otp_voice_template,
							   "Your verification code is {code}.",
							   PGC_SUSET, 0, check_voice_template, NULL, NULL);

	MarkGUCPrefixReserved("plivo_otp");
}
