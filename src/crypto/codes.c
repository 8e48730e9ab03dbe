/*-------------------------------------------------------------------------
 *
 * codes.c
 *	  Codes, their keyed digests, and the encrypted queue body.
 *
 * A code is drawn from pg_strong_random without modulo bias.  Only its
 * digest is stored: HMAC-SHA256 under the code-digest key of
 *		len(id) || id || len(purpose) || purpose || len(code) || code
 * with each length a 4-byte big-endian integer, so no two inputs run
 * together and a digest cannot be replayed onto another verification.
 *
 * The rendered message waits in the queue sealed with AES-256-GCM under
 * the queue-body key: nonce (12) || ciphertext || tag (16), with the
 * message id as associated data so a body cannot be moved to another row.
 * A live code that may be re-delivered is sealed the same way under its own
 * key, bound to its verification id.  Keyed hashes (lock tags, caller keys)
 * are HMAC-SHA256 under keys of their own.
 *
 * Nothing that can raise an ERROR runs while an OpenSSL cipher context is
 * allocated (the key is fetched, and memory allocated, before it): an
 * ERROR would otherwise leak the context.
 *
 * The HMAC of each key is keyed once per process and re-initialised for
 * every use (EVP_MAC_init with no key reuses it), and AES-256-GCM is
 * fetched once: OpenSSL 3's one-shot HMAC() and implicit cipher fetch look
 * the algorithm up on every call (1.08 against 0.18 us an HMAC here).  A
 * process's derived keys come from the one key file and never change
 * (secret.c); each use still asks for its key, so the file's fingerprint
 * check runs as it did.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "lib/stringinfo.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"

#include "plivo_otp.h"

/* Each key's HMAC-SHA256, keyed on first use. */
static EVP_MAC_CTX *keyed_macs[PLIVO_OTP_NUM_KEY_USES];

/* AES-256-GCM, fetched on first use. */
static EVP_CIPHER *aes_256_gcm = NULL;

/*
 * OpenSSL 3.0.0-3.0.2 accept EVP_MAC_init with no key but do not reset the
 * HMAC (openssl/openssl#17811, fixed in 3.0.3): there the key is passed
 * again on every use, which still saves the algorithm look-ups.
 */
#define OPENSSL_HMAC_REINIT_FIXED 0x30000030L

/* HMAC-SHA256 of data under the key for `use` into out (32 bytes). */
static bool
hmac_under(PlivoOtpKeyUse use, const uint8 *data, size_t len, uint8 *out)
{
	/* every use goes through the key's loading and fingerprint check (secret.c) */
	const uint8 *key = plivo_otp_derived_key(use);
	EVP_MAC_CTX *ctx = keyed_macs[use];
	size_t		outlen = 0;

	if (ctx == NULL)
	{
		char		digest_name[] = "SHA256";
		OSSL_PARAM	params[] = {
			OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
			OSSL_PARAM_construct_end()
		};
		EVP_MAC    *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);

		ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
		EVP_MAC_free(mac);		/* the context keeps its own reference */
		if (ctx == NULL || EVP_MAC_init(ctx, key, PLIVO_OTP_SECRET_LEN, params) != 1)
		{
			EVP_MAC_CTX_free(ctx);
			return false;
		}
		keyed_macs[use] = ctx;
	}
	else if (OpenSSL_version_num() < OPENSSL_HMAC_REINIT_FIXED ?
			 EVP_MAC_init(ctx, key, PLIVO_OTP_SECRET_LEN, NULL) != 1 :
			 EVP_MAC_init(ctx, NULL, 0, NULL) != 1)
		return false;
	return EVP_MAC_update(ctx, data, len) == 1 &&
		EVP_MAC_final(ctx, out, &outlen, PLIVO_OTP_DIGEST_LEN) == 1 &&
		outlen == PLIVO_OTP_DIGEST_LEN;
}

/* AES-256-GCM, or an ERROR (before any cipher context exists). */
static EVP_CIPHER *
cipher(void)
{
	if (aes_256_gcm == NULL)
		aes_256_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	if (aes_256_gcm == NULL)
		elog(ERROR, "plivo_otp: could not fetch AES-256-GCM");
	return aes_256_gcm;
}

