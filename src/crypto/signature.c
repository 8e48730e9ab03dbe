/*-------------------------------------------------------------------------
 *
 * signature.c
 *	  Plivo webhook signatures (V2 and V3) and form-body parsing.
 *
 * The signed strings are built exactly as plivo-api.md section 3 describes
 * them (reference: plivo-python signature_v3.py and plivo-node
 * v3Security.js), then keyed with HMAC-SHA256 and Base64-encoded.  Header
 * values are compared in constant time.
 *
 * This file must stay free of server calls (palloc, ereport, elog...): the
 * libFuzzer target and the unit driver in test/fuzz/ link it on its own, and
 * the listener calls it from a background worker.  Memory comes from malloc
 * and every exit path frees what it took; strings are assembled in a SigBuf,
 * which checks every size computation for overflow, so arbitrarily long
 * inputs fail cleanly instead of wrapping around.
 *
 * Where the SDKs disagree, the choices made here are: the scheme is folded
 * to lower case (python, go) while host, port and path stay as written;
 * a GET key present both in the URL and in the params is listed twice (node;
 * python keeps only the URL's); a bad %-escape or %00 in the URL's query
 * makes the URL malformed (python keeps the text, node throws); control
 * characters and spaces anywhere in the URL make it malformed (python would
 * strip some of them silently).
 *
 *-------------------------------------------------------------------------
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "signature.h"

/* Length of an HMAC-SHA256 digest. */
#define SIG_DIGEST_LEN	32

/* First allocation of a SigBuf; it doubles from there. */
#define SIG_BUF_INITIAL 256

/*
 * A growable string.  After a failed allocation or a size overflow, failed
 * is set and further appends do nothing, so callers check once at the end.
 */
typedef struct SigBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		failed;
} SigBuf;

/*
 * The parts of a URL the signatures need: scheme, then host[:port] and path
 * as one run of bytes, then the query (without '?'), all pointing into the
 * caller's string.
 */
typedef struct SigUrl
{
	const char *scheme;
	size_t		scheme_len;
	const char *hostpath;		/* after "://", up to '?', '#' or the end */
	size_t		hostpath_len;
	const char *query;			/* after '?', up to '#' or the end */
	size_t		query_len;
} SigUrl;

static void sigbuf_append(SigBuf *buf, const char *s, size_t n);
static void sigbuf_append_str(SigBuf *buf, const char *s);
static bool parse_url(const char *url, SigUrl *u);
static void append_base(SigBuf *buf, const SigUrl *u);
static int	hex_value(unsigned char c);
static bool form_decode(const char *src, size_t n, char *dst, size_t *outlen);
static bool form_storage_size(const char *data, size_t len, size_t *pieces,
							  size_t *size);
static int	decode_pairs(const char *data, size_t len, PlivoParam *params,
						 int max_params, char *storage);
static int	compare_params(const void *a, const void *b);
static void sort_params(PlivoParam *params, size_t n);
static void append_query_pairs(SigBuf *buf, const PlivoParam *pairs,
							   size_t n);
static PlivoSigResult hmac_base64(const char *token, const SigBuf *msg,
								  char out[PLIVO_OTP_SIG_BUFSIZE]);
static PlivoSigResult compute_v2(const char *url, const char *nonce,
								 const char *token,
								 char out[PLIVO_OTP_SIG_BUFSIZE]);
static bool v3_inputs_valid(const char *method, const PlivoParam *params,
							int nparams, const char *nonce,
							const char *token, bool *is_get);
static PlivoSigResult collect_pairs(const SigUrl *u, const PlivoParam *params,
									size_t np, PlivoParam **pairs, size_t *nq,
									char **qstorage);
static void append_v3_payload(SigBuf *msg, bool is_get, PlivoParam *pairs,
							  size_t nq, size_t np, const char *nonce);
static PlivoSigResult compute_v3(const char *method, const char *url,
								 const PlivoParam *params, int nparams,
								 const char *nonce, const char *token,
								 char out[PLIVO_OTP_SIG_BUFSIZE]);
static bool header_is_blank(const char *header_value);
static PlivoSigResult match_header(const char *header_value,
								   const char expected[PLIVO_OTP_SIG_BUFSIZE]);


/*
 * Append n bytes to buf, keeping it NUL-terminated.  The capacity doubles
 * while that cannot overflow, then grows to exactly what is needed.
 */
