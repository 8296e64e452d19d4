/*-------------------------------------------------------------------------
 * test_protocol.c
 *	  src/protocol.c without a server: every request type of
 *	  docs/protocol.md parsed from its minimal (and its fullest) valid
 *	  form, every refusal with the problem text the client is sent, the
 *	  text cleaner, and the name tables /metrics counts by.
 *-------------------------------------------------------------------------
 */
#include <stdint.h>

#include "protocol.h"
#include "unit.h"

/* A message as JSON text, from a jansson value (built with json_pack); malloc'd. */
static char *
text_of(json_t *message)
{
	char	   *text = json_dumps(message, JSON_COMPACT);

	json_decref(message);
	return text;
}

/* n copies of c, NUL-terminated; malloc'd. */
static char *
repeat(char c, size_t n)
{
	char	   *s = malloc(n + 1);

	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* Parses text that must be valid; the caller frees request. */
#define PARSE_OK(text, request) \
	do { \
		const char *problem_ = NULL; \
		bool		ok_ = protocol_parse((text), strlen(text), (request), &problem_); \
		if (!ok_) \
			unit_fail(__FILE__, __LINE__, "refused %s: %s", (text), problem_ ? problem_ : "(null)"); \
	} while (0)

/* Parses text that must be refused with exactly this problem. */
#define PARSE_FAILS(text, expected_problem) \
	do { \
		ClientRequest request_; \
		const char *problem_ = NULL; \
		const char *text_ = (text); \
		bool		ok_ = protocol_parse(text_, strlen(text_), &request_, &problem_); \
		if (ok_) \
			unit_fail(__FILE__, __LINE__, "accepted %.200s", text_); \
		else \
			CHECK_STR(problem_, (expected_problem)); \
		protocol_request_free(&request_); \
	} while (0)

/* Same for text given as a malloc'd string, freed here. */
#define PARSE_FAILS_FREE(text, expected_problem) \
	do { \
		char	   *owned_ = (text); \
		PARSE_FAILS(owned_, (expected_problem)); \
		free(owned_); \
	} while (0)

#define PARSE_OK_FREE(text) \
	do { \
		char	   *owned_ = (text); \
		ClientRequest request_; \
		PARSE_OK(owned_, &request_); \
		protocol_request_free(&request_); \
		free(owned_); \
	} while (0)

static void
auth_minimal(void)
{
	ClientRequest r;

	PARSE_OK("{\"type\":\"auth\",\"token\":\"abc\"}", &r);
	CHECK_EQ_INT(r.type, REQ_AUTH);
	CHECK_STR(r.token, "abc");
	CHECK(r.ref == NULL);
	CHECK(r.session_id == NULL);
	CHECK_EQ_INT(r.status, -1);
	CHECK(r.root != NULL);
	protocol_request_free(&r);
	CHECK(r.root == NULL);
	protocol_request_free(&r);	/* twice is harmless */
}

static void
session_create_minimal_and_full(void)
{
	ClientRequest r;

	PARSE_OK("{\"type\":\"session_create\"}", &r);
	CHECK_EQ_INT(r.type, REQ_SESSION_CREATE);
	CHECK(r.session_id == NULL);
	CHECK(r.operation_id == NULL && r.target == NULL && r.objective == NULL);
	CHECK(r.metadata == NULL);
	protocol_request_free(&r);

	PARSE_OK("{\"type\":\"session_create\",\"sessionId\":\"op-001\",\"operationId\":\"o1\","
			 "\"target\":\"t\",\"objective\":\"goal\",\"metadata\":{\"k\":1},\"ref\":7}", &r);
	CHECK_STR(r.session_id, "op-001");
	CHECK_STR(r.operation_id, "o1");
	CHECK_STR(r.target, "t");
	CHECK_STR(r.objective, "goal");
	CHECK(json_is_object(r.metadata));
	CHECK_EQ_INT(json_integer_value(json_object_get(r.metadata, "k")), 1);
	CHECK(json_is_integer(r.ref) && json_integer_value(r.ref) == 7);
	protocol_request_free(&r);
}

static void
session_join_minimal_and_full(void)
{
	ClientRequest r;

	PARSE_OK("{\"type\":\"session_join\",\"sessionId\":\"s1\"}", &r);
	CHECK_EQ_INT(r.type, REQ_SESSION_JOIN);
	CHECK_STR(r.session_id, "s1");
	CHECK_EQ_INT(r.status, -1);
	CHECK(r.activity == NULL);
	CHECK(!r.cursor.present);
	protocol_request_free(&r);

	PARSE_OK("{\"type\":\"session_join\",\"sessionId\":\"s1\",\"status\":\"away\",\"activity\":\"reading\","
			 "\"cursor\":{\"eventId\":\"e3\",\"position\":42},\"ref\":\"j1\"}", &r);
	CHECK_EQ_INT(r.status, STATUS_AWAY);
	CHECK_STR(r.activity, "reading");
	CHECK(r.cursor.present);
	CHECK_STR(r.cursor.event_id, "e3");
	CHECK_EQ_INT(r.cursor.position, 42);
	CHECK(json_is_string(r.ref));
	CHECK_STR(json_string_value(r.ref), "j1");
	protocol_request_free(&r);

	PARSE_OK("{\"type\":\"session_join\",\"sessionId\":\"s1\",\"status\":\"online\",\"status2\":1}", &r);
	CHECK_EQ_INT(r.status, STATUS_ONLINE);
	protocol_request_free(&r);
}

static void
session_leave_minimal(void)
{
	ClientRequest r;

	PARSE_OK("{\"type\":\"session_leave\",\"sessionId\":\"s1\"}", &r);
	CHECK_EQ_INT(r.type, REQ_SESSION_LEAVE);
	CHECK_STR(r.session_id, "s1");
	protocol_request_free(&r);
	PARSE_FAILS("{\"type\":\"session_leave\"}", "sessionId is required");
}

static void
presence_update_minimal(void)
{
	ClientRequest r;

	PARSE_OK("{\"type\":\"presence_update\",\"sessionId\":\"s1\",\"status\":\"online\"}", &r);
	CHECK_EQ_INT(r.type, REQ_PRESENCE_UPDATE);
	CHECK_EQ_INT(r.status, STATUS_ONLINE);
	CHECK(r.activity == NULL);
	protocol_request_free(&r);

	PARSE_OK("{\"type\":\"presence_update\",\"sessionId\":\"s1\",\"status\":\"away\",\"activity\":\"lunch\"}", &r);
	CHECK_EQ_INT(r.status, STATUS_AWAY);
	CHECK_STR(r.activity, "lunch");
	protocol_request_free(&r);

	PARSE_FAILS("{\"type\":\"presence_update\",\"sessionId\":\"s1\"}", "status is required");
	PARSE_FAILS("{\"type\":\"presence_update\",\"sessionId\":\"s1\",\"status\":null}", "status is required");
}

static void
cursor_update_minimal(void)
{
	ClientRequest r;

	PARSE_OK("{\"type\":\"cursor_update\",\"sessionId\":\"s1\",\"cursor\":{\"eventId\":\"e4\",\"position\":0}}", &r);
	CHECK_EQ_INT(r.type, REQ_CURSOR_UPDATE);
	CHECK(r.cursor.present);
	CHECK_STR(r.cursor.event_id, "e4");
	CHECK_EQ_INT(r.cursor.position, 0);
	protocol_request_free(&r);

	PARSE_OK("{\"type\":\"cursor_update\",\"sessionId\":\"s1\",\"cursor\":{\"eventId\":\"\",\"position\":9223372036854775807}}", &r);
	CHECK_EQ_INT(r.cursor.position, INT64_MAX);
	protocol_request_free(&r);

	PARSE_FAILS("{\"type\":\"cursor_update\",\"sessionId\":\"s1\"}", "cursor is required");
}

static void
heartbeat_minimal(void)
{
	ClientRequest r;

	PARSE_OK("{\"type\":\"heartbeat\"}", &r);
	CHECK_EQ_INT(r.type, REQ_HEARTBEAT);
	CHECK(r.session_id == NULL);
	CHECK(!r.cursor.present);
	protocol_request_free(&r);

	PARSE_OK("{\"type\":\"heartbeat\",\"sessionId\":\"s1\",\"cursor\":{\"eventId\":\"e\",\"position\":3},\"ref\":\"h\"}", &r);
	CHECK_STR(r.session_id, "s1");
	CHECK(r.cursor.present);
	CHECK_EQ_INT(r.cursor.position, 3);
	protocol_request_free(&r);
}

static void
activity_minimal(void)
{
	ClientRequest r;

	PARSE_OK("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"comment\"}", &r);
	CHECK_EQ_INT(r.type, REQ_ACTIVITY);
	CHECK_STR(r.activity_type, "comment");
	CHECK(r.details == NULL);
	protocol_request_free(&r);

	PARSE_OK("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"a.b_9\",\"details\":{\"text\":\"hi\"}}", &r);
	CHECK_STR(r.activity_type, "a.b_9");
	CHECK(json_is_object(r.details));
	protocol_request_free(&r);

	/* the replay's rows are the server's to write */
	PARSE_FAILS("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"user_left\"}",
				"this activityType is written by the server");
	PARSE_FAILS("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"session_ended\"}",
				"this activityType is written by the server");
	PARSE_OK("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"user_left.note\"}", &r);
	protocol_request_free(&r);
}

static void
session_end_minimal(void)
{
	ClientRequest r;

	PARSE_OK("{\"type\":\"session_end\",\"sessionId\":\"s1\"}", &r);
	CHECK_EQ_INT(r.type, REQ_SESSION_END);
	CHECK_STR(r.end_status, "completed");
	protocol_request_free(&r);

	PARSE_OK("{\"type\":\"session_end\",\"sessionId\":\"s1\",\"status\":\"failed\"}", &r);
	CHECK_STR(r.end_status, "failed");
	protocol_request_free(&r);

	PARSE_FAILS("{\"type\":\"session_end\",\"sessionId\":\"s1\",\"status\":\"aborted\"}",
				"status must be \"completed\" or \"failed\"");
	PARSE_FAILS("{\"type\":\"session_end\",\"sessionId\":\"s1\",\"status\":1}", "status must be a string");
}

static void
user_id_from_client_is_ignored(void)
{
	ClientRequest r;

	/* identity comes only from the token; unknown fields are allowed */
	PARSE_OK("{\"type\":\"heartbeat\",\"userId\":\"someone-else\",\"future\":[1,2]}", &r);
	CHECK_EQ_INT(r.type, REQ_HEARTBEAT);
	protocol_request_free(&r);
}

static void
rejects_what_is_not_a_json_object(void)
{
	PARSE_FAILS("", "invalid JSON");
	PARSE_FAILS("{", "invalid JSON");
	PARSE_FAILS("{\"type\":\"heartbeat\",}", "invalid JSON");
	PARSE_FAILS("nul", "invalid JSON");
	/* a duplicate key could make two readers see two messages */
	PARSE_FAILS("{\"type\":\"heartbeat\",\"type\":\"auth\"}", "invalid JSON");
	PARSE_FAILS("[]", "a message must be a JSON object");
	PARSE_FAILS("[{\"type\":\"heartbeat\"}]", "a message must be a JSON object");

	/* a bare string or number is no JSON text to jansson without JSON_DECODE_ANY */
	PARSE_FAILS("\"x\"", "invalid JSON");
	PARSE_FAILS("1", "invalid JSON");
	PARSE_FAILS("null", "invalid JSON");
	/* len counts: what follows the message is not read */
	{
		ClientRequest r;
		const char *problem = NULL;
		const char *text = "{\"type\":\"heartbeat\"}garbage";

		CHECK(protocol_parse(text, strlen("{\"type\":\"heartbeat\"}"), &r, &problem));
		protocol_request_free(&r);
	}
}

static void
rejects_missing_or_unknown_type(void)
{
	PARSE_FAILS("{}", "type must be a string");
	PARSE_FAILS("{\"sessionId\":\"s1\"}", "type must be a string");
	PARSE_FAILS("{\"type\":1}", "type must be a string");
	PARSE_FAILS("{\"type\":null}", "type must be a string");
	PARSE_FAILS("{\"type\":\"hello\"}", "unknown message type");
	PARSE_FAILS("{\"type\":\"AUTH\",\"token\":\"t\"}", "unknown message type");
	PARSE_FAILS("{\"type\":\"\"}", "unknown message type");
}

static void
rejects_invalid_session_id(void)
{
	const char *format = "must be 1 to 128 of [A-Za-z0-9_.-]";
	char		expected[80];
	char	   *id128 = repeat('a', 128);
	char	   *id129 = repeat('a', 129);

	snprintf(expected, sizeof(expected), "sessionId %s", format);
	PARSE_FAILS("{\"type\":\"session_join\"}", "sessionId is required");
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":null}", "sessionId is required");
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"\"}", expected);
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"a b\"}", expected);
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"a/b\"}", expected);
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"_a\"}", expected);
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"-a\"}", expected);
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"caf\\u00e9\"}", expected);
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"a:b\"}", expected);
	/* names the Redis layout uses for itself */
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"session\"}", expected);
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"conns\"}", expected);
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"updates\"}", expected);
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":12}", "sessionId must be a string");
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":[\"s1\"]}", "sessionId must be a string");
	/* an embedded NUL would cut the id short in C: jansson refuses it (no JSON_ALLOW_NUL) */
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"s1\\u0000x\"}", "invalid JSON");
	/* 129 characters are refused by length before the character rule */
	PARSE_FAILS_FREE(text_of(json_pack("{s:s, s:s}", "type", "session_join", "sessionId", id129)),
					 "sessionId is too long");
	PARSE_OK_FREE(text_of(json_pack("{s:s, s:s}", "type", "session_join", "sessionId", id128)));
	/* optional for session_create, but checked when given */
	PARSE_FAILS("{\"type\":\"session_create\",\"sessionId\":\"\"}", expected);
	PARSE_FAILS("{\"type\":\"heartbeat\",\"sessionId\":\"a b\"}", expected);

	CHECK(protocol_valid_session_id("a"));
	CHECK(protocol_valid_session_id("Op-001.b_C"));
	CHECK(protocol_valid_session_id("9"));
	CHECK(protocol_valid_session_id(id128));
	CHECK(!protocol_valid_session_id(id129));
	CHECK(!protocol_valid_session_id(""));
	CHECK(!protocol_valid_session_id(".a"));
	CHECK(!protocol_valid_session_id("session"));
	CHECK(protocol_valid_session_id("sessions"));
	CHECK(protocol_valid_session_id("Session"));
	free(id128);
	free(id129);
}

