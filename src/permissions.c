/*-------------------------------------------------------------------------
 * permissions.c
 *	  presence.permission_function: permissions decided by a function the
 *	  application writes over its own tables, in place of the built-in
 *	  matrix.
 *
 * Its owner is an application role, who can replace its body at any
 * time, so it never runs with the rights of its caller (has_permission()
 * is SECURITY DEFINER, the workers are superusers).  permission_call()
 * runs it as its owner inside a security-restricted operation, as
 * PostgreSQL runs index expressions during maintenance and REFRESH
 * MATERIALIZED VIEW: no SET ROLE, no temporary objects, a pinned
 * search_path (the function's own SET clause still applies).  The
 * previous user is restored on return, or by the abort of the
 * (sub)transaction on error, as in those commands.
 *
 * The ws workers ask it in their bounded transactions (db_run), with
 * presence.permission_function_timeout as both statement and lock
 * timeout, and cache each answer per connection and session for
 * presence.permission_cache_ttl.  An error or timeout denies and is
 * logged.  After a timeout the function is not asked again for a short,
 * growing while (every uncached check denies at once): a function that
 * always hangs then costs the event loop one timeout per back-off, not
 * one per request.  Errors, which are quick, take no back-off.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "access/htup_details.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/uuid.h"
#include "utils/varlena.h"

#include "backoff.h"
#include "clock.h"
#include "permissions.h"
#include "worker_db.h"

PG_FUNCTION_INFO_V1(presence_application_permission);

static const char *const permission_action_names[PERM_ACTION_COUNT] = {
	[PERM_VIEW] = "view",
	[PERM_COMMENT] = "comment",
	[PERM_OPERATE] = "operate",
	[PERM_MANAGE] = "manage",
	[PERM_END] = "end",
	[PERM_AUDIT] = "audit",
};

/* After a timeout: a quarter second, doubling to five. */
static Backoff permission_backoff = BACKOFF_INIT(250, 5000);
static int64 permission_retry_at_ms = 0;

bool
permission_function_set(void)
{
	return presence_permission_function != NULL && presence_permission_function[0] != '\0';
}

/*
 * The function presence.permission_function names.  Only a
 * schema-qualified name is accepted, and it is looked up in that schema
 * alone: a name found through a search_path could be anyone's function.
 */
static Oid
permission_function_resolve(void)
{
	char	   *raw = pstrdup(presence_permission_function);
	List	   *names;
	Oid			argtypes[3] = {TEXTOID, UUIDOID, TEXTOID};
	Oid			function;
	HeapTuple	tuple;
	Form_pg_proc proc;

	if (!SplitIdentifierString(raw, '.', &names) || list_length(names) != 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("presence: presence.permission_function \"%s\" is not a schema-qualified function name",
						presence_permission_function),
				 errhint("Name it as schema.function; it is never looked up through a search_path.")));
	function = LookupFuncName(list_make2(makeString(linitial(names)), makeString(lsecond(names))),
							  3, argtypes, true);
	if (!OidIsValid(function))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("presence: permission function %s(text, uuid, text) does not exist",
						presence_permission_function)));
	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(function));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "presence: cache lookup failed for function %u", function);
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	if (proc->prokind != PROKIND_FUNCTION || proc->proretset || proc->prorettype != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("presence: permission function %s(text, uuid, text) must return a single boolean",
						presence_permission_function)));
	ReleaseSysCache(tuple);
	return function;
}

static void
permission_set_local(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

/*
 * Asks the application's function, as its owner; a NULL answer denies.
 * timeout_ms > 0 (the workers) bounds the call and its lock waits; SQL
 * callers keep their own statement_timeout.  Errors propagate.
 */
static bool
permission_call(text *session_id, Datum user_id, text *action, int timeout_ms)
{
	Oid			function = permission_function_resolve();
	Oid			owner;
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 3);
	Datum		answer;
	HeapTuple	tuple;

	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(function));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "presence: cache lookup failed for function %u", function);
	owner = ((Form_pg_proc) GETSTRUCT(tuple))->proowner;
	ReleaseSysCache(tuple);
	if (pg_proc_aclcheck(function, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("presence: the owner of permission function %s may not execute it",
						presence_permission_function)));

	save_nestlevel = NewGUCNestLevel();
	permission_set_local("search_path", "pg_catalog, pg_temp");
	if (timeout_ms > 0)
	{
		char		timeout[32];

		snprintf(timeout, sizeof(timeout), "%dms", timeout_ms);
		permission_set_local("lock_timeout", timeout);
		enable_timeout_after(STATEMENT_TIMEOUT, timeout_ms);
	}
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);

	fmgr_info(function, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 3, DEFAULT_COLLATION_OID, NULL, NULL);
	fcinfo->args[0].value = PointerGetDatum(session_id);
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = user_id;
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = PointerGetDatum(action);
	fcinfo->args[2].isnull = false;
	answer = FunctionCallInvoke(fcinfo);

	SetUserIdAndSecContext(save_userid, save_sec_context);
	if (timeout_ms > 0)
		disable_timeout(STATEMENT_TIMEOUT, false);
	AtEOXact_GUC(false, save_nestlevel);
	return !fcinfo->isnull && DatumGetBool(answer);
}