static void
sigbuf_append(SigBuf *buf, const char *s, size_t n)
{
	size_t		need;

	if (buf->failed || n == 0)
		return;
	/* room for the bytes and the terminating NUL */
	if (n > SIZE_MAX - 1 - buf->len)
	{
		buf->failed = true;
		return;
	}
	need = buf->len + n + 1;
	if (need > buf->cap)
	{
		size_t		newcap = buf->cap > 0 ? buf->cap : SIG_BUF_INITIAL;
		char	   *newdata;

		while (newcap < need)
		{
			if (newcap > SIZE_MAX / 2)
			{
				newcap = need;
				break;
			}
			newcap *= 2;
		}
		newdata = realloc(buf->data, newcap);
		if (newdata == NULL)
		{
			buf->failed = true;
			return;
		}
		buf->data = newdata;
		buf->cap = newcap;
	}
	memcpy(buf->data + buf->len, s, n);
	buf->len += n;
	buf->data[buf->len] = '\0';
}

static void
sigbuf_append_str(SigBuf *buf, const char *s)
{
	sigbuf_append(buf, s, strlen(s));
}

/*
 * Split url into scheme, host[:port]/path and query.  Returns false unless
 * it reads scheme://host..., where scheme is a letter followed by letters,
 * digits, '+', '-' or '.', and host is not empty.  Spaces and control
 * characters anywhere make it malformed, and so do unbalanced IPv6 brackets
 * in the host.
 */
static bool
parse_url(const char *url, SigUrl *u)
{
	const char *p;
	const char *host;
	size_t		hostlen;
	bool		open_bracket;
	bool		close_bracket;

	if (url == NULL)
		return false;
	for (p = url; *p != '\0'; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c <= 0x20 || c == 0x7f)
			return false;
	}

	p = url;
	if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
		return false;
	while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		   (*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.')
		p++;
	if (strncmp(p, "://", 3) != 0)
		return false;
	u->scheme = url;
	u->scheme_len = (size_t) (p - url);

	host = p + 3;
	hostlen = strcspn(host, "/?#");
	if (hostlen == 0)
		return false;
	open_bracket = memchr(host, '[', hostlen) != NULL;
	close_bracket = memchr(host, ']', hostlen) != NULL;
	if (open_bracket != close_bracket)
		return false;

	u->hostpath = host;
	u->hostpath_len = hostlen + strcspn(host + hostlen, "?#");
	p = host + u->hostpath_len;
	if (*p == '?')
	{
		u->query = p + 1;
		u->query_len = strcspn(u->query, "#");
	}
	else
	{
		u->query = p;
		u->query_len = 0;
	}
	return true;
}

/* Append scheme://host[:port]/path, the scheme in lower case. */
static void
append_base(SigBuf *buf, const SigUrl *u)
{
	for (size_t i = 0; i < u->scheme_len; i++)
	{
		char		c = u->scheme[i];

		if (c >= 'A' && c <= 'Z')
			c = (char) (c - 'A' + 'a');
		sigbuf_append(buf, &c, 1);
	}
	sigbuf_append(buf, "://", 3);
	sigbuf_append(buf, u->hostpath, u->hostpath_len);
}

static int
hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decode n bytes of form encoding from src into dst ('+' is a space, %XX a
 * byte) and NUL-terminate it; dst needs n + 1 bytes.  Returns false on a
 * bad %-escape or a NUL byte, raw or decoded.
 */
static bool
form_decode(const char *src, size_t n, char *dst, size_t *outlen)
{
	size_t		o = 0;

	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) src[i];

		if (c == '+')
			c = ' ';
		else if (c == '%')
		{
			int			hi;
			int			lo;

			if (n - i < 3)
				return false;
			hi = hex_value((unsigned char) src[i + 1]);
			lo = hex_value((unsigned char) src[i + 2]);
			if (hi < 0 || lo < 0)
				return false;
			c = (unsigned char) (hi * 16 + lo);
			i += 2;
		}
		if (c == '\0')
			return false;
		dst[o++] = (char) c;
	}
	dst[o] = '\0';
	*outlen = o;
	return true;
}

/*
 * Count the '&'-separated pieces of data and the bytes decode_pairs needs to
 * store them: each piece of L bytes yields at most L + 2 (key, value and two
 * NULs), so the whole needs at most len + pieces + 1.  Returns false if that
 * does not fit in a size_t.
 */
static bool
form_storage_size(const char *data, size_t len, size_t *pieces, size_t *size)
{
	size_t		n = 1;
	const char *p = data;
	const char *end = data + len;

	while (p < end)
	{
		const char *amp = memchr(p, '&', (size_t) (end - p));

		if (amp == NULL)
			break;
		n++;
		p = amp + 1;
	}
	/* n <= len + 1, so only the final sum can overflow */
	if (len > SIZE_MAX - 1 - n)
		return false;
	*pieces = n;
	*size = len + n + 1;
	return true;
}