static void
rejects_bad_status(void)
{
	const char *problem = "status must be \"online\" or \"away\"";

	/* offline is what others see of a gone user; nobody asks for it */
	PARSE_FAILS("{\"type\":\"presence_update\",\"sessionId\":\"s1\",\"status\":\"offline\"}", problem);
	PARSE_FAILS("{\"type\":\"presence_update\",\"sessionId\":\"s1\",\"status\":\"busy\"}", problem);
	PARSE_FAILS("{\"type\":\"presence_update\",\"sessionId\":\"s1\",\"status\":\"Online\"}", problem);
	PARSE_FAILS("{\"type\":\"presence_update\",\"sessionId\":\"s1\",\"status\":0}", problem);
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"s1\",\"status\":\"offline\"}", problem);
}

static void
rejects_bad_cursor(void)
{
	const char *shape = "cursor must be {\"eventId\": string, \"position\": integer}";
	char	   *event128 = repeat('e', 128);
	char	   *event129 = repeat('e', 129);

	PARSE_FAILS("{\"type\":\"cursor_update\",\"sessionId\":\"s1\",\"cursor\":{\"position\":1}}", shape);
	PARSE_FAILS("{\"type\":\"cursor_update\",\"sessionId\":\"s1\",\"cursor\":{\"eventId\":\"e\"}}", shape);
	PARSE_FAILS("{\"type\":\"cursor_update\",\"sessionId\":\"s1\",\"cursor\":{\"eventId\":\"e\",\"position\":\"3\"}}", shape);
	PARSE_FAILS("{\"type\":\"cursor_update\",\"sessionId\":\"s1\",\"cursor\":{\"eventId\":\"e\",\"position\":1.5}}", shape);
	PARSE_FAILS("{\"type\":\"cursor_update\",\"sessionId\":\"s1\",\"cursor\":{\"eventId\":7,\"position\":1}}", shape);
	PARSE_FAILS("{\"type\":\"cursor_update\",\"sessionId\":\"s1\",\"cursor\":[\"e\",1]}", shape);
	PARSE_FAILS("{\"type\":\"cursor_update\",\"sessionId\":\"s1\",\"cursor\":\"e:1\"}", shape);
	PARSE_FAILS("{\"type\":\"cursor_update\",\"sessionId\":\"s1\",\"cursor\":{\"eventId\":\"e\",\"position\":-1}}",
				"cursor.position must be >= 0");
	PARSE_FAILS("{\"type\":\"session_join\",\"sessionId\":\"s1\",\"cursor\":{\"eventId\":\"e\"}}", shape);
	PARSE_FAILS("{\"type\":\"heartbeat\",\"cursor\":{\"eventId\":\"e\",\"position\":null}}", shape);
	PARSE_FAILS_FREE(text_of(json_pack("{s:s, s:s, s:{s:s, s:i}}", "type", "cursor_update", "sessionId", "s1",
									   "cursor", "eventId", event129, "position", 1)),
					 "cursor.eventId is too long");
	PARSE_FAILS("{\"type\":\"cursor_update\",\"sessionId\":\"s1\",\"cursor\":{\"eventId\":\"e\\u0000\",\"position\":1}}",
				"invalid JSON");
	PARSE_OK_FREE(text_of(json_pack("{s:s, s:s, s:{s:s, s:i}}", "type", "cursor_update", "sessionId", "s1",
									"cursor", "eventId", event128, "position", 1)));
	free(event128);
	free(event129);
}

