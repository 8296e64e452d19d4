/*-------------------------------------------------------------------------
 * activity_batch.c
 *	  presence.log_activity_batch(): many activity rows in one call, the
 *	  way COPY writes a table.
 *
 * The rows are checked and their sessions and users found and locked
 * first (activity_rows_check), then written in one pass: each row gets
 * its id and its link of the session's chain here (audit_chain_append,
 * the insert trigger's own code and cache), is checked against the
 * table's constraints, and goes to the heap with table_multi_insert a
 * thousand at a time, then to every index.  What a plain INSERT would do
 * per row and this does not:
 *
 *	- the activity_chain trigger, which would compute the same link again
 *	  (it still guards every other INSERT into the table);
 *	- the foreign-key checks, a query each per row: their locks are taken
 *	  once per distinct session and user, FOR KEY SHARE as the checks
 *	  take them, before any row is written.
 *
 * Every other trigger of the table fires as for an INSERT (statement
 * triggers, the presence NOTIFY with its transition table).  The fast
 * way is taken only on the table it knows: the columns, foreign keys and
 * row triggers the extension made, no rules, no row security; anything
 * else, say a row trigger an administrator added, and the rows go
 * through a plain INSERT like any other.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "rewrite/rewriteHandler.h"
#include "utils/acl.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

#include "audit_chain.h"
#include "sql_checks.h"

/* Rows handed to table_multi_insert at a time, as COPY does. */
#define BATCH_FLUSH_ROWS 1000

/* The columns of presence.activity_log this writer fills. */
typedef enum BatchColumn
{
	COL_ID,
	COL_SESSION_ID,
	COL_USER_ID,
	COL_ACTIVITY_TYPE,
	COL_DETAILS,
	COL_IP_ADDRESS,
	COL_USER_AGENT,
	COL_CREATED_AT,
	COL_CHAIN_SEQ,
	COL_PREV_HASH,
	COL_ROW_HASH,
	BATCH_COLUMNS
} BatchColumn;

/*
 * Their types and type modifiers as the extension made them: the writer
 * stores its values without the coercion an INSERT applies, so a column
 * narrowed to varchar(20) or timestamptz(0) must send the rows through
 * a plain INSERT, which enforces it.
 */
static const struct
{
	const char *name;
	Oid			type;
	int32		typmod;
}			batch_columns[BATCH_COLUMNS] = {
	[COL_ID] = {"id", UUIDOID, -1},
	[COL_SESSION_ID] = {"session_id", UUIDOID, -1},
	[COL_USER_ID] = {"user_id", UUIDOID, -1},
	[COL_ACTIVITY_TYPE] = {"activity_type", VARCHAROID, 100 + VARHDRSZ},
	[COL_DETAILS] = {"details", JSONBOID, -1},
	[COL_IP_ADDRESS] = {"ip_address", INETOID, -1},
	[COL_USER_AGENT] = {"user_agent", TEXTOID, -1},
	[COL_CREATED_AT] = {"created_at", TIMESTAMPTZOID, -1},
	[COL_CHAIN_SEQ] = {"chain_seq", INT8OID, -1},
	[COL_PREV_HASH] = {"prev_hash", BYTEAOID, -1},
	[COL_ROW_HASH] = {"row_hash", BYTEAOID, -1},
};

/* What the writer needs to know of the table, from batch_table_known(). */
typedef struct BatchTable
{
	AttrNumber	attnums[BATCH_COLUMNS];
	TriggerDesc *triggers;		/* the table's, less those this writer replaces */
} BatchTable;

/* A call's output: the ids, in row order. */
typedef struct BatchOutput
{
	Tuplestorestate *store;
	TupleDesc	desc;
} BatchOutput;

PG_FUNCTION_INFO_V1(presence_log_activity_batch);

static void batch_output_init(FunctionCallInfo fcinfo, BatchOutput *output);
static bool batch_table_known(Relation rel, BatchTable *table);
static bool batch_foreign_keys_checked(Relation rel, Oid namespace, List **checked);
static void batch_write(Relation rel, BatchTable *table, ActivityRows *rows, BatchOutput *output);
static void batch_fill_row(TupleTableSlot *slot, BatchTable *table, ActivityRows *rows, int i,
						   Datum empty_details, MemoryContext row_context);
static void batch_insert_plain(ActivityRows *rows, FunctionCallInfo fcinfo, BatchOutput *output);
static bytea *hash_bytea(const uint8 *hash);

