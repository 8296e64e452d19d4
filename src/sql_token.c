/*-------------------------------------------------------------------------
 * sql_token.c
 *	  issue_token(user_id, ttl, username): an HS256 JWT that the workers
 *	  (and any standard JWT library) accept, for applications and tests.
 *
 * Only HS256, with presence.jwt_secret: tokens of an identity provider
 * (RS256, ES256, EdDSA) are verified by the workers, never issued here.
 * The token satisfies the workers' other settings too: its iss is
 * presence.jwt_issuer when that is set, and the user id is also put in
 * presence.jwt_user_id_claim when that is not sub.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <jansson.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "auth.h"

PG_FUNCTION_INFO_V1(presence_issue_token);

/* The user's stored username, or NULL when the user is not known. */
static char *
stored_username(Datum user_id)
{
	Oid			argtypes[1] = {UUIDOID};
	Datum		args[1] = {user_id};
	char	   *username = NULL;

	SPI_connect();
	if (SPI_execute_with_args("SELECT username FROM presence.users WHERE id = $1",
							  1, argtypes, args, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		char	   *value = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		username = SPI_palloc(strlen(value) + 1);
		strcpy(username, value);
	}
	SPI_finish();
	return username;
}

Datum
presence_issue_token(PG_FUNCTION_ARGS)
{
	Interval   *ttl;
	int64		ttl_s;
	int64		now_s = (int64) time(NULL);
	char	   *user_id;
	char	   *username;
	json_t	   *claims;
	char	   *claims_json;
	char	   *token;
	text	   *result;
	unsigned	algorithms;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("presence: issue_token needs a user_id and a ttl")));
	if (presence_jwt_secret == NULL || presence_jwt_secret[0] == '\0')
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("presence: presence.jwt_secret is not set"),
						errhint("Set presence.jwt_secret in postgresql.conf and reload.")));
	if (!jwt_parse_algorithms(presence_jwt_algorithms, &algorithms) || !(algorithms & JWT_ALG_HS256))
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("presence: presence.jwt_algorithms does not allow HS256, so the workers would refuse the token"),
						errhint("Add HS256 to presence.jwt_algorithms and reload.")));

	ttl = PG_GETARG_INTERVAL_P(1);
	ttl_s = (int64) (ttl->time / USECS_PER_SEC) + (int64) ttl->day * SECS_PER_DAY +
		(int64) ttl->month * DAYS_PER_MONTH * SECS_PER_DAY;
	if (ttl_s <= 0 || ttl_s > 366 * SECS_PER_DAY)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("presence: ttl must be between 1 second and 366 days")));

	user_id = DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(0)));
	if (!PG_ARGISNULL(2))
	{
		username = text_to_cstring(PG_GETARG_TEXT_PP(2));
		if (username[0] == '\0')
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("presence: username must not be empty")));
		if (strlen(username) > PRESENCE_USERNAME_MAX)
			ereport(ERROR, (errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
							errmsg("presence: username must have 1 to %d bytes", PRESENCE_USERNAME_MAX)));
	}
	else
		username = stored_username(PG_GETARG_DATUM(0));

	claims = json_pack("{s:s, s:I, s:I, s:s}", "sub", user_id, "iat", (json_int_t) now_s,
					   "exp", (json_int_t) (now_s + ttl_s), "iss",
					   presence_jwt_issuer[0] ? presence_jwt_issuer : "presence");
	if (claims == NULL)
		elog(ERROR, "presence: out of memory building token claims");
	if (strcmp(presence_jwt_user_id_claim, "sub") != 0)
		json_object_set_new(claims, presence_jwt_user_id_claim, json_string(user_id));
	if (username)
		json_object_set_new(claims, "name", json_string(username));
	if (presence_jwt_audience && presence_jwt_audience[0])
		json_object_set_new(claims, "aud", json_string(presence_jwt_audience));
	claims_json = json_dumps(claims, JSON_COMPACT);
	json_decref(claims);
	if (claims_json == NULL)
		elog(ERROR, "presence: out of memory encoding token claims");
	token = jwt_sign(presence_jwt_secret, claims_json);
	free(claims_json);
	if (token == NULL)
		elog(ERROR, "presence: could not sign token");
	result = cstring_to_text(token);
	free(token);
	PG_RETURN_TEXT_P(result);
}