static void
rejects_oversize_fields(void)
{
	char	   *s256 = repeat('x', 256);
	char	   *s257 = repeat('x', 257);
	char	   *op255 = repeat('o', 255);
	char	   *op256 = repeat('o', 256);
	char	   *t500 = repeat('t', 500);
	char	   *t501 = repeat('t', 501);
	char	   *obj10000 = repeat('g', 10000);
	char	   *obj10001 = repeat('g', 10001);
	char	   *type64 = repeat('a', 64);
	char	   *type65 = repeat('a', 65);

	PARSE_OK_FREE(text_of(json_pack("{s:s, s:s, s:s}", "type", "session_join", "sessionId", "s1", "activity", s256)));
	PARSE_FAILS_FREE(text_of(json_pack("{s:s, s:s, s:s}", "type", "session_join", "sessionId", "s1", "activity", s257)),
					 "activity is too long");
	PARSE_FAILS_FREE(text_of(json_pack("{s:s, s:s, s:s, s:s}", "type", "presence_update", "sessionId", "s1",
									   "status", "online", "activity", s257)),
					 "activity is too long");
	PARSE_FAILS("{\"type\":\"presence_update\",\"sessionId\":\"s1\",\"status\":\"online\",\"activity\":5}",
				"activity must be a string");
	PARSE_OK_FREE(text_of(json_pack("{s:s, s:s}", "type", "session_create", "operationId", op255)));
	PARSE_FAILS_FREE(text_of(json_pack("{s:s, s:s}", "type", "session_create", "operationId", op256)),
					 "operationId is too long");
	PARSE_OK_FREE(text_of(json_pack("{s:s, s:s}", "type", "session_create", "target", t500)));
	PARSE_FAILS_FREE(text_of(json_pack("{s:s, s:s}", "type", "session_create", "target", t501)),
					 "target is too long");
	PARSE_OK_FREE(text_of(json_pack("{s:s, s:s}", "type", "session_create", "objective", obj10000)));
	PARSE_FAILS_FREE(text_of(json_pack("{s:s, s:s}", "type", "session_create", "objective", obj10001)),
					 "objective is too long");
	PARSE_OK_FREE(text_of(json_pack("{s:s, s:s, s:s}", "type", "activity", "sessionId", "s1", "activityType", type64)));
	PARSE_FAILS_FREE(text_of(json_pack("{s:s, s:s, s:s}", "type", "activity", "sessionId", "s1", "activityType", type65)),
					 "activityType is too long");
	free(s256);
	free(s257);
	free(op255);
	free(op256);
	free(t500);
	free(t501);
	free(obj10000);
	free(obj10001);
	free(type64);
	free(type65);
}