/* Draw an unbiased decimal code of the given length into out (NUL-terminated). */
void
plivo_otp_generate_code(int length, char *out)
{
	uint64		modulus = 1;
	uint64		limit;
	uint64		value;

	Assert(length >= 1 && length <= PLIVO_OTP_MAX_CODE_LEN);
	for (int i = 0; i < length; i++)
		modulus *= 10;
	/* Largest multiple of modulus that fits: values at or above it are redrawn. */
	limit = PG_UINT64_MAX - (PG_UINT64_MAX % modulus);
	do
	{
		if (!pg_strong_random(&value, sizeof(value)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random bytes for a code")));
	} while (value >= limit);
	value %= modulus;

	for (int i = length - 1; i >= 0; i--)
	{
		out[i] = '0' + (char) (value % 10);
		value /= 10;
	}
	out[length] = '\0';
	value = 0;
}

static void
append_field(StringInfo buf, const void *data, uint32 len)
{
	uint32		be = pg_hton32(len);

	appendBinaryStringInfo(buf, (const char *) &be, sizeof(be));
	appendBinaryStringInfo(buf, (const char *) data, len);
}

/* digest must hold PLIVO_OTP_DIGEST_LEN bytes. */
void
plivo_otp_code_digest(const pg_uuid_t *verification_id, const char *purpose,
					  const char *code, uint8 *digest)
{
	StringInfoData buf;

	initStringInfo(&buf);
	append_field(&buf, verification_id->data, UUID_LEN);
	append_field(&buf, purpose, strlen(purpose));
	append_field(&buf, code, strlen(code));
	if (!hmac_under(PLIVO_OTP_KEY_CODE_DIGEST, (const uint8 *) buf.data, buf.len, digest))
		elog(ERROR, "plivo_otp: could not compute a code digest");
	explicit_bzero(buf.data, buf.len);
	pfree(buf.data);
}

/*
 * Does code match the stored digest?  Always computes a digest and compares
 * in constant time, so a malformed candidate costs the same as a wrong one.
 */
bool
plivo_otp_code_matches(const pg_uuid_t *verification_id, const char *purpose,
					   const char *code, const uint8 *stored_digest, int stored_len)
{
	uint8		digest[PLIVO_OTP_DIGEST_LEN];
	bool		match;

	plivo_otp_code_digest(verification_id, purpose, code, digest);
	match = stored_len == PLIVO_OTP_DIGEST_LEN &&
		timingsafe_bcmp(digest, stored_digest, PLIVO_OTP_DIGEST_LEN) == 0;
	explicit_bzero(digest, sizeof(digest));
	return match;
}

/*
 * Seal plaintext under the key for `use`, bound to the row id (associated
 * data): the queue body of a message, or a live code of a verification.
 */
bytea *
plivo_otp_seal(PlivoOtpKeyUse use, const pg_uuid_t *row_id, const char *plaintext)
{
	int			textlen = strlen(plaintext);
	bytea	   *sealed = palloc(VARHDRSZ + PLIVO_OTP_NONCE_LEN + textlen + PLIVO_OTP_TAG_LEN);
	uint8	   *nonce = (uint8 *) VARDATA(sealed);
	uint8	   *ciphertext = nonce + PLIVO_OTP_NONCE_LEN;
	const uint8 *key = plivo_otp_derived_key(use);
	EVP_CIPHER *gcm = cipher();
	EVP_CIPHER_CTX *ctx;
	int			outlen = 0;
	int			finlen = 0;
	bool		ok;

	plivo_otp_public_random(nonce, PLIVO_OTP_NONCE_LEN);
	ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL)
		elog(ERROR, "plivo_otp: could not allocate a cipher context");
	ok = EVP_EncryptInit_ex(ctx, gcm, NULL, NULL, NULL) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, PLIVO_OTP_NONCE_LEN, NULL) == 1 &&
		EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) == 1 &&
		EVP_EncryptUpdate(ctx, NULL, &outlen, row_id->data, UUID_LEN) == 1 &&
		EVP_EncryptUpdate(ctx, ciphertext, &outlen, (const uint8 *) plaintext, textlen) == 1 &&
		EVP_EncryptFinal_ex(ctx, ciphertext + outlen, &finlen) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, PLIVO_OTP_TAG_LEN,
							ciphertext + outlen + finlen) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok || outlen + finlen != textlen)
		elog(ERROR, "plivo_otp: could not seal a value");
	SET_VARSIZE(sealed, VARHDRSZ + PLIVO_OTP_NONCE_LEN + textlen + PLIVO_OTP_TAG_LEN);
	return sealed;
}

