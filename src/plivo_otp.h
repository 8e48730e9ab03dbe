/*-------------------------------------------------------------------------
 *
 * plivo_otp.h
 *	  The one header that the folders of plivo_otp share: what each file
 *	  offers to the others, grouped by folder.
 *
 *	  common/		settings, phone numbers, URLs, states, SPI, workers, errors
 *	  crypto/		codes and sealing, the secret files, Plivo signatures
 *	  shmem/		the failed-attempt ledger, dispatcher state, commit wake-up
 *	  api/			the SQL-callable functions
 *	  dispatcher/	the dispatcher worker (private header dispatcher.h)
 *	  listener/		the webhook listener worker (private header listener.h)
 *
 * Messages follow one convention: a line a worker writes to the server log
 * starts with its process name ("plivo_otp dispatcher: ...", "plivo_otp
 * listener: ..."), and a line the postmaster writes with "plivo_otp: "; an
 * error raised to a SQL caller carries no prefix (the caller knows which
 * function it called), and can't-happen errors (elog) start with
 * "plivo_otp: ".
 *
 *-------------------------------------------------------------------------
 */
#ifndef PLIVO_OTP_H
#define PLIVO_OTP_H

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "storage/latch.h"
#include "utils/uuid.h"

#include "crypto/signature.h"
#include "listener/callback_auth.h"

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


/* ---- common/settings.c: every plivo_otp.* setting ---- */
extern char *plivo_otp_database;
extern char *plivo_otp_key_file;
extern char *plivo_otp_auth_id;
extern char *plivo_otp_auth_token_file;
extern char *plivo_otp_sender;
extern char *plivo_otp_api_url;
extern char *plivo_otp_public_url;
extern char *plivo_otp_sms_template;
extern char *plivo_otp_voice_template;
extern char *plivo_otp_app_name;
extern int	plivo_otp_max_segments;
extern char *plivo_otp_voice_sender;
extern char *plivo_otp_voice_language;
extern char *plivo_otp_voice_name;
extern int	plivo_otp_voice_loop;
extern int	plivo_otp_max_calls_per_second;
extern bool plivo_otp_voice_machine_detection;
extern int	plivo_otp_ring_timeout;
extern int	plivo_otp_call_time_limit;
extern int	plivo_otp_voice_fallback_after;
extern char *plivo_otp_allowed_countries;
extern bool plivo_otp_allow_sms_to_fixed_line;
extern char *plivo_otp_message_log;
extern int	plivo_otp_code_length;
extern int	plivo_otp_code_ttl;
extern int	plivo_otp_max_attempts;
extern int	plivo_otp_resend_interval;
extern int	plivo_otp_number_max_sends;
extern int	plivo_otp_number_window;
extern int	plivo_otp_global_max_sends_per_hour;
extern int	plivo_otp_send_lock_timeout;
extern int	plivo_otp_caller_max_sends;
extern int	plivo_otp_caller_window;
extern int	plivo_otp_max_live_codes;
extern int	plivo_otp_max_inflight;
extern int	plivo_otp_max_requests_per_second;
extern int	plivo_otp_request_timeout;
extern int	plivo_otp_retention;
extern int	plivo_otp_redact_after;
extern bool plivo_otp_events;
extern char *plivo_otp_listen_address;
extern int	plivo_otp_listen_port;
extern int	plivo_otp_listen_max_connections;
extern int	plivo_otp_listen_max_connections_per_address;
extern void plivo_otp_define_settings(void);
extern bool plivo_otp_valid_voice_name(const char *v);
extern bool plivo_otp_valid_voice_language(const char *v);

/* ---- common/segments.c: an SMS's encoding and segments, as Plivo counts them ---- */
#define PLIVO_OTP_SMS_MAX_GSM7	1600	/* longest text Plivo takes, GSM-7 characters */
#define PLIVO_OTP_SMS_MAX_UCS2	737		/* the same in UCS-2 */