static void
rejects_bad_activity_type_and_details(void)
{
	const char *rule = "activityType must match [a-z][a-z0-9_.]{0,63}";

	PARSE_FAILS("{\"type\":\"activity\",\"sessionId\":\"s1\"}", rule);
	PARSE_FAILS("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"\"}", rule);
	PARSE_FAILS("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"Comment\"}", rule);
	PARSE_FAILS("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"1st\"}", rule);
	PARSE_FAILS("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"a-b\"}", rule);
	PARSE_FAILS("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":3}", "activityType must be a string");
	PARSE_FAILS("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"comment\",\"details\":[1]}",
				"details must be an object");
	PARSE_FAILS("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"comment\",\"details\":\"hi\"}",
				"details must be an object");
	PARSE_FAILS("{\"type\":\"session_create\",\"metadata\":true}", "metadata must be an object");
	{
		ClientRequest r;

		/* null is as good as absent */
		PARSE_OK("{\"type\":\"activity\",\"sessionId\":\"s1\",\"activityType\":\"comment\",\"details\":null}", &r);
		CHECK(r.details == NULL);
		protocol_request_free(&r);
	}
}

static void
rejects_bad_token(void)
{
	char	   *t8192 = repeat('t', 8192);
	char	   *t8193 = repeat('t', 8193);

	PARSE_FAILS("{\"type\":\"auth\"}", "token is required");
	PARSE_FAILS("{\"type\":\"auth\",\"token\":null}", "token is required");
	PARSE_FAILS("{\"type\":\"auth\",\"token\":42}", "token must be a string");
	PARSE_OK_FREE(text_of(json_pack("{s:s, s:s}", "type", "auth", "token", t8192)));
	PARSE_FAILS_FREE(text_of(json_pack("{s:s, s:s}", "type", "auth", "token", t8193)), "token is too long");
	free(t8192);
	free(t8193);
}

