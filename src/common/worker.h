/*-------------------------------------------------------------------------
 *
 * worker_common.h
 *	  What the dispatcher and the listener workers share: short
 *	  transactions in worker_spi's order, guarded against a missing or
 *	  locked extension, with errors logged instead of ending the worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_WORKER_COMMON_H
#define PLIVO_OTP_WORKER_COMMON_H

extern void plivo_otp_worker_connect(const char *name);
extern bool plivo_otp_begin_work(const char *activity);
extern void plivo_otp_end_work(void);
extern bool plivo_otp_run_work(const char *activity, void (*work) (void));

#endif							/* PLIVO_OTP_WORKER_COMMON_H */