typedef struct PlivoOtpSmsSegments
{
	bool		ucs2;			/* else GSM-7 */
	int			characters;		/* GSM-7 septets (an extension character is 2) or UTF-16 units */
	int			segments;
} PlivoOtpSmsSegments;

extern void plivo_otp_sms_segments(const char *text, PlivoOtpSmsSegments *out);

/* ---- common/templates.c: the texts sent, rendered from the templates ---- */
#define PLIVO_OTP_MAX_LOCALE_LEN	35		/* a BCP 47 tag such as fr-FR */
#define PLIVO_OTP_TEMPLATE_MAX_BYTES 8000	/* a template's own text */
#define PLIVO_OTP_VOICE_MAX_BYTES	4000	/* a call's rendered sentence: its script stays far under Plivo's 100 KB */

typedef struct PlivoOtpTemplate
{
	const char *body;
	const char *voice_language; /* NULL: plivo_otp.voice_language */
	const char *voice_name;		/* NULL: plivo_otp.voice_name */
} PlivoOtpTemplate;

typedef enum PlivoOtpTemplateProblem
{
	PLIVO_OTP_TEMPLATE_OK,
	PLIVO_OTP_TEMPLATE_NO_CODE,
	PLIVO_OTP_TEMPLATE_UNKNOWN_PLACEHOLDER,
	PLIVO_OTP_TEMPLATE_TOO_LONG,
	PLIVO_OTP_TEMPLATE_TOO_MANY_SEGMENTS
} PlivoOtpTemplateProblem;

extern char *plivo_otp_render(const char *channel, const char *template,
							  const char *code, int ttl_seconds);
extern void plivo_otp_choose_template(const pg_uuid_t *verification_id, const char *channel,
									  const char *locale, bool v2, PlivoOtpTemplate *t);
extern bool plivo_otp_canonical_locale(const char *in, char *out);
extern PlivoOtpTemplateProblem plivo_otp_check_template(const char *channel, const char *body,
														char **detail);

/* ---- common/senders.c: who a message goes out from (plivo_otp.senders, else the settings) ---- */
extern const char *plivo_otp_sender_problem(const char *channel, const char *sender,
											const char **hint);
extern bool plivo_otp_valid_sender_prefix(const char *prefix);
extern char *plivo_otp_table_sender(const char *channel, const char *e164, const char *region);
extern char *plivo_otp_choose_sender(const char *channel, const char *e164, const char *region);
extern const char *plivo_otp_voice_caller_id(void);

/* ---- common/outbound.c: queue a message carrying a code ---- */
typedef struct PlivoOtpOutbound
{
	const pg_uuid_t *verification_id;
	const char *phone;			/* E.164 */
	const char *region;			/* its ISO region as phone_info gave it, or NULL: looked up */
	const char *channel;		/* "sms" or "voice" */
	const char *origin;			/* "send", "redeliver", "fallback" or "resend" */
	const char *code;
	TimestampTz now;
	TimestampTz expires_at;		/* the code's */
	bytea	   *caller_digest;	/* keyed hash of a caller key, or NULL */
	const char *idempotency_key;	/* or NULL */
	const char *locale;			/* canonical BCP 47 tag, or NULL for the verification's */
	bool		v2;				/* the 0.2.0 schema is installed */
} PlivoOtpOutbound;

extern void plivo_otp_queue_message(const PlivoOtpOutbound *m, pg_uuid_t *message_id);

/* ---- common/url.c: the URLs the settings hold ---- */
extern bool plivo_otp_check_url(const char *url, bool *loopback, char **why);
extern char *plivo_otp_base_url(const char *url);

/* ---- common/phone.c: E.164 numbers ---- */
extern bool plivo_otp_normalize_phone(const char *input, char *out);
extern char *plivo_otp_mask_phone(const char *e164);
extern bool plivo_otp_allow_list_empty(const char *allow_list);
extern bool plivo_otp_country_allowed(const char *e164, const char *region,
									  const char *allow_list);
