/*-------------------------------------------------------------------------
 *
 * secret.c
 *	  The extension's secret key file, the keys derived from it, and the
 *	  Plivo auth token file.
 *
 * The key file holds 32 random bytes.  It is created once, by the
 * postmaster while loading the library, with mode 0600 (written to a
 * temporary file and renamed into place, so it is never seen half
 * written), inside the data directory by default so that base backups and
 * standbys carry it.  A server in recovery never creates one: a standby
 * without the primary's key would digest codes and encrypt queue bodies
 * under a key that no longer matches after a failover.
 *
 * Each process reads the file once and keeps only keys derived from it
 * (HMAC-SHA256 of the secret and a label), one per use, so the raw secret
 * is never used twice.  Nothing here ever prints key or token bytes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "miscadmin.h"
#include "storage/fd.h"

#include "plivo_otp.h"

static const char *const key_labels[] = {
	[PLIVO_OTP_KEY_CODE_DIGEST] = "plivo_otp code digest v1",
	[PLIVO_OTP_KEY_QUEUE_BODY] = "plivo_otp queue body v1",
	[PLIVO_OTP_KEY_LOCK_TAG] = "plivo_otp lock tag v1",
	[PLIVO_OTP_KEY_FINGERPRINT] = "plivo_otp key fingerprint v1",
	[PLIVO_OTP_KEY_CODE_SEAL] = "plivo_otp code seal v1",
	[PLIVO_OTP_KEY_CALLER] = "plivo_otp caller key v1",
	[PLIVO_OTP_KEY_ANSWER_TOKEN] = "plivo_otp answer token v1",
	[PLIVO_OTP_KEY_ANSWER_LOOKUP] = "plivo_otp answer lookup v1",
};

StaticAssertDecl(lengthof(key_labels) == PLIVO_OTP_NUM_KEY_USES,
				 "every key use has a label");

static uint8 derived_keys[lengthof(key_labels)][PLIVO_OTP_SECRET_LEN];
static bool derived_keys_loaded = false;

/* Owned by the server's OS user and closed to group and others. */
static bool
private_file(const struct stat *st)
{
	return st->st_uid == geteuid() && (st->st_mode & (S_IRWXG | S_IRWXO)) == 0;
}

static bool
server_in_recovery_at_start(void)
{
	struct stat st;

	return stat("standby.signal", &st) == 0 || stat("recovery.signal", &st) == 0;
}

/*
 * A key file left empty: it can only come from a crash between creating
 * and filling it (by a version that created it in place), so no digest was
 * ever made with it and replacing it loses nothing.
 */
static bool
key_file_usable(void)
{
	struct stat st;

	if (stat(plivo_otp_key_file, &st) != 0)
		return false;
	if (st.st_size > 0)
		return true;
	ereport(LOG,
			(errmsg("plivo_otp: key file \"%s\" is empty and is replaced", plivo_otp_key_file),
			 errdetail("An empty key file can only be left by a crash while it was being created.")));
	return unlink(plivo_otp_key_file) != 0;
}

/*
 * Write a new secret to the key file: into a temporary file, fsync'd, then
 * renamed into place and the directory fsync'd (durable_rename), so a crash
 * at any point leaves either no key file or a complete one.
 */
static bool
write_key_file(const uint8 *secret)
{
	char		tmp[MAXPGPATH];
	int			fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", plivo_otp_key_file);
	(void) unlink(tmp);			/* left by a crash before the rename */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | PG_BINARY, S_IRUSR | S_IWUSR);
	if (fd < 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("plivo_otp: could not create key file \"%s\": %m", tmp)));
		return false;
	}
	if (write(fd, secret, PLIVO_OTP_SECRET_LEN) != PLIVO_OTP_SECRET_LEN || pg_fsync(fd) != 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("plivo_otp: could not write key file \"%s\": %m", tmp)));
		close(fd);
		unlink(tmp);
		return false;
	}
	close(fd);
	if (durable_rename(tmp, plivo_otp_key_file, WARNING) != 0)
	{
		unlink(tmp);
		return false;
	}
	return true;
}

/*
 * Create the key file if it does not exist.  Called by the postmaster; a
 * failure is logged and leaves the functions refusing to run, rather than
 * stopping the whole server.  A key made on a promoted standby that lacked
 * the primary's is caught at first use (crypto/key_check.c).
 */
