/*-------------------------------------------------------------------------
 *
 * pg_shims.h
 *	  What the fuzz targets that link server code (fuzz_phone,
 *	  fuzz_send_response) use of pg_shims.c besides the server functions it
 *	  stands in for.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_PG_SHIMS_H
#define PLIVO_OTP_PG_SHIMS_H

#include <stddef.h>

/* How many palloc'd chunks are live; pg_shims_reset frees them all. */
extern size_t pg_shims_live_chunks(void);
extern void pg_shims_reset(void);

#endif							/* PLIVO_OTP_PG_SHIMS_H */