/*
 * log_activity_batch(session_ids, user_ids, activity_types, details,
 *					  ip_addresses, user_agents, created_ats) -> SETOF uuid
 *
 * Appends row i of the parallel arrays as link i of its session's chain
 * and returns the ids in that order (docs/sql-reference.md).  Nothing is
 * written unless every row passes log_activity()'s checks.
 */
Datum
presence_log_activity_batch(PG_FUNCTION_ARGS)
{
	ActivityRows rows;
	BatchOutput output;
	Oid			namespace = get_namespace_oid("presence", false);
	Oid			relid = get_relname_relid("activity_log", namespace);
	Relation	rel;
	BatchTable	table;
	AclResult	acl;

	batch_output_init(fcinfo, &output);
	activity_rows_check(fcinfo, true, &rows);
	if (rows.count == 0)
		return (Datum) 0;

	if (!OidIsValid(relid))
		elog(ERROR, "presence: table presence.activity_log is missing");
	acl = pg_class_aclcheck(relid, GetUserId(), ACL_INSERT);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_TABLE, "activity_log");

	rel = table_open(relid, RowExclusiveLock);
	if (batch_table_known(rel, &table))
		batch_write(rel, &table, &rows, &output);
	else
		batch_insert_plain(&rows, fcinfo, &output);
	table_close(rel, NoLock);
	return (Datum) 0;
}

/* The call's result set, materialised: one uuid column. */
static void
batch_output_init(FunctionCallInfo fcinfo, BatchOutput *output)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext caller_context;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						errmsg("presence: log_activity_batch called in a context that cannot accept a set")));
	caller_context = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	output->desc = CreateTemplateTupleDesc(1);
	TupleDescInitEntry(output->desc, 1, "id", UUIDOID, -1, 0);
	output->store = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = output->store;
	rsinfo->setDesc = output->desc;
	MemoryContextSwitchTo(caller_context);
}

/*
 * Whether rel is the activity log as the extension made it, so rows can
 * be written without its chain trigger and foreign-key triggers: exactly
 * the known columns (of the known types), no rules, no row security, and
 * no row-level insert trigger but activity_chain and the checks of the
 * two foreign keys batch_foreign_keys_checked() accepts.  Fills table
 * with the column numbers and the triggers that must still fire.
 */
static bool
batch_table_known(Relation rel, BatchTable *table)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Oid			namespace = RelationGetNamespace(rel);
	Oid			chain_function;
	List	   *checked = NIL;
	TriggerDesc *triggers;
	int			kept = 0;
	int			columns = 0;

	/* a partition: only an INSERT checks its partition constraint */
	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relispartition ||
		rel->rd_rel->relrowsecurity || rel->rd_rules != NULL)
		return false;
	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped)
			columns++;
	if (columns != BATCH_COLUMNS)
		return false;
	for (int c = 0; c < BATCH_COLUMNS; c++)
	{
		AttrNumber	attnum = InvalidAttrNumber;

		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped && strcmp(NameStr(att->attname), batch_columns[c].name) == 0)
				attnum = att->attnum;
		}
		if (attnum == InvalidAttrNumber ||
			TupleDescAttr(desc, attnum - 1)->atttypid != batch_columns[c].type ||
			TupleDescAttr(desc, attnum - 1)->atttypmod != batch_columns[c].typmod)
			return false;
		table->attnums[c] = attnum;
	}
	/* ids are drawn here as presence._activity_id() draws them: only for that default */
	{
		Node	   *id_default = build_column_default(rel, table->attnums[COL_ID]);
		Oid			id_function = LookupFuncName(list_make2(makeString("presence"), makeString("_activity_id")),
												 0, NULL, true);

		if (id_default == NULL || !IsA(id_default, FuncExpr) ||
			((FuncExpr *) id_default)->funcid != id_function || !OidIsValid(id_function))
			return false;
	}

	if (!batch_foreign_keys_checked(rel, namespace, &checked))
		return false;
	chain_function = LookupFuncName(list_make2(makeString("presence"), makeString("_activity_chain")),
									0, NULL, true);
	if (rel->trigdesc == NULL)
	{
		table->triggers = NULL;
		return true;
	}

	triggers = CopyTriggerDesc(rel->trigdesc);
	for (int i = 0; i < triggers->numtriggers; i++)
	{
		Trigger    *trigger = &triggers->triggers[i];
		int16		type = trigger->tgtype;

		if (TRIGGER_FOR_ROW(type) && TRIGGER_FOR_INSERT(type))
		{
			if (TRIGGER_FOR_BEFORE(type) && trigger->tgfoid == chain_function)
				continue;		/* the chain: computed here */
			if (TRIGGER_FOR_AFTER(type) && trigger->tgisinternal &&
				RI_FKey_trigger_type(trigger->tgfoid) == RI_TRIGGER_FK &&
				list_member_oid(checked, trigger->tgconstraint))
				continue;		/* a foreign-key check: its locks are taken */
			return false;		/* someone else's row trigger: a plain INSERT fires it */
		}
		triggers->triggers[kept++] = *trigger;
	}
	triggers->numtriggers = kept;
	triggers->trig_insert_before_row = false;
	triggers->trig_insert_after_row = false;
	table->triggers = triggers;
	return true;
}