/*
 * Decode the pairs of a form body or query string into params, copying the
 * strings into storage (sized by form_storage_size).  Empty pieces are
 * skipped; a piece without '=' has an empty value.  Returns the number of
 * pairs, or -1 if malformed or there are more than max_params.  len must
 * be positive.
 */
static int
decode_pairs(const char *data, size_t len, PlivoParam *params,
			 int max_params, char *storage)
{
	const char *p = data;
	const char *end = data + len;
	char	   *out = storage;
	int			n = 0;

	while (p < end)
	{
		const char *amp = memchr(p, '&', (size_t) (end - p));
		const char *stop = amp != NULL ? amp : end;

		if (stop > p)
		{
			const char *eq = memchr(p, '=', (size_t) (stop - p));
			const char *keyend = eq != NULL ? eq : stop;
			size_t		outlen;

			if (n >= max_params)
				return -1;
			if (!form_decode(p, (size_t) (keyend - p), out, &outlen))
				return -1;
			params[n].key = out;
			out += outlen + 1;
			if (eq != NULL)
			{
				if (!form_decode(eq + 1, (size_t) (stop - eq - 1), out,
								 &outlen))
					return -1;
			}
			else
			{
				*out = '\0';
				outlen = 0;
			}
			params[n].value = out;
			out += outlen + 1;
			n++;
		}
		if (amp == NULL)
			break;
		p = amp + 1;
	}
	return n;
}

/* qsort comparator: by key, then by value, as raw bytes. */
static int
compare_params(const void *a, const void *b)
{
	const PlivoParam *pa = (const PlivoParam *) a;
	const PlivoParam *pb = (const PlivoParam *) b;
	int			cmp = strcmp(pa->key, pb->key);

	if (cmp != 0)
		return cmp;
	return strcmp(pa->value, pb->value);
}

static void
sort_params(PlivoParam *params, size_t n)
{
	if (n > 1)
		qsort(params, n, sizeof(PlivoParam), compare_params);
}

/* Append sorted pairs as k=v joined by '&'. */
static void
append_query_pairs(SigBuf *buf, const PlivoParam *pairs, size_t n)
{
	for (size_t i = 0; i < n; i++)
	{
		if (i > 0)
			sigbuf_append(buf, "&", 1);
		sigbuf_append_str(buf, pairs[i].key);
		sigbuf_append(buf, "=", 1);
		sigbuf_append_str(buf, pairs[i].value);
	}
}

/*
 * out = Base64(HMAC-SHA256(token, msg)).  The caller has checked that the
 * token is not empty.
 */
static PlivoSigResult
hmac_base64(const char *token, const SigBuf *msg,
			char out[PLIVO_OTP_SIG_BUFSIZE])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t		toklen = strlen(token);
	PlivoSigResult result = PLIVO_SIG_ERROR;

	if (toklen == 0 || toklen > INT_MAX)
		return PLIVO_SIG_MALFORMED;
	if (HMAC(EVP_sha256(), token, (int) toklen,
			 (const unsigned char *) msg->data, msg->len,
			 md, &mdlen) != NULL &&
		mdlen == SIG_DIGEST_LEN &&
		EVP_EncodeBlock((unsigned char *) out, md, SIG_DIGEST_LEN) ==
		PLIVO_OTP_SIG_LEN)
		result = PLIVO_SIG_VALID;
	else
		out[0] = '\0';
	OPENSSL_cleanse(md, sizeof(md));
	return result;
}

/*
 * Compute a V2 signature into out.  Returns PLIVO_SIG_VALID on success,
 * PLIVO_SIG_MALFORMED or PLIVO_SIG_ERROR otherwise (out is then empty).
 */
static PlivoSigResult
compute_v2(const char *url, const char *nonce, const char *token,
		   char out[PLIVO_OTP_SIG_BUFSIZE])
{
	SigUrl		u;
	SigBuf		msg = {NULL, 0, 0, false};
	PlivoSigResult result;

	out[0] = '\0';
	if (nonce == NULL || token == NULL || token[0] == '\0' ||
		!parse_url(url, &u))
		return PLIVO_SIG_MALFORMED;

	append_base(&msg, &u);
	sigbuf_append_str(&msg, nonce);
	if (msg.failed)
		result = PLIVO_SIG_ERROR;
	else
		result = hmac_base64(token, &msg, out);
	free(msg.data);
	return result;
}

/*
 * The inputs of a V3 signature that need no parsing: a known method, a
 * nonce and a token, and params without NULL strings.  *is_get tells the
 * method.
 */
