/*-------------------------------------------------------------------------
 *
 * commit_wake.c
 *	  Wake the dispatcher when, and only when, a transaction that queued a
 *	  message commits.
 *
 * otp_send calls plivo_otp_wake_at_commit().  The transaction callback is
 * registered once per backend, not once per call: callbacks accumulate, and
 * a long-lived connection would slow down with every code it sent.  An
 * aborted or prepared transaction clears the flag; a prepared transaction
 * committed later is found by the dispatcher's backstop timer.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"

#include "plivo_otp.h"

static bool callback_registered = false;
static bool queued_in_this_transaction = false;

static void
wake_at_commit_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (queued_in_this_transaction)
				plivo_otp_wake_dispatcher();
			queued_in_this_transaction = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			queued_in_this_transaction = false;
			break;
		default:
			break;
	}
}

void
plivo_otp_wake_at_commit(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(wake_at_commit_callback, NULL);
		callback_registered = true;
	}
	queued_in_this_transaction = true;
}
