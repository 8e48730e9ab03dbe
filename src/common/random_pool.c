/*-------------------------------------------------------------------------
 *
 * random_pool.c
 *	  Random bytes that are not secrets (the random tails of ids, AES-GCM
 *	  nonces), from a per-process pool.
 *
 * Each pg_strong_random call costs a system call or two here (OpenSSL's
 * fork check and status poll): about 1.9 us, a tenth of an otp_send's own
 * work when every id and nonce drew on its own.  The pool is filled 512
 * bytes at a time from the same source, so these bytes are exactly as
 * unpredictable; what a pool changes is only that bytes wait in memory
 * before use, which is why codes and keys never come from it
 * (plivo_otp_generate_code and the key file draw their own).  A pool
 * filled before a fork (MyProcPid changed) is thrown away: two processes
 * must never hand out the same bytes (a repeated nonce breaks AES-GCM).
 * Bytes are wiped as they are handed out.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "plivo_otp.h"

#define POOL_LEN 512

void
plivo_otp_public_random(uint8 *out, int len)
{
	static uint8 pool[POOL_LEN];
	static int	used = POOL_LEN;
	static int	pool_pid = 0;

	Assert(len > 0 && len <= POOL_LEN);
	if (pool_pid != MyProcPid)
		used = POOL_LEN;
	if (used + len > POOL_LEN)
	{
		if (!pg_strong_random(pool, POOL_LEN))
			elog(ERROR, "plivo_otp: could not generate random bytes");
		used = 0;
		pool_pid = MyProcPid;
	}
	memcpy(out, pool + used, len);
	explicit_bzero(pool + used, len);
	used += len;
}