/*
 * presence._application_permission(session_id, user_id, action): the
 * function's answer for has_permission(), which checks the action and
 * catches errors.
 */
Datum
presence_application_permission(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(permission_call(PG_GETARG_TEXT_PP(0), PG_GETARG_DATUM(1), PG_GETARG_TEXT_PP(2), 0));
}

/* One question of a worker, and the error that answered it, if any. */
typedef struct PermissionQuestion
{
	const char *session_id;
	const char *user_id;
	PermissionAction action;
	bool		allowed;
	char		error[256];
} PermissionQuestion;

static DbResult
permission_work(void *arg)
{
	PermissionQuestion *question = arg;
	MemoryContext context = CurrentMemoryContext;

	PG_TRY();
	{
		question->allowed = permission_call(cstring_to_text(question->session_id),
											DirectFunctionCall1(uuid_in, CStringGetDatum(question->user_id)),
											cstring_to_text(permission_action_names[question->action]),
											presence_permission_function_timeout_ms);
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		/* the application's message may be any length: cut it at a character */
		strlcpy(question->error, error->message,
				pg_mbcliplen(error->message, strlen(error->message), sizeof(question->error) - 1) + 1);
		FreeErrorData(error);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return DB_OK;
}

void
permission_remember(PermissionCache *cache, PermissionAction action, bool allowed)
{
	if (cache == NULL || presence_permission_cache_ttl_ms <= 0)
		return;
	cache->expires_ms[action] = presence_now_ms() + presence_permission_cache_ttl_ms;
	cache->allowed[action] = allowed;
}

/* A reload or the application's notice: the function may be fixed, ask it at once. */
void
permission_backoff_reset(void)
{
	(void) backoff_succeeded(&permission_backoff);
	permission_retry_at_ms = 0;
}

/*
 * What the application's function says to user_id doing action in
 * session_id, from cache (NULL: none) while its answer is fresh.  A
 * failure is not cached: it is no answer about the user, only a reason
 * to refuse the request at hand.  Safe inside a libwebsockets callback:
 * the call runs in db_run, and the failure is logged with interrupts
 * held.
 */
PermissionAnswer
permission_ask(const char *session_id, const char *user_id, PermissionAction action,
			   PermissionCache *cache)
{
	PermissionQuestion question = {session_id, user_id, action, false, ""};
	int64		now_ms = presence_now_ms();
	DbResult	result;
	uint64		wait_ms;

	if (cache && cache->expires_ms[action] > now_ms)
		return cache->allowed[action] ? PERMISSION_ALLOWED : PERMISSION_DENIED;
	if (now_ms < permission_retry_at_ms)
		return PERMISSION_UNANSWERED;
	result = db_run("presence: asking the permission function", permission_work, &question);
	if (result == DB_OK)
	{
		(void) backoff_succeeded(&permission_backoff);
		permission_remember(cache, action, question.allowed);
		return question.allowed ? PERMISSION_ALLOWED : PERMISSION_DENIED;
	}
	wait_ms = result == DB_BUSY ? backoff_next_delay(&permission_backoff) : 0;
	permission_retry_at_ms = now_ms + (int64) wait_ms;
	HOLD_INTERRUPTS();
	ereport(WARNING,
			(errmsg("presence: permission function %s denied %s to user %s in session \"%s\": %s",
					presence_permission_function, permission_action_names[action], user_id,
					session_id, question.error[0] ? question.error : "the call failed"),
			 wait_ms ? errdetail("It is not asked again for %d ms; until then every check not cached denies.",
								 (int) wait_ms) : 0));
	RESUME_INTERRUPTS();
	return PERMISSION_UNANSWERED;
}

/* Whether the function lets user_id do action; no answer denies. */
bool
permission_allowed(const char *session_id, const char *user_id, PermissionAction action,
				   PermissionCache *cache)
{
	return permission_ask(session_id, user_id, action, cache) == PERMISSION_ALLOWED;
}