extern bool plivo_otp_valid_prefix_list(const char *list);

/* ---- common/phone_info.c: what a number is (region, type), from libphonenumber ---- */
typedef enum PlivoOtpNumberType
{
	PLIVO_OTP_NUMBER_UNKNOWN,
	PLIVO_OTP_NUMBER_MOBILE,
	PLIVO_OTP_NUMBER_FIXED_LINE,
	PLIVO_OTP_NUMBER_FIXED_LINE_OR_MOBILE,
	PLIVO_OTP_NUMBER_TOLL_FREE,
	PLIVO_OTP_NUMBER_PREMIUM_RATE,
	PLIVO_OTP_NUMBER_SHARED_COST,
	PLIVO_OTP_NUMBER_VOIP,
	PLIVO_OTP_NUMBER_PERSONAL,
	PLIVO_OTP_NUMBER_PAGER,
	PLIVO_OTP_NUMBER_UAN,
	PLIVO_OTP_NUMBER_VOICEMAIL
} PlivoOtpNumberType;

typedef struct PlivoOtpPhoneInfo
{
	bool		valid;			/* a number valid for its region */
	char		region[3];		/* ISO 3166-1 alpha-2 ("US", "JM"), "" when unknown */
	PlivoOtpNumberType type;
} PlivoOtpPhoneInfo;

extern void plivo_otp_phone_info(const char *e164, PlivoOtpPhoneInfo *info);
extern const char *plivo_otp_number_type_name(PlivoOtpNumberType type);
extern bool plivo_otp_region_known(const char *region);
extern bool plivo_otp_country_allowed_now(const char *e164);

/* ---- common/states.c: the state machines, one name table each ---- */

/* messages.dispatch_state: ours, never Plivo's words. */
typedef enum PlivoOtpDispatchState
{
	PLIVO_OTP_DISPATCH_PENDING,
	PLIVO_OTP_DISPATCH_SENDING,
	PLIVO_OTP_DISPATCH_ACCEPTED,
	PLIVO_OTP_DISPATCH_REFUSED,
	PLIVO_OTP_DISPATCH_EXPIRED,
	PLIVO_OTP_DISPATCH_UNKNOWN,
	PLIVO_OTP_DISPATCH_CANCELED
} PlivoOtpDispatchState;

/* verifications.state */
typedef enum PlivoOtpVerificationState
{
	PLIVO_OTP_VERIFICATION_PENDING,
	PLIVO_OTP_VERIFICATION_APPROVED,
	PLIVO_OTP_VERIFICATION_EXPIRED,
	PLIVO_OTP_VERIFICATION_MAX_ATTEMPTS,
	PLIVO_OTP_VERIFICATION_CANCELED
} PlivoOtpVerificationState;

/* What otp_check answers. */
typedef enum PlivoOtpCheckResult
{
	PLIVO_OTP_CHECK_APPROVED,
	PLIVO_OTP_CHECK_INCORRECT,
	PLIVO_OTP_CHECK_EXPIRED,
	PLIVO_OTP_CHECK_MAX_ATTEMPTS,
	PLIVO_OTP_CHECK_NOT_FOUND
} PlivoOtpCheckResult;

extern const char *plivo_otp_dispatch_state_name(PlivoOtpDispatchState state);
extern const char *plivo_otp_verification_state_name(PlivoOtpVerificationState state);
extern PlivoOtpVerificationState plivo_otp_verification_state_parse(const char *name);
extern const char *plivo_otp_check_result_name(PlivoOtpCheckResult result);

/* ---- common/spi.c: plans prepared once per process, checked results ---- */

