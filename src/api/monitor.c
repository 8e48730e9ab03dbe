/*-------------------------------------------------------------------------
 *
 * monitor.c
 *	  The shared-memory side of the monitoring views (schema
 *	  plivo_otp_monitor): the per-minute activity counts by time window
 *	  (shmem/activity.c) and the dispatcher's health.
 *
 * Neither function reads a table: the views add what the tables say.
 * Nothing they return names a number or a code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_monitor_activity);
PG_FUNCTION_INFO_V1(plivo_otp_monitor_dispatcher);

#define ACTIVITY_COLUMNS 8
#define DISPATCHER_COLUMNS 6
#define NUM_WINDOWS 4

/* What each activity is called in the views, its group, and the HTTP status a callback got. */
typedef struct ActivityName
{
	const char *name;
	const char *category;
	int			http_status;	/* 0: not a callback */
} ActivityName;

static const ActivityName activity_names[PLIVO_OTP_NUM_ACTIVITIES] = {
	[PLIVO_OTP_ACT_SENDS] = {"sends", "api", 0},
	[PLIVO_OTP_ACT_REFUSED_SENDS] = {"refused_sends", "api", 0},
	[PLIVO_OTP_ACT_APPROVED] = {"approved", "api", 0},
	[PLIVO_OTP_ACT_FAILED_CHECKS] = {"failed_checks", "api", 0},
	[PLIVO_OTP_ACT_PLIVO_ACCEPTED] = {"plivo_accepted", "dispatcher", 0},
	[PLIVO_OTP_ACT_RETRIED] = {"retried", "dispatcher", 0},
	[PLIVO_OTP_ACT_PLIVO_REFUSED] = {"plivo_refused", "dispatcher", 0},
	[PLIVO_OTP_ACT_EXPIRED] = {"expired_unsent", "dispatcher", 0},
	[PLIVO_OTP_ACT_UNKNOWN] = {"outcome_unknown", "dispatcher", 0},
	[PLIVO_OTP_ACT_SMS_SEGMENTS] = {"sms_segments", "api", 0},
	[PLIVO_OTP_ACT_REFUSED_COOLDOWN] = {"refused_cooldown", "refusal", 0},
	[PLIVO_OTP_ACT_REFUSED_NUMBER_CAP] = {"refused_number_cap", "refusal", 0},
	[PLIVO_OTP_ACT_REFUSED_CALLER_CAP] = {"refused_caller_cap", "refusal", 0},
	[PLIVO_OTP_ACT_REFUSED_GLOBAL_BUDGET] = {"refused_global_budget", "refusal", 0},
	[PLIVO_OTP_ACT_REFUSED_COUNTRY] = {"refused_country", "refusal", 0},
	[PLIVO_OTP_ACT_REFUSED_FIXED_LINE] = {"refused_fixed_line", "refusal", 0},
	[PLIVO_OTP_ACT_LOCKOUTS] = {"lockouts", "api", 0},
	[PLIVO_OTP_ACT_CB_RECORDED] = {"recorded", "callback", 200},
	[PLIVO_OTP_ACT_CB_DUPLICATE] = {"duplicate", "callback", 200},
	[PLIVO_OTP_ACT_CB_BAD_SIGNATURE] = {"bad_signature", "callback", 403},
	[PLIVO_OTP_ACT_CB_SIGNATURE_ERROR] = {"signature_error", "callback", 503},
	[PLIVO_OTP_ACT_CB_REPLAY] = {"replay", "callback", 403},
	[PLIVO_OTP_ACT_CB_V2_REFUSED] = {"v2_refused", "callback", 403},
	[PLIVO_OTP_ACT_CB_V3_REQUIRED] = {"v3_required", "callback", 403},
	[PLIVO_OTP_ACT_CB_MALFORMED] = {"malformed", "callback", 400},
	[PLIVO_OTP_ACT_CB_INCOMPLETE] = {"incomplete", "callback", 400},
	[PLIVO_OTP_ACT_CB_NOT_FOUND] = {"not_found", "callback", 404},
	[PLIVO_OTP_ACT_CB_METHOD] = {"method_not_allowed", "callback", 405},
	[PLIVO_OTP_ACT_CB_TOO_LARGE] = {"too_large", "callback", 413},
	[PLIVO_OTP_ACT_CB_MEDIA_TYPE] = {"not_form_data", "callback", 415},
	[PLIVO_OTP_ACT_CB_NOT_CONFIGURED] = {"not_configured", "callback", 503},
	[PLIVO_OTP_ACT_CB_NOT_RECORDED] = {"not_recorded", "callback", 503},
	[PLIVO_OTP_ACT_CB_UNKNOWN_UUID] = {"unknown_uuid_dropped", "callback", 0},
	[PLIVO_OTP_ACT_VOICE_ANSWER_REFUSED] = {"voice_answer_no_code", "callback", 200},
};

/* The windows, in minutes of the ring (0: since the counts started). */
static const int window_minutes[NUM_WINDOWS] = {5, 60, PLIVO_OTP_ACTIVITY_MINUTES, 0};

/*
 * One row per activity: its name, group, the HTTP status of a callback's
 * answer, its counts in the last 5 minutes, hour and 24 hours (whole
 * one-minute buckets, the current one included), since the counts started,
 * and when that was.
 */
Datum
plivo_otp_monitor_activity(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	uint64		sums[NUM_WINDOWS][PLIVO_OTP_NUM_ACTIVITIES] = {{0}};
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz since = plivo_otp_activity_since();

	InitMaterializedSRF(fcinfo, 0);
	for (int w = 0; w < NUM_WINDOWS; w++)
		plivo_otp_activity_sum(now, window_minutes[w], sums[w]);
	for (int i = 0; i < PLIVO_OTP_NUM_ACTIVITIES; i++)
	{
		Datum		values[ACTIVITY_COLUMNS];
		bool		nulls[ACTIVITY_COLUMNS] = {0};

		values[0] = CStringGetTextDatum(activity_names[i].name);
		values[1] = CStringGetTextDatum(activity_names[i].category);
		values[2] = Int32GetDatum(activity_names[i].http_status);
		nulls[2] = activity_names[i].http_status == 0;
		for (int w = 0; w < NUM_WINDOWS; w++)
			values[3 + w] = Int64GetDatum((int64) sums[w][i]);
		values[7] = TimestampTzGetDatum(since);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * The dispatcher's side of its health: requests in flight, its last error
 * and when, when Plivo last took a message, its pid (NULL when it does not
 * run) and since when the counters count.
 */
Datum
plivo_otp_monitor_dispatcher(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[DISPATCHER_COLUMNS];
	bool		nulls[DISPATCHER_COLUMNS] = {0};
	PlivoOtpDispatcherSnapshot snap;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "plivo_otp: return type must be a row type");
	plivo_otp_dispatcher_snapshot(&snap);
	values[0] = Int32GetDatum(snap.inflight);
	values[1] = CStringGetTextDatum(snap.last_error);
	nulls[1] = snap.last_error[0] == '\0';
	values[2] = TimestampTzGetDatum(snap.last_error_at);
	nulls[2] = snap.last_error_at == 0;
	values[3] = TimestampTzGetDatum(snap.last_accepted_at);
	nulls[3] = snap.last_accepted_at == 0;
	values[4] = Int32GetDatum(snap.pid);
	nulls[4] = snap.pid == 0;
	values[5] = TimestampTzGetDatum(snap.counters_since);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