static bool
v3_inputs_valid(const char *method, const PlivoParam *params, int nparams,
				const char *nonce, const char *token, bool *is_get)
{
	if (method == NULL || nonce == NULL || token == NULL ||
		token[0] == '\0' || nparams < 0 || (params == NULL && nparams > 0))
		return false;
	if (strcmp(method, "GET") == 0)
		*is_get = true;
	else if (strcmp(method, "POST") == 0)
		*is_get = false;
	else
		return false;
	for (int i = 0; i < nparams; i++)
	{
		if (params[i].key == NULL || params[i].value == NULL)
			return false;
	}
	return true;
}

/*
 * The URL's query pairs, decoded, followed by copies of the params, in one
 * malloc'd array (*pairs, NULL when there are none); *nq of them come from
 * the URL, their strings in *qstorage.  On failure nothing is left
 * allocated.
 */
static PlivoSigResult
collect_pairs(const SigUrl *u, const PlivoParam *params, size_t np,
			  PlivoParam **pairs, size_t *nq, char **qstorage)
{
	size_t		npieces = 0;
	size_t		storage_size = 0;
	size_t		total;
	int			n;

	*pairs = NULL;
	*nq = 0;
	*qstorage = NULL;
	if (u->query_len > 0)
	{
		if (!form_storage_size(u->query, u->query_len, &npieces, &storage_size))
			return PLIVO_SIG_ERROR;
		if (npieces > INT_MAX)
			return PLIVO_SIG_MALFORMED;
	}
	if (npieces > SIZE_MAX - np ||
		npieces + np > SIZE_MAX / sizeof(PlivoParam))
		return PLIVO_SIG_ERROR;
	total = npieces + np;
	if (total == 0)
		return PLIVO_SIG_VALID;
	*pairs = malloc(total * sizeof(PlivoParam));
	if (*pairs == NULL)
		return PLIVO_SIG_ERROR;

	if (u->query_len > 0)
	{
		*qstorage = malloc(storage_size);
		if (*qstorage == NULL)
		{
			free(*pairs);
			*pairs = NULL;
			return PLIVO_SIG_ERROR;
		}
		n = decode_pairs(u->query, u->query_len, *pairs, (int) npieces,
						 *qstorage);
		if (n < 0)
		{
			/* a bad escape in the URL: malformed */
			free(*qstorage);
			free(*pairs);
			*qstorage = NULL;
			*pairs = NULL;
			return PLIVO_SIG_MALFORMED;
		}
		*nq = (size_t) n;
	}
	if (np > 0)
		memcpy(*pairs + *nq, params, np * sizeof(PlivoParam));
	return PLIVO_SIG_VALID;
}

/*
 * What V3 signs after the base URL: for GET all pairs sorted together as a
 * query; for POST the URL's pairs as a query, then the params as key and
 * value run together; then "." and the nonce.  Sorts pairs in place.
 */
static void
append_v3_payload(SigBuf *msg, bool is_get, PlivoParam *pairs, size_t nq,
				  size_t np, const char *nonce)
{
	if (is_get)
	{
		sort_params(pairs, nq + np);
		if (nq + np > 0)
		{
			sigbuf_append(msg, "?", 1);
			append_query_pairs(msg, pairs, nq + np);
		}
	}
	else
	{
		sort_params(pairs, nq);
		if (np > 0)
		{
			sort_params(pairs + nq, np);
			sigbuf_append(msg, "?", 1);
			if (nq > 0)
			{
				append_query_pairs(msg, pairs, nq);
				sigbuf_append(msg, ".", 1);
			}
			for (size_t i = nq; i < nq + np; i++)
			{
				sigbuf_append_str(msg, pairs[i].key);
				sigbuf_append_str(msg, pairs[i].value);
			}
		}
		else if (nq > 0)
		{
			sigbuf_append(msg, "?", 1);
			append_query_pairs(msg, pairs, nq);
		}
	}
	sigbuf_append(msg, ".", 1);
	sigbuf_append_str(msg, nonce);
}

/*
 * Compute a V3 signature into out.  Returns PLIVO_SIG_VALID on success,
 * PLIVO_SIG_MALFORMED or PLIVO_SIG_ERROR otherwise (out is then empty).
 *
 * The URL's pairs and copies of the params share one array, the URL's
 * first: GET sorts it whole, POST sorts the two parts separately.
 */