/* A statement prepared on first use and kept for the life of the process. */
typedef struct PlivoOtpStatement
{
	const char *sql;
	int			nargs;
	Oid			argtypes[16];
	SPIPlanPtr	plan;
	int			cursor_options; /* SPI_prepare_cursor's: CURSOR_OPT_GENERIC_PLAN
								 * for a statement whose parameters must not
								 * steer its plan */
	bool		forced_plan;	/* planned with index paths only, whatever the
								 * statistics (forced_plans.c) */
	const char *indexes;		/* forced: the only indexes it may use on a
								 * table of which it names any (space-separated) */
} PlivoOtpStatement;

/* ---- common/forced_plans.c: plans that cannot depend on the planner's luck ---- */

typedef struct PlivoOtpForcedPlan
{
	int			guc_level;
	const char *saved_indexes;
} PlivoOtpForcedPlan;

extern void plivo_otp_forced_plans_init(void);
extern void plivo_otp_force_plans(PlivoOtpForcedPlan *f, const char *indexes);
extern void plivo_otp_force_plans_indexes_end(PlivoOtpForcedPlan *f);
extern void plivo_otp_force_plans_end(PlivoOtpForcedPlan *f);

extern void plivo_otp_spi_connect(void);
extern int	plivo_otp_exec(PlivoOtpStatement *stmt, Datum *values, const char *nulls,
						   bool read_only, long count);
extern int	plivo_otp_exec_forced(PlivoOtpStatement *stmt, Datum *values,
								  const char *nulls, long count);
extern int	plivo_otp_exec_latest(PlivoOtpStatement *stmt, Datum *values,
								  const char *nulls, long count);
extern Datum plivo_otp_get(int row, int col, bool *isnull);
extern char *plivo_otp_get_text(int row, int col);
extern bool plivo_otp_schema_is_v2(void);

/* ---- common/worker.c: what both workers share ---- */
typedef void (*PlivoOtpWork) (void *arg);

extern void plivo_otp_worker_connect(const char *name);
extern bool plivo_otp_run_work(const char *activity, PlivoOtpWork work, void *arg);
extern bool plivo_otp_run_work_within(const char *activity, PlivoOtpWork work, void *arg,
									  int timeout_ms);
extern bool plivo_otp_run_subtransaction(PlivoOtpWork work, void *arg);
extern bool plivo_otp_try_subtransaction(PlivoOtpWork work, void *arg, ErrorData **error);

/* ---- common/wait_events.c: what the workers wait for, in pg_stat_activity ---- */
typedef enum PlivoOtpWait
{
	PLIVO_OTP_WAIT_DISPATCHER_IDLE, /* nothing in flight: a wake-up, a timer */
	PLIVO_OTP_WAIT_DISPATCHER_HTTP, /* requests in flight: Plivo's answers */
	PLIVO_OTP_WAIT_DISPATCHER_ERROR_PAUSE,	/* the pause after an error */
	PLIVO_OTP_WAIT_LISTENER_IDLE,	/* no connection open */
	PLIVO_OTP_WAIT_LISTENER_CLIENTS,	/* connections open, requests to come */
	PLIVO_OTP_WAIT_LISTENER_RETRY,	/* cannot listen yet: the retry pause */
	PLIVO_OTP_NUM_WAITS
} PlivoOtpWait;

extern uint32 plivo_otp_wait_event(PlivoOtpWait w);
extern struct WaitEventSet *plivo_otp_worker_wait_set(int fd);

/* ---- common/errors.c: errors and texts that may carry a number or a code ---- */
extern Datum plivo_otp_hiding_statement(PGFunction fn, FunctionCallInfo fcinfo);
extern char *plivo_otp_sanitize_error(const char *text);


/* ---- crypto/secret.c: the key file and keys derived from it, the token file ---- */
typedef enum PlivoOtpKeyUse
{
	PLIVO_OTP_KEY_CODE_DIGEST,
	PLIVO_OTP_KEY_QUEUE_BODY,
	PLIVO_OTP_KEY_LOCK_TAG,
	PLIVO_OTP_KEY_FINGERPRINT,	/* not a key: tells which key the data was made with */
	PLIVO_OTP_KEY_CODE_SEAL,
	PLIVO_OTP_KEY_CALLER,
	PLIVO_OTP_KEY_ANSWER_TOKEN, /* a call's answer-URL token, from its message id */
	PLIVO_OTP_KEY_ANSWER_LOOKUP,	/* the token's digest, the only form stored */
	PLIVO_OTP_NUM_KEY_USES		/* (how many: not a key) */
} PlivoOtpKeyUse;