static void
ref_rules(void)
{
	const char *problem = "ref must be a string of at most 64 characters or an integer";
	char	   *ref64 = repeat('r', 64);
	char	   *ref65 = repeat('r', 65);
	ClientRequest r;
	const char *why = NULL;
	const char *text;

	PARSE_OK("{\"type\":\"heartbeat\",\"ref\":-12}", &r);
	CHECK(json_is_integer(r.ref) && json_integer_value(r.ref) == -12);
	protocol_request_free(&r);
	PARSE_OK("{\"type\":\"heartbeat\",\"ref\":null}", &r);
	CHECK(r.ref == NULL);
	protocol_request_free(&r);
	PARSE_OK("{\"type\":\"heartbeat\",\"ref\":\"\"}", &r);
	CHECK(json_is_string(r.ref));
	protocol_request_free(&r);

	PARSE_OK_FREE(text_of(json_pack("{s:s, s:s}", "type", "heartbeat", "ref", ref64)));
	PARSE_FAILS_FREE(text_of(json_pack("{s:s, s:s}", "type", "heartbeat", "ref", ref65)), problem);
	PARSE_FAILS("{\"type\":\"heartbeat\",\"ref\":1.5}", problem);
	PARSE_FAILS("{\"type\":\"heartbeat\",\"ref\":true}", problem);
	PARSE_FAILS("{\"type\":\"heartbeat\",\"ref\":{\"a\":1}}", problem);
	PARSE_FAILS("{\"type\":\"heartbeat\",\"ref\":[1]}", problem);
	/* the ref is checked before the type, so even a typeless message is answered by it */
	PARSE_FAILS("{\"ref\":[1]}", problem);

	/* a valid ref is kept when a later field fails, for the error reply */
	text = "{\"type\":\"session_join\",\"ref\":\"j9\",\"sessionId\":\"\"}";
	CHECK(!protocol_parse(text, strlen(text), &r, &why));
	CHECK(json_is_string(r.ref) && strcmp(json_string_value(r.ref), "j9") == 0);
	protocol_request_free(&r);
	text = "{\"type\":\"nope\",\"ref\":5}";
	CHECK(!protocol_parse(text, strlen(text), &r, &why));
	CHECK(json_is_integer(r.ref) && json_integer_value(r.ref) == 5);
	protocol_request_free(&r);
	free(ref64);
	free(ref65);
}

