/*-------------------------------------------------------------------------
 *
 * delivery.h
 *	  Recording authenticated delivery callbacks and applying them to
 *	  messages.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_DELIVERY_H
#define PLIVO_OTP_DELIVERY_H

#include "crypto/signature.h"

typedef enum PlivoIngestResult
{
	PLIVO_INGEST_RECORDED,		/* new event, stored (and applied if its message is known) */
	PLIVO_INGEST_DUPLICATE,		/* the same event was stored before: nothing changed */
	PLIVO_INGEST_REPLAYED,		/* the nonce was seen before: nothing changed */
	PLIVO_INGEST_INCOMPLETE		/* no MessageUUID or Status */
} PlivoIngestResult;

extern PlivoIngestResult plivo_otp_ingest_callback(const PlivoParam *params, int nparams,
												   const char *nonce, const char *other_nonce);
extern int	plivo_otp_apply_waiting_events(void);

#endif							/* PLIVO_OTP_DELIVERY_H */
