/*-------------------------------------------------------------------------
 *
 * ids.c
 *	  The ids of verifications and messages: time-ordered UUIDs (version 7,
 *	  RFC 9562).
 *
 * A version-4 id is random everywhere, so each insert lands on a random
 * leaf of every index keyed by it (verifications_pkey, messages_pkey,
 * messages_verification): once the tables hold a long history, those
 * leaves are no longer in shared buffers, and each one's first change
 * after a checkpoint writes a full-page image into the WAL.  A version-7
 * id begins with the time, so new rows go to the right-hand edge of those
 * indexes, as they do to the heap, whatever the history holds.
 *
 * Layout: 48 bits of Unix time in milliseconds, the version (7), 12 bits
 * of sub-millisecond time (RFC 9562 section 6.2, method 3: ids a backend
 * makes sort in the order it made them), the variant, and 62 random bits
 * from pg_strong_random: an id stays unguessable (no id is a secret: the
 * answer token is an HMAC, answer_token.c), and two backends never make
 * the same one.  The random bits come from a per-process pool filled 64
 * ids at a time: each pg_strong_random call costs a system call or two
 * (OpenSSL's fork check), a tenth of an otp_send's own work.  Only ids draw
 * from it; codes, nonces and secrets are drawn each on its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "miscadmin.h"
#include "utils/uuid.h"

#include "plivo_otp.h"

/* One step of the 12-bit sub-millisecond field, in nanoseconds (rounded up). */
#define SUBMS_STEP_NS 245

/* Random bytes per id (its last 8: variant and 62 bits) and ids per refill. */
#define ID_RANDOM_LEN 8
#define IDS_PER_REFILL 64

/*
 * 8 random bytes for an id, from the pool.  A pool filled before a fork
 * (MyProcPid changed) is never used: two processes would share its bytes.
 */
static void
id_random_bytes(uint8 *out)
{
	static uint8 pool[ID_RANDOM_LEN * IDS_PER_REFILL];
	static int	used = sizeof(pool);
	static int	pool_pid = 0;

	if (used == sizeof(pool) || pool_pid != MyProcPid)
	{
		if (!pg_strong_random(pool, sizeof(pool)))
			elog(ERROR, "plivo_otp: could not generate random bytes for an id");
		used = 0;
		pool_pid = MyProcPid;
	}
	memcpy(out, pool + used, ID_RANDOM_LEN);
	memset(pool + used, 0, ID_RANDOM_LEN);
	used += ID_RANDOM_LEN;
}

void
plivo_otp_new_id(pg_uuid_t *uuid)
{
	static int64 last_ns = 0;
	struct timespec ts;
	int64		ns;
	uint64		ms;
	uint32		subms;

	id_random_bytes(uuid->data + UUID_LEN - ID_RANDOM_LEN);
	(void) clock_gettime(CLOCK_REALTIME, &ts);
	ns = (int64) ts.tv_sec * 1000000000 + ts.tv_nsec;
	/* the same or an earlier reading (a coarse clock, a step back): just after the last */
	if (ns <= last_ns)
		ns = last_ns + SUBMS_STEP_NS;
	last_ns = ns;
	ms = (uint64) (ns / 1000000);
	subms = (uint32) (((ns % 1000000) * 4096) / 1000000);

	for (int i = 0; i < 6; i++)
		uuid->data[i] = (uint8) (ms >> (40 - 8 * i));
	uuid->data[6] = 0x70 | (uint8) (subms >> 8);
	uuid->data[7] = (uint8) subms;
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;
}
