/*-------------------------------------------------------------------------
 *
 * table_cache.c
 *	  What a backend knows of the administrator's small tables
 *	  (plivo_otp.templates and plivo_otp.senders): which channels have rows
 *	  at all, so that a send skips the look-up when the answer can only be
 *	  the settings'.  The two queries were a tenth of otp_send's time in a
 *	  profile, on an installation with neither table used.
 *
 * The knowledge lasts until a change to the table commits.  A statement
 * trigger on each table (plivo_otp_config_table_changed) queues a relcache
 * invalidation of it: PostgreSQL sends it to every backend when, and only
 * when, the writing transaction commits (and replays it locally at abort
 * and at each command of the writer's own transaction), and this file's
 * callback forgets what it knew.  Invalidations are read before each use,
 * so a send that starts after the writer's COMMIT returned sees the change.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "plivo_otp.h"

PG_FUNCTION_INFO_V1(plivo_otp_config_table_changed);

/* A channel's bit in a table's knowledge; CHANNEL_OTHER for any other name. */
#define CHANNEL_SMS		0x01
#define CHANNEL_VOICE	0x02
#define CHANNEL_OTHER	0x04

typedef struct TableKnowledge
{
	const char *name;			/* in schema plivo_otp */
	PlivoOtpStatement channels_query;	/* its channels, one row each */
	Oid			relid;			/* InvalidOid while unknown */
	bool		known;
	int			channels;		/* CHANNEL_* bits of the channels with rows */
} TableKnowledge;

static TableKnowledge tables[PLIVO_OTP_NUM_CONFIG_TABLES] = {
	[PLIVO_OTP_TEMPLATES] = {"templates", {"SELECT DISTINCT channel FROM plivo_otp.templates"}},
	[PLIVO_OTP_SENDERS] = {"senders", {"SELECT DISTINCT channel FROM plivo_otp.senders"}},
};

static bool callback_registered = false;
static uint64 invalidations = 0;	/* how many callbacks so far: a fill raced one */

static int
channel_bit(const char *channel)
{
	if (strcmp(channel, "sms") == 0)
		return CHANNEL_SMS;
	if (strcmp(channel, "voice") == 0)
		return CHANNEL_VOICE;
	return CHANNEL_OTHER;
}

/* A relcache invalidation: of one of our tables, or of every relation (InvalidOid). */
static void
forget_tables(Datum arg, Oid relid)
{
	invalidations++;
	for (int i = 0; i < PLIVO_OTP_NUM_CONFIG_TABLES; i++)
	{
		if (relid == InvalidOid || relid == tables[i].relid)
			tables[i].known = false;
	}
}

/* Read the table's channels (latest snapshot); remember them unless an invalidation came meanwhile. */
static void
learn_table(TableKnowledge *t)
{
	uint64		before = invalidations;
	Oid			relid = get_relname_relid(t->name, get_namespace_oid("plivo_otp", false));
	int			channels = 0;
	int			n;

	n = plivo_otp_exec_latest(&t->channels_query, NULL, NULL, 0);
	for (int i = 0; i < n; i++)
		channels |= channel_bit(plivo_otp_get_text(i, 1));
	if (invalidations != before || !OidIsValid(relid))
		return;					/* used once, not remembered */
	t->relid = relid;
	t->channels = channels;
	t->known = true;
}

/*
 * Whether table has any row for channel: false only when it surely has
 * none as of the latest committed state.  SPI connected; the 0.2.0 schema.
 */
bool
plivo_otp_config_table_has_rows(PlivoOtpConfigTable table, const char *channel)
{
	TableKnowledge *t = &tables[table];

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(forget_tables, (Datum) 0);
		callback_registered = true;
	}
	AcceptInvalidationMessages();
	if (!t->known)
	{
		learn_table(t);
		if (!t->known)
			return true;		/* not remembered: let the caller look */
	}
	return (t->channels & (channel_bit(channel) | CHANNEL_OTHER)) != 0;
}

/*
 * The statement trigger of plivo_otp.templates and plivo_otp.senders: every
 * backend forgets what it knew of the table once this transaction commits.
 */
Datum
plivo_otp_config_table_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("plivo_otp.config_table_changed() must be called as a statement trigger"),
				 errhint("It is the FOR EACH STATEMENT trigger of plivo_otp.templates and plivo_otp.senders.")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