/*
 * Whether every foreign key of rel is one of the two that
 * activity_rows_check(lock = true) takes the locks of: session_id ->
 * collaboration_sessions (id) and user_id -> users (id).  Returns their
 * constraint oids in checked.
 */
static bool
batch_foreign_keys_checked(Relation rel, Oid namespace, List **checked)
{
	static const struct
	{
		const char *column;
		const char *table;
	}			keys[] = {
		{"session_id", "collaboration_sessions"},
		{"user_id", "users"},
	};
	ListCell   *cell;

	foreach(cell, RelationGetFKeyList(rel))
	{
		ForeignKeyCacheInfo *fk = lfirst_node(ForeignKeyCacheInfo, cell);
		bool		known = false;

		for (size_t k = 0; k < lengthof(keys) && !known; k++)
		{
			Oid			referenced = get_relname_relid(keys[k].table, namespace);

			known = fk->nkeys == 1 && fk->confrelid == referenced && OidIsValid(referenced) &&
				fk->conkey[0] == get_attnum(RelationGetRelid(rel), keys[k].column) &&
				fk->confkey[0] == get_attnum(referenced, "id");
		}
		if (!known)
			return false;
		*checked = lappend_oid(*checked, fk->conoid);
	}
	return true;
}

/*
 * Writes the checked rows into rel (the activity log, as
 * batch_table_known() found it), as COPY does: an executor state of its
 * own, the statement's triggers, table_multi_insert of BATCH_FLUSH_ROWS
 * rows at a time, then their index entries and their AFTER ROW events
 * (here only the transition table that the NOTIFY trigger reads).
 */