static PlivoSigResult
compute_v3(const char *method, const char *url,
		   const PlivoParam *params, int nparams,
		   const char *nonce, const char *token,
		   char out[PLIVO_OTP_SIG_BUFSIZE])
{
	SigUrl		u;
	SigBuf		msg = {NULL, 0, 0, false};
	bool		is_get = false;
	size_t		nq;
	PlivoParam *pairs;
	char	   *qstorage;
	PlivoSigResult result;

	out[0] = '\0';
	if (!v3_inputs_valid(method, params, nparams, nonce, token, &is_get) ||
		!parse_url(url, &u))
		return PLIVO_SIG_MALFORMED;
	result = collect_pairs(&u, params, (size_t) nparams, &pairs, &nq, &qstorage);
	if (result != PLIVO_SIG_VALID)
		return result;

	append_base(&msg, &u);
	append_v3_payload(&msg, is_get, pairs, nq, (size_t) nparams, nonce);
	if (msg.failed)
		result = PLIVO_SIG_ERROR;
	else
		result = hmac_base64(token, &msg, out);

	free(msg.data);
	free(qstorage);
	free(pairs);
	return result;
}

/* True if the header is absent or holds only spaces, tabs and commas. */
static bool
header_is_blank(const char *header_value)
{
	if (header_value == NULL)
		return true;
	return header_value[strspn(header_value, " \t,")] == '\0';
}

/*
 * Compare every comma-separated entry of the header, trimmed of spaces and
 * tabs, with the expected signature.  All entries are compared, each in
 * constant time; the only thing a timing can tell is the entries' lengths.
 */
static PlivoSigResult
match_header(const char *header_value,
			 const char expected[PLIVO_OTP_SIG_BUFSIZE])
{
	const char *p = header_value;
	int			matched = 0;

	for (;;)
	{
		const char *comma = strchr(p, ',');
		const char *start = p;
		const char *end = comma != NULL ? comma : p + strlen(p);

		while (start < end && (*start == ' ' || *start == '\t'))
			start++;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if ((size_t) (end - start) == PLIVO_OTP_SIG_LEN)
			matched |= CRYPTO_memcmp(start, expected, PLIVO_OTP_SIG_LEN) == 0;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	return matched ? PLIVO_SIG_VALID : PLIVO_SIG_MISMATCH;
}


bool
plivo_otp_sign_v2(const char *url, const char *nonce, const char *token,
				  char out[PLIVO_OTP_SIG_BUFSIZE])
{
	return compute_v2(url, nonce, token, out) == PLIVO_SIG_VALID;
}

bool
plivo_otp_sign_v3(const char *method, const char *url,
				  const PlivoParam *params, int nparams,
				  const char *nonce, const char *token,
				  char out[PLIVO_OTP_SIG_BUFSIZE])
{
	return compute_v3(method, url, params, nparams, nonce, token, out) ==
		PLIVO_SIG_VALID;
}

PlivoSigResult
plivo_otp_check_v2(const char *url, const char *nonce,
				   const char *header_value, const char *token)
{
	char		expected[PLIVO_OTP_SIG_BUFSIZE];
	PlivoSigResult result;

	if (header_is_blank(header_value))
		return PLIVO_SIG_MISSING;
	result = compute_v2(url, nonce, token, expected);
	if (result == PLIVO_SIG_VALID)
		result = match_header(header_value, expected);
	OPENSSL_cleanse(expected, sizeof(expected));
	return result;
}

PlivoSigResult
plivo_otp_check_v3(const char *method, const char *url,
				   const PlivoParam *params, int nparams,
				   const char *nonce, const char *header_value,
				   const char *token)
{
	char		expected[PLIVO_OTP_SIG_BUFSIZE];
	PlivoSigResult result;

	if (header_is_blank(header_value))
		return PLIVO_SIG_MISSING;
	result = compute_v3(method, url, params, nparams, nonce, token, expected);
	if (result == PLIVO_SIG_VALID)
		result = match_header(header_value, expected);
	OPENSSL_cleanse(expected, sizeof(expected));
	return result;
}

int
plivo_otp_parse_form(const char *data, size_t len, PlivoParam *params,
					 int max_params, char **storage)
{
	size_t		npieces;
	size_t		size;
	char	   *block;
	int			n;

	if (storage == NULL)
		return -1;
	*storage = NULL;
	if (max_params < 0 || (data == NULL && len > 0) ||
		(params == NULL && max_params > 0))
		return -1;
	if (len == 0)
		return 0;
	if (!form_storage_size(data, len, &npieces, &size))
		return -2;
	block = malloc(size);
	if (block == NULL)
		return -2;
	n = decode_pairs(data, len, params, max_params, block);
	if (n <= 0)
	{
		free(block);
		return n;
	}
	*storage = block;
	return n;
}
