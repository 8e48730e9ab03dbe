/*-------------------------------------------------------------------------
 *
 * forced_plans.c
 *	  Plans that cannot depend on the planner's luck, for the statements
 *	  that spi.c runs forced.
 *
 * Statistics are stale right after a bulk commit (an ANALYZE that saw a
 * table of finished rows estimates no pending row), and tables vacuumed
 * while still empty are planned on their size at the time (a page or
 * two).  On either, a plan can turn a statement into a scan of the whole
 * queue or of the history, and a generic plan keeps it: measured, otp_send
 * at a third of its rate within 15 s of such a start.  Three things make the
 * plan the one the statement was written for:
 *
 * - Settings: sequential and bitmap scans, sorts of the rows read, hash and
 *	 merge joins are off, and the generic plan is kept (planned once, not
 *	 on every call).  A sort of the few rows taken remains.
 * - Planned for scale: the extension's tables (and their indexes) count
 *	 as at least PLAN_AS_ROWS rows.  On a table believed to be a page the
 *	 costs tie, and a full scan of an index with a join filter, or of
 *	 another partial index of the same rows, is as cheap as the look-up by
 *	 key: a number's pending code was looked up through the index of every
 *	 pending code's expiry (verifications_pending_expiry), and a claim read
 *	 all of it for each row it took; kept, such a plan costs what the table
 *	 grew to.  A plan right for a large table is right for a small one.
 * - The indexes a statement names (PlivoOtpStatement.indexes): on a table
 *	 of which it names any, the planner sees only those.
 *
 * All three hold for everything planned while the statement runs, so also for
 * the foreign-key checks of its writes (an insert into messages checks its
 * code through verifications_pkey).  The settings go back to what they
 * were as the statement returns or its (sub)transaction aborts; the index
 * list as it returns or fails.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "optimizer/plancat.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#include "plivo_otp.h"

/* The least number of rows a table of ours (or an index) is planned for. */
#define PLAN_AS_ROWS 1e6
#define PLAN_ROWS_PER_PAGE 100

static get_relation_info_hook_type prev_get_relation_info_hook = NULL;

/* How many forced statements are running (nested: a trigger's, a check's). */
static int	forcing = 0;

/* The names the statement being run allows (space-separated), or NULL. */
static const char *allowed_indexes = NULL;

/* Is name one of the space-separated names of list? */
static bool
name_listed(const char *list, const char *name)
{
	size_t		len = strlen(name);

	for (const char *p = list; (p = strstr(p, name)) != NULL; p += len)
	{
		if ((p == list || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0'))
			return true;
	}
	return false;
}

/* A table of ours (and its indexes) as large as PLAN_AS_ROWS, if smaller. */
static void
plan_for_scale(RelOptInfo *rel)
{
	ListCell   *lc;

	rel->tuples = Max(rel->tuples, PLAN_AS_ROWS);
	rel->pages = Max(rel->pages, (BlockNumber) (PLAN_AS_ROWS / PLAN_ROWS_PER_PAGE));
	foreach(lc, rel->indexlist)
	{
		IndexOptInfo *index = (IndexOptInfo *) lfirst(lc);

		index->tuples = Max(index->tuples, PLAN_AS_ROWS);
		index->pages = Max(index->pages, (BlockNumber) (PLAN_AS_ROWS / PLAN_ROWS_PER_PAGE));
	}
}

/*
 * While a forced statement is planned: a table of ours planned for scale,
 * and, of a table of which the statement names an index, only the named.
 */
static void
shape_forced_plan(PlannerInfo *root, Oid relid, bool inhparent, RelOptInfo *rel)
{
	bool		names_any = false;
	ListCell   *lc;

	if (prev_get_relation_info_hook)
		prev_get_relation_info_hook(root, relid, inhparent, rel);
	if (forcing == 0 || get_rel_namespace(relid) != get_namespace_oid(PLIVO_OTP_SCHEMA, true))
		return;
	plan_for_scale(rel);
	if (allowed_indexes == NULL)
		return;
	foreach(lc, rel->indexlist)
	{
		char	   *name = get_rel_name(((IndexOptInfo *) lfirst(lc))->indexoid);

		names_any |= name != NULL && name_listed(allowed_indexes, name);
	}
	if (!names_any)
		return;
	foreach(lc, rel->indexlist)
	{
		char	   *name = get_rel_name(((IndexOptInfo *) lfirst(lc))->indexoid);

		if (name == NULL || !name_listed(allowed_indexes, name))
			rel->indexlist = foreach_delete_current(rel->indexlist, lc);
	}
}

/* From _PG_init. */
void
plivo_otp_forced_plans_init(void)
{
	prev_get_relation_info_hook = get_relation_info_hook;
	get_relation_info_hook = shape_forced_plan;
}

/* Begin a forced statement that allows indexes (or NULL: any of its tables' own). */
void
plivo_otp_force_plans(PlivoOtpForcedPlan *f, const char *indexes)
{
	static const char *const off[] = {
		"enable_seqscan", "enable_bitmapscan", "enable_sort", "enable_incremental_sort",
		"enable_hashjoin", "enable_mergejoin", "enable_material",
		/* (a path that is the only one left costs a disable_cost: no JIT for it) */
		"jit"
	};

	f->guc_level = NewGUCNestLevel();
	for (int i = 0; i < lengthof(off); i++)
		(void) set_config_option(off[i], "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("plan_cache_mode", "force_generic_plan", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	f->saved_indexes = allowed_indexes;
	allowed_indexes = indexes;
	forcing++;
}

/* The index list as before (also when the statement failed). */
void
plivo_otp_force_plans_indexes_end(PlivoOtpForcedPlan *f)
{
	allowed_indexes = f->saved_indexes;
	forcing--;
}

/* The statement returned: its settings as before. */
void
plivo_otp_force_plans_end(PlivoOtpForcedPlan *f)
{
	plivo_otp_force_plans_indexes_end(f);
	AtEOXact_GUC(true, f->guc_level);
}