extern void plivo_otp_ensure_key_file(void);
extern const uint8 *plivo_otp_derived_key(PlivoOtpKeyUse use);
extern char *plivo_otp_read_auth_token(char **error);

/* ---- crypto/key_check.c: is the key file the one the data was made with? ---- */
extern bool plivo_otp_verify_key_fingerprint(const uint8 *fingerprint);
extern bool plivo_otp_record_key_fingerprint(void);

/* ---- crypto/codes.c: code generation, digests, queue body sealing ---- */
extern void plivo_otp_generate_code(int length, char *out);
extern void plivo_otp_code_digest(const pg_uuid_t *verification_id,
								  const char *purpose, const char *code,
								  uint8 *digest);
extern bool plivo_otp_code_matches(const pg_uuid_t *verification_id,
								   const char *purpose, const char *code,
								   const uint8 *stored_digest, int stored_len);
extern bytea *plivo_otp_seal(PlivoOtpKeyUse use, const pg_uuid_t *row_id,
							 const char *plaintext);
extern char *plivo_otp_unseal(PlivoOtpKeyUse use, const pg_uuid_t *row_id,
							  const bytea *sealed);
extern void plivo_otp_keyed_hash(PlivoOtpKeyUse use, const char *data, size_t len,
								 uint8 *out);
extern void plivo_otp_format_uuid(const pg_uuid_t *id, char *out);

/* ---- common/ids.c: time-ordered ids of verifications and messages ---- */
extern void plivo_otp_new_id(pg_uuid_t *uuid);

/* ---- common/random_pool.c: random bytes that are not secrets (ids, nonces) ---- */
extern void plivo_otp_public_random(uint8 *out, int len);

/* ---- crypto/answer_token.c: the unguessable token of a call's answer URL ---- */
#define PLIVO_OTP_ANSWER_TOKEN_LEN 36	/* formatted like a UUID, so routes parse it alike */
extern void plivo_otp_answer_token(const pg_uuid_t *message_id, char *out);
extern bytea *plivo_otp_answer_token_digest(const char *token);


/* ---- shmem/ledger.c: failed attempts that survive rollbacks ---- */
extern void plivo_otp_ledger_shmem_request(void);
extern void plivo_otp_ledger_shmem_startup(void);
extern int	plivo_otp_ledger_failures(const pg_uuid_t *id);
extern void plivo_otp_ledger_note_locked(const pg_uuid_t *id);
extern int	plivo_otp_ledger_take_locked(pg_uuid_t *ids, int max);
extern int	plivo_otp_ledger_add(const pg_uuid_t *id, TimestampTz expires_at,
								 int failures);

/* ---- shmem/send_budget.c: the sends of the last hour, counted before commit ---- */
extern void plivo_otp_budget_shmem_request(void);
extern void plivo_otp_budget_shmem_startup(void);
extern bool plivo_otp_budget_take(int cap, TimestampTz now, TimestampTz *retry_at);
extern int64 plivo_otp_budget_count(TimestampTz now);

/* ---- shmem/dispatcher_state.c: the dispatcher's latch, health and counters ---- */
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
	PLIVO_OTP_COUNTER_SMS_SEGMENTS,	/* segments of the SMS queued */
	PLIVO_OTP_NUM_COUNTERS
} PlivoOtpCounter;