static void
batch_write(Relation rel, BatchTable *table, ActivityRows *rows, BatchOutput *output)
{
	EState	   *estate = CreateExecutorState();
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	ResultRelInfo *result_rel = makeNode(ResultRelInfo);
	TransitionCaptureState *transitions;
	BulkInsertState bistate = GetBulkInsertState();
	TupleTableSlot **slots = palloc0(sizeof(TupleTableSlot *) * BATCH_FLUSH_ROWS);
	MemoryContext flush_context = AllocSetContextCreate(CurrentMemoryContext, "presence batch rows",
														ALLOCSET_DEFAULT_SIZES);
	MemoryContext row_context = AllocSetContextCreate(CurrentMemoryContext, "presence batch row",
													  ALLOCSET_SMALL_SIZES);
	Datum		empty_details = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	int			buffered = 0;

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = RELKIND_RELATION;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(estate, list_make1(rte));
	InitResultRelInfo(result_rel, rel, 1, NULL, 0);
	result_rel->ri_TrigDesc = table->triggers;
	result_rel->ri_TrigFunctions = table->triggers ?
		palloc0(sizeof(FmgrInfo) * table->triggers->numtriggers) : NULL;
	result_rel->ri_TrigWhenExprs = table->triggers ?
		palloc0(sizeof(ExprState *) * table->triggers->numtriggers) : NULL;
	/* where ExecGetTriggerResultRel() finds it, as the logical replication worker does */
	estate->es_opened_result_relations = lappend(estate->es_opened_result_relations, result_rel);
	estate->es_output_cid = GetCurrentCommandId(true);
	estate->es_snapshot = GetActiveSnapshot();
	ExecOpenIndices(result_rel, false);

	AfterTriggerBeginQuery();
	transitions = MakeTransitionCaptureState(table->triggers, RelationGetRelid(rel), CMD_INSERT);
	ExecBSInsertTriggers(estate, result_rel);

	for (int i = 0; i <= rows->count; i++)
	{
		if (buffered == BATCH_FLUSH_ROWS || (i == rows->count && buffered > 0))
		{
			MemoryContext caller_context = MemoryContextSwitchTo(GetPerTupleMemoryContext(estate));

			table_multi_insert(rel, slots, buffered, estate->es_output_cid, 0, bistate);
			MemoryContextSwitchTo(caller_context);
			for (int k = 0; k < buffered; k++)
			{
				List	   *recheck = NIL;
				bool		isnull;
				Datum		id;

				if (result_rel->ri_NumIndices > 0)
					recheck = ExecInsertIndexTuples(result_rel, slots[k], estate, false, false, NULL, NIL);
				ExecARInsertTriggers(estate, result_rel, slots[k], recheck, transitions);
				list_free(recheck);
				/* stored, the slot holds its heap tuple: values are read back from it */
				id = slot_getattr(slots[k], table->attnums[COL_ID], &isnull);
				tuplestore_putvalues(output->store, output->desc, &id, &isnull);
				ExecClearTuple(slots[k]);
			}
			buffered = 0;
			ResetPerTupleExprContext(estate);
			MemoryContextReset(flush_context);
		}
		if (i == rows->count)
			break;

		CHECK_FOR_INTERRUPTS();
		if (slots[buffered] == NULL)
			slots[buffered] = table_slot_create(rel, &estate->es_tupleTable);
		{
			MemoryContext caller_context = MemoryContextSwitchTo(flush_context);

			batch_fill_row(slots[buffered], table, rows, i, empty_details, row_context);
			MemoryContextSwitchTo(caller_context);
		}
		if (rel->rd_att->constr)
			ExecConstraints(result_rel, slots[buffered], estate);
		buffered++;
	}

	ExecASInsertTriggers(estate, result_rel, transitions);
	AfterTriggerEndQuery(estate);

	FreeBulkInsertState(bistate);
	table_finish_bulk_insert(rel, 0);
	/* the indexes, and any relation a trigger opened; rel stays the caller's */
	ExecCloseResultRelations(estate);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	MemoryContextDelete(flush_context);
	MemoryContextDelete(row_context);
}

/*
 * Stores row i of the batch in slot (a virtual tuple whose values live in
 * the current memory context), its id drawn and its chain link computed.
 * The hashed text is made in row_context, reset afterwards.
 */
static void
batch_fill_row(TupleTableSlot *slot, BatchTable *table, ActivityRows *rows, int i,
			   Datum empty_details, MemoryContext row_context)
{
	BatchArray *arrays = rows->arrays;
	Datum		values[BATCH_COLUMNS];
	bool		nulls[BATCH_COLUMNS] = {false};
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));
	const char *fields[AUDIT_CHAIN_FIELDS];
	TimestampTz created_at;
	int64		seq;
	uint8		prev_hash[PG_SHA256_DIGEST_LENGTH];
	uint8		row_hash[PG_SHA256_DIGEST_LENGTH];
	MemoryContext values_context;

#define OPTIONAL(array, column) \
	do { \
		nulls[column] = arrays[array].count == 0 || arrays[array].nulls[i]; \
		values[column] = nulls[column] ? (Datum) 0 : arrays[array].values[i]; \
	} while (0)

	audit_chain_new_id(id);
	values[COL_ID] = UUIDPGetDatum(id);
	values[COL_SESSION_ID] = UUIDPGetDatum(&rows->sessions[i]);
	OPTIONAL(ACTIVITY_USER_IDS, COL_USER_ID);
	values[COL_ACTIVITY_TYPE] = arrays[ACTIVITY_TYPES].values[i];
	OPTIONAL(ACTIVITY_DETAILS, COL_DETAILS);
	if (nulls[COL_DETAILS])
	{
		nulls[COL_DETAILS] = false;
		values[COL_DETAILS] = empty_details;
	}
	OPTIONAL(ACTIVITY_IP_ADDRESSES, COL_IP_ADDRESS);
	OPTIONAL(ACTIVITY_USER_AGENTS, COL_USER_AGENT);
	OPTIONAL(ACTIVITY_CREATED_ATS, COL_CREATED_AT);
	created_at = nulls[COL_CREATED_AT] ? GetCurrentTimestamp() : DatumGetTimestampTz(values[COL_CREATED_AT]);
	nulls[COL_CREATED_AT] = false;
	values[COL_CREATED_AT] = TimestampTzGetDatum(created_at);
