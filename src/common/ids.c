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
 * the same one.  The random bits come from the pool of bytes that are not
 * secrets (random_pool.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "utils/uuid.h"

#include "plivo_otp.h"

/* One step of the 12-bit sub-millisecond field, in nanoseconds (rounded up). */
#define SUBMS_STEP_NS 245

/* Random bytes at the end of an id: the variant's byte and 7 more (62 bits). */
#define ID_RANDOM_LEN 8

void
plivo_otp_new_id(pg_uuid_t *uuid)
{
	static int64 last_ns = 0;
	struct timespec ts;
	int64		ns;
	uint64		ms;
	uint32		subms;

	plivo_otp_public_random(uuid->data + UUID_LEN - ID_RANDOM_LEN, ID_RANDOM_LEN);
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