typedef struct PlivoOtpDispatcherSnapshot
{
	int			pid;			/* 0 when no dispatcher runs */
	int			inflight;
	char		last_error[256];
	TimestampTz last_error_at;
	TimestampTz last_accepted_at;	/* Plivo last took a message; 0: not yet */
	TimestampTz counters_since;
	uint64		counters[PLIVO_OTP_NUM_COUNTERS];
} PlivoOtpDispatcherSnapshot;

extern void plivo_otp_state_shmem_request(void);
extern void plivo_otp_state_shmem_startup(void);
extern void plivo_otp_count(PlivoOtpCounter counter, uint64 n);
extern void plivo_otp_set_dispatcher_latch(Latch *latch);
extern void plivo_otp_set_dispatcher_pid(pid_t pid);
extern void plivo_otp_set_dispatcher_inflight(int n);
extern void plivo_otp_set_last_error(const char *error);
extern void plivo_otp_dispatcher_snapshot(PlivoOtpDispatcherSnapshot *snap);
extern void plivo_otp_wake_dispatcher(void);
extern uint64 plivo_otp_dispatcher_wakeups(void);
extern void plivo_otp_set_dispatcher_wants_wakes(bool wants);

/* common/table_cache.c */
typedef enum PlivoOtpConfigTable
{
	PLIVO_OTP_TEMPLATES,
	PLIVO_OTP_SENDERS,
	PLIVO_OTP_NUM_CONFIG_TABLES
} PlivoOtpConfigTable;
extern bool plivo_otp_config_table_has_rows(PlivoOtpConfigTable table, const char *channel);

/* ---- shmem/activity.c: per-minute counts for the monitoring views ---- */
#define PLIVO_OTP_ACTIVITY_MINUTES (24 * 60)	/* one-minute buckets: 24 hours */

/*
 * What the ring counts.  The first PLIVO_OTP_NUM_COUNTERS are the counters
 * of dispatcher_state.c, in their order (plivo_otp_count feeds both); the
 * names are in activity_sql.c.
 */
typedef enum PlivoOtpActivity
{
	PLIVO_OTP_ACT_SENDS,
	PLIVO_OTP_ACT_REFUSED_SENDS,
	PLIVO_OTP_ACT_APPROVED,
	PLIVO_OTP_ACT_FAILED_CHECKS,
	PLIVO_OTP_ACT_PLIVO_ACCEPTED,
	PLIVO_OTP_ACT_RETRIED,
	PLIVO_OTP_ACT_PLIVO_REFUSED,
	PLIVO_OTP_ACT_EXPIRED,
	PLIVO_OTP_ACT_UNKNOWN,
	PLIVO_OTP_ACT_SMS_SEGMENTS,
	/* sends refused, by limit (each also counts in REFUSED_SENDS) */
	PLIVO_OTP_ACT_REFUSED_COOLDOWN,
	PLIVO_OTP_ACT_REFUSED_NUMBER_CAP,
	PLIVO_OTP_ACT_REFUSED_CALLER_CAP,
	PLIVO_OTP_ACT_REFUSED_GLOBAL_BUDGET,
	PLIVO_OTP_ACT_REFUSED_COUNTRY,
	PLIVO_OTP_ACT_REFUSED_FIXED_LINE,
	/* checks that locked a code (max_attempts reached) */
	PLIVO_OTP_ACT_LOCKOUTS,
	/* the listener: callbacks recorded, and refused by reason */
	PLIVO_OTP_ACT_CB_RECORDED,
	PLIVO_OTP_ACT_CB_DUPLICATE,
	PLIVO_OTP_ACT_CB_BAD_SIGNATURE,
	PLIVO_OTP_ACT_CB_SIGNATURE_ERROR,
	PLIVO_OTP_ACT_CB_REPLAY,
	PLIVO_OTP_ACT_CB_V2_REFUSED,
	PLIVO_OTP_ACT_CB_V3_REQUIRED,
	PLIVO_OTP_ACT_CB_MALFORMED,
	PLIVO_OTP_ACT_CB_INCOMPLETE,
	PLIVO_OTP_ACT_CB_NOT_FOUND,
	PLIVO_OTP_ACT_CB_METHOD,
	PLIVO_OTP_ACT_CB_TOO_LARGE,
	PLIVO_OTP_ACT_CB_MEDIA_TYPE,
	PLIVO_OTP_ACT_CB_NOT_CONFIGURED,
	PLIVO_OTP_ACT_CB_NOT_RECORDED,
	PLIVO_OTP_ACT_CB_UNKNOWN_UUID,
	PLIVO_OTP_ACT_VOICE_ANSWER_REFUSED,
	PLIVO_OTP_NUM_ACTIVITIES
} PlivoOtpActivity;