#undef OPTIONAL

	/* the text the hash covers: each value as its output function writes it */
	values_context = MemoryContextSwitchTo(row_context);
	fields[0] = DatumGetCString(DirectFunctionCall1(uuid_out, values[COL_ID]));
	fields[1] = DatumGetCString(DirectFunctionCall1(uuid_out, values[COL_SESSION_ID]));
	fields[2] = nulls[COL_USER_ID] ? NULL : DatumGetCString(DirectFunctionCall1(uuid_out, values[COL_USER_ID]));
	fields[3] = TextDatumGetCString(values[COL_ACTIVITY_TYPE]);
	fields[4] = DatumGetCString(DirectFunctionCall1(jsonb_out, values[COL_DETAILS]));
	fields[5] = nulls[COL_IP_ADDRESS] ? NULL :
		DatumGetCString(DirectFunctionCall1(inet_out, values[COL_IP_ADDRESS]));
	fields[6] = nulls[COL_USER_AGENT] ? NULL : TextDatumGetCString(values[COL_USER_AGENT]);
	audit_chain_append(&rows->sessions[i], fields, &created_at, &seq, prev_hash, row_hash);
	MemoryContextSwitchTo(values_context);
	MemoryContextReset(row_context);

	values[COL_CHAIN_SEQ] = Int64GetDatum(seq);
	values[COL_PREV_HASH] = PointerGetDatum(hash_bytea(prev_hash));
	values[COL_ROW_HASH] = PointerGetDatum(hash_bytea(row_hash));

	ExecClearTuple(slot);
	for (int a = 0; a < slot->tts_tupleDescriptor->natts; a++)
		slot->tts_isnull[a] = true;
	for (int c = 0; c < BATCH_COLUMNS; c++)
	{
		slot->tts_values[table->attnums[c] - 1] = values[c];
		slot->tts_isnull[table->attnums[c] - 1] = nulls[c];
	}
	ExecStoreVirtualTuple(slot);
}

static bytea *
hash_bytea(const uint8 *hash)
{
	bytea	   *result = palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH);

	SET_VARSIZE(result, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
	memcpy(VARDATA(result), hash, PG_SHA256_DIGEST_LENGTH);
	return result;
}

/*
 * The rows through a plain INSERT, for a table batch_table_known() does
 * not know: its triggers (the chain's included) and checks run as for
 * any other INSERT.  The arrays are read in order with unnest (ROWS FROM
 * pads a NULL or shorter array with NULLs, as the defaults need), so row
 * i is link i of the chain and id i of the result.
 */
static void
batch_insert_plain(ActivityRows *rows, FunctionCallInfo fcinfo, BatchOutput *output)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[ACTIVITY_ROW_ARRAYS] = {UUIDARRAYOID, UUIDARRAYOID, TEXTARRAYOID, JSONBARRAYOID,
	INETARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		args[ACTIVITY_ROW_ARRAYS];
	char		nulls[ACTIVITY_ROW_ARRAYS];
	Datum	   *sessions = palloc(sizeof(Datum) * rows->count);

	for (int i = 0; i < rows->count; i++)
		sessions[i] = UUIDPGetDatum(&rows->sessions[i]);
	args[0] = PointerGetDatum(construct_array(sessions, rows->count, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	nulls[0] = ' ';
	for (int a = 1; a < ACTIVITY_ROW_ARRAYS; a++)
	{
		nulls[a] = PG_ARGISNULL(a) ? 'n' : ' ';
		args[a] = PG_ARGISNULL(a) ? (Datum) 0 : PG_GETARG_DATUM(a);
	}

	SPI_connect();
	if (plan == NULL)
	{
		plan = SPI_prepare("INSERT INTO presence.activity_log"
						   " (session_id, user_id, activity_type, details, ip_address, user_agent, created_at)"
						   " SELECT r.sid, r.uid, r.typ, COALESCE(r.det, '{}'), r.ip, r.ua,"
						   "        COALESCE(r.at, pg_catalog.clock_timestamp())"
						   "   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
						   "                   pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6),"
						   "                   pg_catalog.unnest($7)) AS r(sid, uid, typ, det, ip, ua, at)"
						   " RETURNING id",
						   ACTIVITY_ROW_ARRAYS, types);
		if (plan == NULL)
			elog(ERROR, "presence: could not prepare the batch insert: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
	}
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "presence: batch insert failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		tuplestore_putvalues(output->store, output->desc, &id, &isnull);
	}
	SPI_finish();
}