/*
 * Open a sealed value.  Returns a palloc'd string, or NULL when it does
 * not authenticate (wrong key, moved to another row, tampered with).
 */
char *
plivo_otp_unseal(PlivoOtpKeyUse use, const pg_uuid_t *row_id, const bytea *sealed)
{
	int			total = VARSIZE_ANY_EXHDR(sealed);
	const uint8 *nonce = (const uint8 *) VARDATA_ANY(sealed);
	int			textlen = total - PLIVO_OTP_NONCE_LEN - PLIVO_OTP_TAG_LEN;
	const uint8 *ciphertext = nonce + PLIVO_OTP_NONCE_LEN;
	const uint8 *key = plivo_otp_derived_key(use);
	EVP_CIPHER *gcm = cipher();
	char	   *plaintext;
	EVP_CIPHER_CTX *ctx;
	int			outlen = 0;
	int			finlen = 0;
	bool		ok;

	if (textlen < 0)
		return NULL;
	plaintext = palloc(textlen + 1);
	ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL)
		elog(ERROR, "plivo_otp: could not allocate a cipher context");
	ok = EVP_DecryptInit_ex(ctx, gcm, NULL, NULL, NULL) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, PLIVO_OTP_NONCE_LEN, NULL) == 1 &&
		EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) == 1 &&
		EVP_DecryptUpdate(ctx, NULL, &outlen, row_id->data, UUID_LEN) == 1 &&
		EVP_DecryptUpdate(ctx, (uint8 *) plaintext, &outlen, ciphertext, textlen) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, PLIVO_OTP_TAG_LEN,
							(void *) (ciphertext + textlen)) == 1 &&
		EVP_DecryptFinal_ex(ctx, (uint8 *) plaintext + outlen, &finlen) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
	{
		explicit_bzero(plaintext, textlen + 1);
		pfree(plaintext);
		return NULL;
	}
	plaintext[textlen] = '\0';
	return plaintext;
}

/* HMAC-SHA256 of data under the key for `use` into out (32 bytes). */
void
plivo_otp_keyed_hash(PlivoOtpKeyUse use, const char *data, size_t len, uint8 *out)
{
	if (!hmac_under(use, (const uint8 *) data, len, out))
		elog(ERROR, "plivo_otp: could not compute a keyed hash");
}

/* A UUID as uuid_out writes it (lower-case hex, 8-4-4-4-12), without fmgr; out has 37 bytes. */
void
plivo_otp_format_uuid(const pg_uuid_t *id, char *out)
{
	static const char hex[] = "0123456789abcdef";
	char	   *p = out;

	for (int i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[id->data[i] >> 4];
		*p++ = hex[id->data[i] & 0x0F];
	}
	*p = '\0';
}

/*
 * For tests only, not part of the SQL API: the text a queued message's body
 * (sealed under its id) holds, so tests see the template rendered.  A test
 * binds it (CREATE FUNCTION ... AS 'plivo_otp', 'plivo_otp_open_body_sql'),
 * which only a superuser can do, as it does for signature_valid; a
 * superuser can read the key file anyway.
 */
PG_FUNCTION_INFO_V1(plivo_otp_open_body_sql);

Datum
plivo_otp_open_body_sql(PG_FUNCTION_ARGS)
{
	char	   *text = plivo_otp_unseal(PLIVO_OTP_KEY_QUEUE_BODY, PG_GETARG_UUID_P(0),
										PG_GETARG_BYTEA_PP(1));

	if (text == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(text));
}