extern void plivo_otp_activity_shmem_request(void);
extern void plivo_otp_activity_shmem_startup(void);
extern void plivo_otp_activity_add(PlivoOtpActivity event, uint64 n);
extern void plivo_otp_listener_count(PlivoOtpActivity outcome);
extern TimestampTz plivo_otp_activity_since(void);
extern void plivo_otp_activity_sum(TimestampTz now, int minutes, uint64 *sums);

/* ---- shmem/commit_wake.c: wake the dispatcher when a transaction that queued commits ---- */
extern void plivo_otp_wake_at_commit(void);


/* ---- api/send_locks.c, api/send_policy.c: otp_send's locks and limits ---- */

/* What a key's row of plivo_otp.send_counters counted before this message. */
typedef struct PlivoOtpSendCount
{
	int64		window;			/* the bucket length it was counted in (us) */
	TimestampTz bucket_start;	/* start of the current bucket */
	int			bucket_count;	/* messages in it, before this one */
	int			previous_count; /* messages in the bucket before */
	TimestampTz previous_send_at;	/* the latest message before this one */
	bool		has_previous_send;
} PlivoOtpSendCount;

/* One send's locks and counts (send_policy.c), from plivo_otp_tally_send. */
typedef struct PlivoOtpSendTally
{
	bool		v2;				/* counted in plivo_otp.send_counters */
	const char *phone;
	bytea	   *caller_digest;	/* NULL without a caller key */
	PlivoOtpSendCount number;	/* v2 only */
	PlivoOtpSendCount caller;	/* v2 and a caller key only */
} PlivoOtpSendTally;

extern void plivo_otp_lock_send_key(const char *key, bool v2, const char *message);
extern void plivo_otp_lock_number_for_check(const char *phone, bool v2, const char *message);
extern bool plivo_otp_try_lock_send_key(const char *key);
extern void plivo_otp_count_send_key(const char *key, int window_secs, TimestampTz now,
									 const char *message, PlivoOtpSendCount *count);
extern int	plivo_otp_purge_send_counters(TimestampTz idle_since, int limit);
extern void plivo_otp_tally_send(PlivoOtpSendTally *tally, const char *phone,
								 const char *caller_key, bytea *caller_digest,
								 TimestampTz now, bool v2, const char *what);
extern void plivo_otp_check_send_policy(const PlivoOtpSendTally *tally, TimestampTz now);
extern void plivo_otp_check_fallback_policy(const char *phone, TimestampTz now);

/* ---- api/destination.c: valid, allowed, and reachable by the channel ---- */
extern void plivo_otp_check_destination(const char *phone, PlivoOtpPhoneInfo *info);
extern void plivo_otp_check_channel_for_number(const char *phone, const char *channel,
											   const PlivoOtpPhoneInfo *info);

/* ---- api/send.c ---- */
extern void plivo_otp_require_dispatch_database(void);

/* ---- api/status.c ---- */
extern void plivo_otp_cancel_unsent_messages(Datum code_id, TimestampTz now);

/* ---- api/live_code.c: a live code, opened to be delivered again ---- */
extern int	plivo_otp_min_redelivery_life(void);
/* Seconds of life a code needs beyond ring_timeout for a call to be placed. */
#define PLIVO_OTP_CALL_LIFE_MARGIN 15
extern int	plivo_otp_min_call_life(void);
extern int	plivo_otp_min_redelivery_life_by(const char *channel);
extern const char *plivo_otp_open_live_code(const pg_uuid_t *id, int attempts,
											int max_attempts, const bytea *sealed,
											char *code);

