/*-------------------------------------------------------------------------
 *
 * signature.h
 *	  Plivo webhook signatures (V2 and V3) and form-body parsing.
 *
 * This module is plain C99 on top of OpenSSL's libcrypto and makes no
 * server calls (no palloc, no ereport), so the libFuzzer target and the unit
 * driver under test/fuzz/ link it without a server.  It allocates with
 * malloc and frees everything it allocates before returning, except the
 * storage block of plivo_otp_parse_form, which the caller owns.  None of the
 * functions keeps state, so they are safe to call from any process.
 *
 * All strings are NUL-terminated bytes, normally UTF-8; they are signed as
 * the bytes they are, with no normalisation.  The algorithms follow the
 * plivo-python and plivo-node SDKs (see plivo-api.md section 3):
 *
 *	V2: Base64(HMAC-SHA256(token, base + nonce))
 *	V3: Base64(HMAC-SHA256(token, base + query-and-params + "." + nonce))
 *
 * where base is scheme://host[:port]/path of the URL with its query and
 * fragment dropped, the scheme folded to lower case, and host, port and path
 * kept exactly as written.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_SIGNATURE_H
#define PLIVO_OTP_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>

/* A signature is 44 Base64 characters; buffers hold them and a NUL. */
#define PLIVO_OTP_SIG_LEN		44
#define PLIVO_OTP_SIG_BUFSIZE	(PLIVO_OTP_SIG_LEN + 1)

/* One request parameter, decoded, as NUL-terminated (UTF-8) strings. */
typedef struct PlivoParam
{
	const char *key;
	const char *value;
} PlivoParam;

/* Outcome of checking a signature header against the request. */
typedef enum PlivoSigResult
{
	PLIVO_SIG_VALID = 0,
	PLIVO_SIG_MISSING,			/* no signature header of the family (NULL, or
								 * only blanks and commas) */
	PLIVO_SIG_MISMATCH,			/* present but no listed signature matches */
	PLIVO_SIG_MALFORMED,		/* URL or inputs cannot be processed (e.g. no
								 * scheme://host, NULL nonce, empty token) */
	PLIVO_SIG_ERROR				/* out of memory or a libcrypto failure: the
								 * request could not be checked */
} PlivoSigResult;

/*
 * V2 signature of url (scheme://host[:port]/path; query and fragment are
 * dropped) followed by nonce, keyed with token, written to out as 44 Base64
 * characters and a NUL.  Returns false, leaving out an empty string, when
 * the URL is malformed (no scheme://host, control characters or spaces), the
 * token is empty, an argument is NULL, or memory runs out.
 */
extern bool plivo_otp_sign_v2(const char *url, const char *nonce,
							  const char *token,
							  char out[PLIVO_OTP_SIG_BUFSIZE]);

/*
 * V3 signature.  method is "GET" or "POST" exactly (anything else: false).
 * url is the callback URL as configured: its query is percent-decoded ('+'
 * as space) into pairs, its fragment is dropped.  params are the request's
 * decoded parameters (POST: the form fields; GET: Plivo's query parameters),
 * nparams of them; params may be NULL when nparams is 0.
 *
 * Pairs are sorted by key, then by value, comparing raw bytes.
 *	GET:  the URL's pairs and params together (a key present in both is
 *		  listed twice, as plivo-node does), written "?k=v&k=v" if any.
 *		  Passing the full request URL with no params gives the same result
 *		  as the configured URL with Plivo's parameters.
 *	POST: with params, "?", then the URL's pairs as "k=v&k=v." if it has any,
 *		  then every param as key immediately followed by value; without
 *		  params, "?k=v&k=v" of the URL's pairs if it has any.
 * Then "." and nonce.
 *
 * Returns false, leaving out an empty string, on a malformed URL (as for V2,
 * or a bad %-escape or a %00 in its query), a NULL param, nparams < 0, an
 * empty token, or when memory runs out.
 */
extern bool plivo_otp_sign_v3(const char *method, const char *url,
							  const PlivoParam *params, int nparams,
							  const char *nonce, const char *token,
							  char out[PLIVO_OTP_SIG_BUFSIZE]);

/*
 * Check a signature header value, which may list several signatures
 * separated by commas (spaces and tabs around each are ignored).  Valid if
 * any of them equals the computed signature; each comparison is constant
 * time (CRYPTO_memcmp).  A NULL or blank header gives PLIVO_SIG_MISSING,
 * whatever the other inputs; a NULL nonce gives PLIVO_SIG_MALFORMED.
 * Treat anything but PLIVO_SIG_VALID as a rejection.
 */
extern PlivoSigResult plivo_otp_check_v2(const char *url, const char *nonce,
										 const char *header_value,
										 const char *token);
extern PlivoSigResult plivo_otp_check_v3(const char *method, const char *url,
										 const PlivoParam *params, int nparams,
										 const char *nonce,
										 const char *header_value,
										 const char *token);

/*
 * Parse an application/x-www-form-urlencoded body, or a query string without
 * its '?', of len bytes into params (room for max_params entries).  Pairs
 * are separated by '&'; empty pieces are skipped; a piece without '=' is a
 * key with an empty value; '+' decodes to a space and %XX to its byte.
 *
 * Returns the number of params, in input order, or -1 if the input is
 * malformed (bad %-escape, a NUL byte in the input or after decoding, more
 * than max_params pairs), or -2 if memory runs out.  The decoded strings live
 * in one malloc'd block returned in *storage, which the caller frees with
 * free(); *storage is NULL on failure and when there are no params, so
 * free(*storage) is always safe.
 */
extern int	plivo_otp_parse_form(const char *data, size_t len,
								 PlivoParam *params, int max_params,
								 char **storage);

#endif							/* PLIVO_OTP_SIGNATURE_H */
