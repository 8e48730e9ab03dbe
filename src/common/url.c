/*-------------------------------------------------------------------------
 *
 * url.c
 *	  The URLs that settings hold: plivo_otp.api_url and plivo_otp.public_url.
 *
 * https is required, except for loopback addresses (tests and local
 * stand-ins).  A base URL is used without its trailing slashes, so that
 * paths appended to it ("/v1/Account/...", "/plivo/sms-status") never
 * carry a double slash that the signed URL would then differ by.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "plivo_otp.h"

/* "127.x.y.z" up to the port or path, and nothing else (not "127.evil.com"). */
static bool
is_ipv4_loopback(const char *host)
{
	const char *p = host;

	if (strncmp(p, "127.", 4) != 0)
		return false;
	for (p += 4; *p && *p != ':' && *p != '/'; p++)
		if (!isdigit((unsigned char) *p) && *p != '.')
			return false;
	return true;
}

/*
 * Is url acceptable as plivo_otp.api_url or plivo_otp.public_url?  https
 * anywhere, plain http only to 127.0.0.0/8, localhost or [::1].  *why names
 * the problem in a sentence; callers say which setting it concerns.
 */
bool
plivo_otp_check_url(const char *url, bool *loopback, char **why)
{
	const char *host;

	*loopback = false;
	if (strncmp(url, "https://", 8) == 0)
		host = url + 8;
	else if (strncmp(url, "http://", 7) == 0)
		host = url + 7;
	else
	{
		*why = "The URL must start with https://.";
		return false;
	}
	/* No userinfo: "http://127.0.0.1:1@evil.example" goes to evil.example. */
	if (host[strcspn(host, "@/?#")] == '@')
	{
		*why = "The URL must not contain user information (@).";
		return false;
	}
	*loopback = is_ipv4_loopback(host) ||
		(strncmp(host, "localhost", 9) == 0 &&
		 (host[9] == ':' || host[9] == '/' || host[9] == '\0')) ||
		strncmp(host, "[::1]", 5) == 0;
	if (url[4] == ':' && !*loopback)
	{
		*why = "The URL must use https except for loopback addresses.";
		return false;
	}
	return true;
}

/* url without its trailing slashes, palloc'd in the current context. */
char *
plivo_otp_base_url(const char *url)
{
	size_t		len = strlen(url);

	while (len > 0 && url[len - 1] == '/')
		len--;
	return pnstrdup(url, len);
}