/*
 * api/status.c, api/messages.c: the error_text of message m (an SQL alias)
 * with the 0.2.0 schema: the meaning of its error code for its channel
 * (Plivo's SMS error codes, or its call hang-up causes), else our own
 * last_error.
 */
#define PLIVO_OTP_ERROR_TEXT(m) \
	"coalesce(CASE WHEN " m ".channel = 'voice'" \
	" THEN (SELECT meaning FROM plivo_otp.plivo_hangup_causes WHERE code = " m ".error_code)" \
	" ELSE (SELECT meaning FROM plivo_otp.plivo_error_codes WHERE code = " m ".error_code) END," \
	" " m ".last_error)"

/* ---- api/args.c: arguments shared by the SQL functions ---- */
extern void plivo_otp_phone_arg(FunctionCallInfo fcinfo, int argno, char *out);
extern bool plivo_otp_valid_purpose(const char *purpose);
extern char *plivo_otp_purpose_arg(FunctionCallInfo fcinfo, int argno);
extern char *plivo_otp_channel_arg(FunctionCallInfo fcinfo, int argno);
extern char *plivo_otp_locale_arg(FunctionCallInfo fcinfo, int argno);
extern bytea *plivo_otp_caller_key_arg(FunctionCallInfo fcinfo, int argno, char **key);


/* ---- listener/callback_auth.c: see listener/callback_auth.h (plain C) ---- */

/* ---- listener/delivery.c: callbacks become delivery events and states ---- */

/*
 * Signature nonces are remembered this long (dispatcher/retention.c).  A V2
 * signature, which covers only the URL and the nonce, counts only for the
 * message its URL names (listener/callback_auth.h), and only while that
 * message is younger than this (listener/delivery.c): once its nonce is
 * forgotten, a V2 request can no longer change even that message.
 */
#define PLIVO_OTP_NONCE_WINDOW_SECS (24 * 3600)

/* api/events.c: the channel of NOTIFY plivo_otp_events (state changes as JSON). */
#define PLIVO_OTP_EVENTS_CHANNEL "plivo_otp_events"

typedef enum PlivoIngestResult
{
	PLIVO_INGEST_RECORDED,		/* new event, stored (and applied if its message is known) */
	PLIVO_INGEST_DUPLICATE,		/* the same event was stored before: nothing changed */
	PLIVO_INGEST_REPLAYED,		/* the nonce was seen before: nothing changed */
	PLIVO_INGEST_INCOMPLETE,	/* no MessageUUID or Status */
	PLIVO_INGEST_STALE_V2,		/* V2 only, for a message older than the nonce window */
	PLIVO_INGEST_V2_UNBOUND,	/* V2 only, on a URL that names no message of ours */
	PLIVO_INGEST_V2_OTHER_MESSAGE,	/* V2 only, MessageUUID not that of the URL's message */
	PLIVO_INGEST_V3_REQUIRED	/* a call's callback without V3 */
} PlivoIngestResult;

extern PlivoIngestResult plivo_otp_ingest_callback(const PlivoParam *params, int nparams,
												   const char *nonce, const char *other_nonce,
												   bool body_signed, const char *token);
extern int	plivo_otp_apply_waiting_events(void);
extern int	plivo_otp_apply_waiting_events_for(const char **uuids, int n);
extern bool plivo_otp_record_nonces(const char *nonce, const char *other_nonce);
extern bool plivo_otp_adopt_call_uuid(Datum message_id, const char *uuid);
extern bool plivo_otp_record_call_event(const char *uuid, const char *status,
										const char *error_code,
										const PlivoParam *params, int nparams);

#endif							/* PLIVO_OTP_H */
