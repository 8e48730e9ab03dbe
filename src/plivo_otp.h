/*-------------------------------------------------------------------------
 *
 * plivo_otp.h
 *	  Declarations shared by the files of plivo_otp: settings, the secret,
 *	  codes and digests, phone numbers, shared state and wake-up at commit.
 *
 * Each .c file under src/ owns one concern; this header is the map of what
 * each one offers to the others.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_H
#define PLIVO_OTP_H

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "storage/latch.h"
#include "utils/uuid.h"

#define PLIVO_OTP_SCHEMA "plivo_otp"

/* Sizes of the cryptographic material. */
#define PLIVO_OTP_SECRET_LEN	32
#define PLIVO_OTP_DIGEST_LEN	32
#define PLIVO_OTP_NONCE_LEN		12
#define PLIVO_OTP_TAG_LEN		16
#define PLIVO_OTP_MAX_CODE_LEN	10
#define PLIVO_OTP_MAX_PHONE_LEN 16	/* '+' and at most 15 digits */

/* plivo_otp.c */
extern bool plivo_otp_preloaded;
extern void plivo_otp_require_preload(void);

/* settings.c: every plivo_otp.* setting */
extern char *plivo_otp_database;
extern char *plivo_otp_key_file;
extern char *plivo_otp_auth_id;
extern char *plivo_otp_auth_token_file;
extern char *plivo_otp_sender;
extern char *plivo_otp_api_url;
extern char *plivo_otp_public_url;
extern char *plivo_otp_sms_template;
extern char *plivo_otp_allowed_countries;
extern char *plivo_otp_message_log;
extern int	plivo_otp_code_length;
extern int	plivo_otp_code_ttl;
extern int	plivo_otp_max_attempts;
extern int	plivo_otp_resend_interval;
extern int	plivo_otp_number_max_sends;
extern int	plivo_otp_number_window;
extern int	plivo_otp_global_max_sends_per_hour;
extern int	plivo_otp_max_live_codes;
extern int	plivo_otp_max_inflight;
extern int	plivo_otp_max_requests_per_second;
extern int	plivo_otp_request_timeout;
extern int	plivo_otp_retention;
extern char *plivo_otp_listen_address;
extern int	plivo_otp_listen_port;
extern int	plivo_otp_listen_max_connections;
extern int	plivo_otp_listen_max_connections_per_address;
extern void plivo_otp_define_settings(void);

/* plivo_api.c: the https-except-loopback rule for URLs */
extern bool plivo_otp_check_url(const char *url, bool *loopback, char **why);

/* secret.c: the key file and keys derived from it */
typedef enum PlivoOtpKeyUse
{
	PLIVO_OTP_KEY_CODE_DIGEST,
	PLIVO_OTP_KEY_QUEUE_BODY
} PlivoOtpKeyUse;

extern void plivo_otp_ensure_key_file(void);
extern const uint8 *plivo_otp_derived_key(PlivoOtpKeyUse use);
extern char *plivo_otp_read_auth_token(char **error);

/* codes.c: code generation, digests, queue body encryption */
extern void plivo_otp_generate_code(int length, char *out);
extern void plivo_otp_code_digest(const pg_uuid_t *verification_id,
								  const char *purpose, const char *code,
								  uint8 *digest);
extern bool plivo_otp_code_matches(const pg_uuid_t *verification_id,
								   const char *purpose, const char *code,
								   const uint8 *stored_digest, int stored_len);
extern bytea *plivo_otp_encrypt_body(const pg_uuid_t *message_id,
									 const char *plaintext);
extern char *plivo_otp_decrypt_body(const pg_uuid_t *message_id,
									const bytea *sealed);
extern void plivo_otp_random_uuid(pg_uuid_t *uuid);

/* phone.c: E.164 numbers */
extern bool plivo_otp_normalize_phone(const char *input, char *out);
extern char *plivo_otp_mask_phone(const char *e164);
extern bool plivo_otp_country_allowed(const char *e164, const char *allow_list);
extern bool plivo_otp_valid_prefix_list(const char *list);

/* api_args.c: arguments shared by the SQL functions */
extern void plivo_otp_phone_arg(FunctionCallInfo fcinfo, int argno, char *out);
extern char *plivo_otp_purpose_arg(FunctionCallInfo fcinfo, int argno);
extern char *plivo_otp_channel_arg(FunctionCallInfo fcinfo, int argno);
extern Datum plivo_otp_hiding_statement(PGFunction fn, FunctionCallInfo fcinfo);

/* shared_state.c: failed-attempt ledger, dispatcher latch, counters */
typedef enum PlivoOtpCounter
{
	PLIVO_OTP_COUNTER_SENDS,
	PLIVO_OTP_COUNTER_REFUSED_SENDS,
	PLIVO_OTP_COUNTER_VERIFY_APPROVED,
	PLIVO_OTP_COUNTER_VERIFY_FAILED,
	PLIVO_OTP_COUNTER_ACCEPTED,
	PLIVO_OTP_COUNTER_RETRIED,
	PLIVO_OTP_COUNTER_REFUSED,
	PLIVO_OTP_COUNTER_EXPIRED,
	PLIVO_OTP_COUNTER_UNKNOWN,
	PLIVO_OTP_NUM_COUNTERS
} PlivoOtpCounter;

extern void plivo_otp_shmem_request(void);
extern void plivo_otp_shmem_startup(void);
extern int	plivo_otp_ledger_failures(const pg_uuid_t *id);
extern int	plivo_otp_ledger_add(const pg_uuid_t *id, TimestampTz expires_at,
								 int failures);
extern void plivo_otp_count(PlivoOtpCounter counter, uint64 n);
extern uint64 plivo_otp_counter_value(PlivoOtpCounter counter);
typedef struct PlivoOtpDispatcherSnapshot
{
	int			pid;			/* 0 when no dispatcher runs */
	int			inflight;
	char		last_error[256];
	TimestampTz last_error_at;
	uint64		counters[PLIVO_OTP_NUM_COUNTERS];
} PlivoOtpDispatcherSnapshot;

extern void plivo_otp_set_dispatcher_latch(Latch *latch);
extern void plivo_otp_set_dispatcher_pid(pid_t pid);
extern void plivo_otp_set_dispatcher_inflight(int n);
extern void plivo_otp_set_last_error(const char *error);
extern void plivo_otp_dispatcher_snapshot(PlivoOtpDispatcherSnapshot *snap);
extern void plivo_otp_wake_dispatcher(void);

/* commit_wake.c: wake the dispatcher when a transaction that queued commits */
extern void plivo_otp_wake_at_commit(void);

#endif							/* PLIVO_OTP_H */