/* protocol_clean_text into a buffer of out_size; the result must be valid UTF-8 text. */
static void
clean(const char *in, size_t len, size_t out_size, const char *expected, int line)
{
	char		out[64];
	json_t	   *as_json;

	memset(out, 'Z', sizeof(out));
	protocol_clean_text(in, len, out, out_size);
	if (strcmp(out, expected) != 0)
		unit_fail(__FILE__, line, "protocol_clean_text gave \"%s\", expected \"%s\"", out, expected);
	if (strlen(out) >= out_size)
		unit_fail(__FILE__, line, "result of %zu bytes does not fit %zu", strlen(out), out_size);
	as_json = json_string(out);	/* NULL unless valid UTF-8 */
	if (as_json == NULL)
		unit_fail(__FILE__, line, "result is not valid UTF-8");
	json_decref(as_json);
	if (out_size < sizeof(out) && out[out_size] != 'Z')
		unit_fail(__FILE__, line, "wrote past out_size");
}

#define CLEAN(in, out_size, expected) clean((in), sizeof(in) - 1, (out_size), (expected), __LINE__)
#define FFFD "\xEF\xBF\xBD"

static void
clean_text_repairs_utf8(void)
{
	CLEAN("plain ascii", 64, "plain ascii");
	CLEAN("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", 64, "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
	CLEAN("a\xFF" "b", 64, "a" FFFD "b");
	CLEAN("\x80", 64, FFFD);
	/* overlong NUL, a surrogate, past U+10FFFF: invalid as PostgreSQL says */
	CLEAN("\xC0\x80", 64, FFFD FFFD);
	CLEAN("\xE0\x80\xAF", 64, FFFD FFFD FFFD);
	CLEAN("\xED\xA0\x80", 64, FFFD FFFD FFFD);
	CLEAN("\xF4\x90\x80\x80", 64, FFFD FFFD FFFD FFFD);
	CLEAN("\xF4\x8F\xBF\xBF", 64, "\xF4\x8F\xBF\xBF");
	/* a sequence cut off by the end of the input */
	CLEAN("ab\xE2\x82", 64, "ab" FFFD FFFD);
	/* control characters, NUL included, are replaced too */
	CLEAN("a\tb\nc\x7F", 64, "a" FFFD "b" FFFD "c" FFFD);
	CLEAN("a\0b", 64, "a" FFFD "b");
	CLEAN("", 64, "");
}

/* json_text_string's output for value, and that jansson reads it back as expected. */
static void
check_json_string(const char *value, const char *text, const char *decoded)
{
	JsonText	out = {0};
	json_t	   *parsed;

	json_text_string(&out, value);
	json_text_raw(&out, "", 1);
	CHECK(!out.failed);
	if (out.failed)
		return;
	CHECK_STR(out.data, text);
	parsed = json_loads(out.data, JSON_DECODE_ANY, NULL);
	CHECK(parsed != NULL && json_is_string(parsed));
	if (parsed && json_is_string(parsed))
		CHECK_STR(json_string_value(parsed), decoded);
	json_decref(parsed);
	free(out.data);
}

static void
json_text_escapes_and_repairs(void)
{
	JsonText	out = {0};

	check_json_string("plain", "\"plain\"", "plain");
	check_json_string("q\"b\\s/", "\"q\\\"b\\\\s/\"", "q\"b\\s/");
	check_json_string("a\tb\nc\x01\x1f\x7f", "\"a\\u0009b\\u000ac\\u0001\\u001f\x7f\"",
					  "a\tb\nc\x01\x1f\x7f");
	check_json_string("caf\xC3\xA9 \xF0\x9F\x98\x80", "\"caf\xC3\xA9 \xF0\x9F\x98\x80\"",
					  "caf\xC3\xA9 \xF0\x9F\x98\x80");
	/* what is not UTF-8 becomes U+FFFD, byte by byte, so the frame stays text */
	check_json_string("a\xFF" "b\xED\xA0\x80", "\"a\\ufffdb\\ufffd\\ufffd\\ufffd\"",
					  "a" FFFD "b" FFFD FFFD FFFD);
	check_json_string("", "\"\"", "");
	/* numbers and raw text around them, grown past the first allocation */
	for (int i = 0; i < 100; i++)
	{
		json_text_literal(&out, i ? "," : "[");
		json_text_int(&out, (int64_t) i * -92233720368547758LL);
	}
	json_text_literal(&out, "]");
	CHECK(!out.failed && out.len > 256);
	{
		json_t	   *parsed = json_loadb(out.data, out.len, 0, NULL);

		CHECK(parsed != NULL && json_array_size(parsed) == 100);
		CHECK(json_integer_value(json_array_get(parsed, 99)) == 99 * -92233720368547758LL);
		json_decref(parsed);
	}
	json_text_reset(&out);
	CHECK(out.len == 0 && !out.failed);
	free(out.data);
}

static void
clean_text_truncates_at_character_boundary(void)
{
	/* "a" (1) "é" (2) "€" (3): out_size counts the terminator */
	CLEAN("a\xC3\xA9\xE2\x82\xAC", 7, "a\xC3\xA9\xE2\x82\xAC");
	CLEAN("a\xC3\xA9\xE2\x82\xAC", 6, "a\xC3\xA9");
	CLEAN("a\xC3\xA9\xE2\x82\xAC", 4, "a\xC3\xA9");
	CLEAN("a\xC3\xA9\xE2\x82\xAC", 3, "a");
	CLEAN("a\xC3\xA9\xE2\x82\xAC", 2, "a");
	CLEAN("a\xC3\xA9\xE2\x82\xAC", 1, "");
	/* a replacement is three bytes and is not cut either */
	CLEAN("ab\xFF", 5, "ab");
	CLEAN("ab\xFF", 6, "ab" FFFD);
	CLEAN("abcdef", 4, "abc");
	{
		char		out[2] = {'Z', 'Z'};

		protocol_clean_text("abc", 3, out, 0);	/* no room at all: nothing written */
		CHECK(out[0] == 'Z');
	}
}

static void
name_tables_round_trip(void)
{
	for (int i = 0; i < PROTOCOL_ERROR_CODES; i++)
		CHECK_EQ_INT(protocol_error_code_index(protocol_error_codes[i]), i);
	for (int i = 0; i < SERVER_MESSAGE_TYPES; i++)
		CHECK_EQ_INT(server_message_type_index(server_message_types[i]), i);
	CHECK_EQ_INT(protocol_error_code_index("nope"), -1);
	CHECK_EQ_INT(protocol_error_code_index(""), -1);
	CHECK_EQ_INT(server_message_type_index("nope"), -1);
	CHECK_EQ_INT(server_message_type_index("presence"), 6);
	CHECK_EQ_INT(protocol_error_code_index("session_full"), 4);
	/* the error codes of docs/protocol.md, all there */
	{
		const char *documented[] = {"bad_request", "unauthorized", "forbidden", "not_found",
		"session_full", "rate_limited", "unavailable", "internal"};

		for (size_t i = 0; i < sizeof(documented) / sizeof(documented[0]); i++)
			CHECK(protocol_error_code_index(documented[i]) >= 0);
	}
	/* every request type name parses back to its type */
	for (int i = 0; i < REQ_TYPE_COUNT; i++)
	{
		char		text[128];
		ClientRequest r;
		const char *problem = NULL;

		snprintf(text, sizeof(text), "{\"type\":\"%s\"}", request_type_names[i]);
		protocol_parse(text, strlen(text), &r, &problem);
		CHECK_EQ_INT(r.type, i);
		protocol_request_free(&r);
	}
	CHECK_STR(presence_status_names[STATUS_ONLINE], "online");
	CHECK_STR(presence_status_names[STATUS_AWAY], "away");
	CHECK_STR(presence_status_names[STATUS_OFFLINE], "offline");
}

static void
replies_and_errors(void)
{
	json_t	   *ref = json_integer(3);
	json_t	   *reply = protocol_reply("ack", ref);
	json_t	   *error = protocol_error(NULL, "bad_request", "invalid JSON");
	json_t	   *error_ref = protocol_error(ref, "forbidden", "no");
	json_t	   *empty = protocol_object();

	CHECK(json_is_object(empty) && json_object_size(empty) == 0);
	CHECK_STR(json_string_value(json_object_get(reply, "type")), "ack");
	CHECK(json_object_get(reply, "ref") == ref);
	CHECK_STR(json_string_value(json_object_get(error, "type")), "error");
	CHECK(json_is_null(json_object_get(error, "ref")));
	CHECK_STR(json_string_value(json_object_get(error, "code")), "bad_request");
	CHECK_STR(json_string_value(json_object_get(error, "message")), "invalid JSON");
	CHECK_EQ_INT(json_integer_value(json_object_get(error_ref, "ref")), 3);
	CHECK_EQ_INT(ref->refcount, 3);	/* ours and the two messages' */
	json_decref(reply);
	json_decref(error);
	json_decref(error_ref);
	json_decref(empty);
	CHECK_EQ_INT(ref->refcount, 1);
	json_decref(ref);
	{
		json_t	   *no_ref = protocol_reply("welcome", NULL);

		CHECK(json_object_get(no_ref, "ref") == NULL);
		json_decref(no_ref);
	}
}

/*
 * docs/protocol.md and the error message say a ref may be "a string of at
 * most 64 characters": 64 two-byte characters are taken, 65 are not.
 */
static void
ref_limit_counts_characters(void)
{
	char		ref[2 * 65 + 1];
	char	   *text;

	for (int i = 0; i < 65; i++)
		memcpy(ref + 2 * i, "\xC3\xA9", 2);	/* é */
	ref[2 * 64] = '\0';
	text = text_of(json_pack("{s:s, s:s}", "type", "heartbeat", "ref", ref));
	PARSE_OK_FREE(text);
	ref[2 * 64] = '\xC3';
	ref[2 * 65] = '\0';
	text = text_of(json_pack("{s:s, s:s}", "type", "heartbeat", "ref", ref));
	PARSE_FAILS_FREE(text, "ref must be a string of at most 64 characters or an integer");
}

int
main(int argc, char **argv)
{
	UNIT_MAIN_BEGIN(argc, argv);
	UNIT_RUN(auth_minimal);
	UNIT_RUN(session_create_minimal_and_full);
	UNIT_RUN(session_join_minimal_and_full);
	UNIT_RUN(session_leave_minimal);
	UNIT_RUN(presence_update_minimal);
	UNIT_RUN(cursor_update_minimal);
	UNIT_RUN(heartbeat_minimal);
	UNIT_RUN(activity_minimal);
	UNIT_RUN(session_end_minimal);
	UNIT_RUN(user_id_from_client_is_ignored);
	UNIT_RUN(rejects_what_is_not_a_json_object);
	UNIT_RUN(rejects_missing_or_unknown_type);
	UNIT_RUN(rejects_invalid_session_id);
	UNIT_RUN(rejects_bad_status);
	UNIT_RUN(rejects_bad_cursor);
	UNIT_RUN(rejects_oversize_fields);
	UNIT_RUN(rejects_bad_activity_type_and_details);
	UNIT_RUN(rejects_bad_token);
	UNIT_RUN(ref_rules);
	UNIT_RUN(clean_text_repairs_utf8);
	UNIT_RUN(clean_text_truncates_at_character_boundary);
	UNIT_RUN(json_text_escapes_and_repairs);
	UNIT_RUN(name_tables_round_trip);
	UNIT_RUN(replies_and_errors);
	UNIT_RUN(ref_limit_counts_characters);
	return unit_main_end("test_protocol");
}