void
plivo_otp_ensure_key_file(void)
{
	uint8		secret[PLIVO_OTP_SECRET_LEN];

	if (key_file_usable())
		return;

	if (server_in_recovery_at_start())
	{
		ereport(LOG,
				(errmsg("plivo_otp: key file \"%s\" is missing and is not created on a server in recovery",
						plivo_otp_key_file),
				 errhint("Copy the primary's key file into place with mode 0600.")));
		return;
	}

	if (!pg_strong_random(secret, sizeof(secret)))
	{
		ereport(WARNING,
				(errmsg("plivo_otp: could not generate a random key")));
		return;
	}
	if (write_key_file(secret))
		ereport(LOG,
				(errmsg("plivo_otp: created key file \"%s\"", plivo_otp_key_file),
				 errdetail("Back it up with the data directory; pg_upgrade does not copy it.")));
	explicit_bzero(secret, sizeof(secret));
}

static void
load_derived_keys(void)
{
	uint8		secret[PLIVO_OTP_SECRET_LEN + 1];
	struct stat st;
	ssize_t		n;
	int			fd;

	fd = OpenTransientFile(plivo_otp_key_file, O_RDONLY | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("plivo_otp key file \"%s\" cannot be opened: %m", plivo_otp_key_file),
				 errhint("On a primary the server creates it at start; on a standby copy the primary's key file.")));
	if (fstat(fd, &st) != 0 || !private_file(&st))
	{
		CloseTransientFile(fd);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("plivo_otp key file \"%s\" is accessible to other users", plivo_otp_key_file),
				 errhint("Make it owned and readable only by the server's operating system user: chmod 0600.")));
	}
	n = read(fd, secret, sizeof(secret));
	CloseTransientFile(fd);
	if (n != PLIVO_OTP_SECRET_LEN)
	{
		explicit_bzero(secret, sizeof(secret));
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("plivo_otp key file \"%s\" must hold exactly %d bytes", plivo_otp_key_file,
						PLIVO_OTP_SECRET_LEN)));
	}

	for (int use = 0; use < lengthof(key_labels); use++)
	{
		unsigned int len = 0;

		if (HMAC(EVP_sha256(), secret, PLIVO_OTP_SECRET_LEN,
				 (const unsigned char *) key_labels[use], strlen(key_labels[use]),
				 derived_keys[use], &len) == NULL || len != PLIVO_OTP_SECRET_LEN)
		{
			explicit_bzero(secret, sizeof(secret));
			elog(ERROR, "plivo_otp: could not derive keys");
		}
	}
	explicit_bzero(secret, sizeof(secret));

	/* The key must be the one this database's codes were made with. */
	derived_keys_loaded = plivo_otp_verify_key_fingerprint(derived_keys[PLIVO_OTP_KEY_FINGERPRINT]);
}

/* The key for one use, read from the key file on first call. */
const uint8 *
plivo_otp_derived_key(PlivoOtpKeyUse use)
{
	if (!derived_keys_loaded)
		load_derived_keys();
	return derived_keys[use];
}

/*
 * Read the Plivo auth token from plivo_otp.auth_token_file.  Returns a
 * palloc'd token, or NULL with *error set to a sentence (for an errdetail)
 * that names the file but never its content.
 */
char *
plivo_otp_read_auth_token(char **error)
{
	char		buf[257];
	struct stat st;
	ssize_t		n;
	int			fd;

	*error = NULL;
	fd = OpenTransientFile(plivo_otp_auth_token_file, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		*error = psprintf("Could not open auth token file \"%s\": %m.", plivo_otp_auth_token_file);
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !private_file(&st))
	{
		CloseTransientFile(fd);
		*error = psprintf("Auth token file \"%s\" is accessible to other users (make it owned by the server's user, chmod 0600).",
						  plivo_otp_auth_token_file);
		return NULL;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	CloseTransientFile(fd);
	if (n < 0)
	{
		*error = psprintf("Could not read auth token file \"%s\": %m.", plivo_otp_auth_token_file);
		return NULL;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	if (n == 0 || n == sizeof(buf) - 1 || strchr(buf, '\n') != NULL)
	{
		explicit_bzero(buf, sizeof(buf));
		*error = psprintf("Auth token file \"%s\" must hold one token of 1 to 255 characters.",
						  plivo_otp_auth_token_file);
		return NULL;
	}
	{
		char	   *token = pstrdup(buf);

		explicit_bzero(buf, sizeof(buf));
		return token;
	}
}
