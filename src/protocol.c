/*-------------------------------------------------------------------------
 * protocol.c
 *	  Parsing and validating client messages of protocol v1, and the
 *	  envelopes of server messages.
 *
 * A request that fails validation is described by a short, fixed
 * message ("sessionId must be a string") that never echoes client input,
 * so error replies cannot be used to reflect content into other clients'
 * logs or to probe server internals.  Unknown fields are ignored, as the
 * protocol allows additions; a userId sent by a client is ignored too,
 * since identity comes only from the token.
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

const char *const request_type_names[REQ_TYPE_COUNT] = {
	[REQ_AUTH] = "auth",
	[REQ_SESSION_CREATE] = "session_create",
	[REQ_SESSION_JOIN] = "session_join",
	[REQ_SESSION_LEAVE] = "session_leave",
	[REQ_PRESENCE_UPDATE] = "presence_update",
	[REQ_CURSOR_UPDATE] = "cursor_update",
	[REQ_HEARTBEAT] = "heartbeat",
	[REQ_ACTIVITY] = "activity",
	[REQ_SESSION_END] = "session_end",
};

const char *const presence_status_names[STATUS_COUNT] = {"online", "away", "offline"};

const char *const server_message_types[SERVER_MESSAGE_TYPES] = {
	"welcome", "session_created", "session_joined", "ack", "heartbeat_ack", "error",
	"presence", "activity", "broadcast", "session_ended", "session_removed"
};

const char *const protocol_error_codes[PROTOCOL_ERROR_CODES] = {
	"bad_request", "unauthorized", "forbidden", "not_found",
	"session_full", "rate_limited", "unavailable", "internal"
};

/* Where name is in a table of count names; -1 when it is not. */
static int
name_index(const char *const *names, int count, const char *name)
{
	for (int i = 0; i < count; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

int
protocol_error_code_index(const char *code)
{
	return name_index(protocol_error_codes, PROTOCOL_ERROR_CODES, code);
}

int
server_message_type_index(const char *type)
{
	return name_index(server_message_types, SERVER_MESSAGE_TYPES, type);
}

/* Characters (code points) in len bytes of UTF-8, which jansson has checked. */
static size_t
utf8_characters(const char *text, size_t len)
{
	size_t		characters = 0;

	for (size_t i = 0; i < len; i++)
		characters += ((unsigned char) text[i] & 0xC0) != 0x80;
	return characters;
}

/* Same rule as the collaboration_sessions.session_id CHECK constraint. */
bool
protocol_valid_session_id(const char *session_id)
{
	size_t		len = strlen(session_id);

	if (len < 1 || len > PRESENCE_SESSION_ID_MAX || !isalnum((unsigned char) session_id[0]))
		return false;
	for (size_t i = 1; i < len; i++)
	{
		unsigned char c = (unsigned char) session_id[i];

		if (!isalnum(c) && c != '_' && c != '.' && c != '-')
			return false;
	}
	return strcmp(session_id, "session") != 0 && strcmp(session_id, "conns") != 0 &&
		strcmp(session_id, "updates") != 0;
}

/* [a-z][a-z0-9_.]{0,63}, as the activity_log CHECK constraint. */
static bool
valid_activity_type(const char *type)
{
	size_t		len = strlen(type);

	if (len < 1 || len > 64 || !(type[0] >= 'a' && type[0] <= 'z'))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!((type[i] >= 'a' && type[i] <= 'z') || (type[i] >= '0' && type[i] <= '9') ||
			  type[i] == '_' || type[i] == '.'))
			return false;
	return true;
}

/*
 * The activity types the server and SQL write.  A client's would be read
 * as presence by the replay (present_at and the rest) and as the
 * session's own history by an auditor, so no client may log them.
 */
static const char *const SERVER_ACTIVITY_TYPES[] = {
	"user_joined", "user_left", "user_timeout", "status_changed", "session_created",
	"participant_added", "participant_removed", "session_ended", "session_timeout",
};

static bool
server_activity_type(const char *type)
{
	for (size_t i = 0; i < sizeof(SERVER_ACTIVITY_TYPES) / sizeof(SERVER_ACTIVITY_TYPES[0]); i++)
		if (strcmp(type, SERVER_ACTIVITY_TYPES[i]) == 0)
			return true;
	return false;
}

/*
 * Reads an optional string field of at most max_len bytes.  Returns false
 * (with *problem set) when present with the wrong type or too long.
 */
static bool
optional_string(json_t *root, const char *name, size_t max_len, const char **out,
				const char **problem, const char *type_problem, const char *length_problem)
{
	json_t	   *value = json_object_get(root, name);

	*out = NULL;
	if (value == NULL || json_is_null(value))
		return true;
	if (!json_is_string(value))
	{
		*problem = type_problem;
		return false;
	}
	if (json_string_length(value) > max_len || strlen(json_string_value(value)) != json_string_length(value))
	{
		*problem = length_problem;
		return false;
	}
	*out = json_string_value(value);
	return true;
}

#define OPTIONAL_STRING(field, key, max) \
	optional_string(root, key, max, &request->field, problem, \
					key " must be a string", key " is too long")

static bool
parse_session_id(json_t *root, ClientRequest *request, bool required, const char **problem)
{
	if (!OPTIONAL_STRING(session_id, "sessionId", PRESENCE_SESSION_ID_MAX))
		return false;
	if (request->session_id == NULL)
	{
		if (required)
			*problem = "sessionId is required";
		return !required;
	}
	if (!protocol_valid_session_id(request->session_id))
	{
		*problem = "sessionId must be 1 to 128 of [A-Za-z0-9_.-]";
		return false;
	}
	return true;
}

static bool
parse_status(json_t *root, ClientRequest *request, bool required, const char **problem)
{
	json_t	   *value = json_object_get(root, "status");

	request->status = -1;
	if (value == NULL || json_is_null(value))
	{
		if (required)
			*problem = "status is required";
		return !required;
	}
	if (json_is_string(value) && strcmp(json_string_value(value), "online") == 0)
		request->status = 0;
	else if (json_is_string(value) && strcmp(json_string_value(value), "away") == 0)
		request->status = 1;
	else
	{
		*problem = "status must be \"online\" or \"away\"";
		return false;
	}
	return true;
}

static bool
parse_cursor(json_t *root, ClientRequest *request, bool required, const char **problem)
{
	json_t	   *value = json_object_get(root, "cursor");
	json_t	   *event_id,
			   *position;

	request->cursor.present = false;
	if (value == NULL || json_is_null(value))
	{
		if (required)
			*problem = "cursor is required";
		return !required;
	}
	event_id = json_object_get(value, "eventId");
	position = json_object_get(value, "position");
	if (!json_is_object(value) || !json_is_string(event_id) || !json_is_integer(position))
	{
		*problem = "cursor must be {\"eventId\": string, \"position\": integer}";
		return false;
	}
	if (json_string_length(event_id) > PRESENCE_EVENT_ID_MAX || strlen(json_string_value(event_id)) != json_string_length(event_id))
	{
		*problem = "cursor.eventId is too long";
		return false;
	}
	if (json_integer_value(position) < 0)
	{
		*problem = "cursor.position must be >= 0";
		return false;
	}
	strcpy(request->cursor.event_id, json_string_value(event_id));
	request->cursor.position = (int64_t) json_integer_value(position);
	request->cursor.present = true;
	return true;
}

static bool
parse_object(json_t *root, const char *name, json_t **out, const char **problem, const char *type_problem)
{
	json_t	   *value = json_object_get(root, name);

	*out = NULL;
	if (value == NULL || json_is_null(value))
		return true;
	if (!json_is_object(value))
	{
		*problem = type_problem;
		return false;
	}
	*out = value;
	return true;
}

/* Field rules of each request type (docs/protocol.md, "Requests"). */
static bool
parse_fields(json_t *root, ClientRequest *request, const char **problem)
{
	switch (request->type)
	{
		case REQ_AUTH:
			if (!OPTIONAL_STRING(token, "token", 8192))
				return false;
			if (request->token == NULL)
			{
				*problem = "token is required";
				return false;
			}
			return true;
		case REQ_SESSION_CREATE:
			return parse_session_id(root, request, false, problem) &&
				OPTIONAL_STRING(operation_id, "operationId", PRESENCE_OPERATION_ID_MAX) &&
				OPTIONAL_STRING(target, "target", PRESENCE_TARGET_MAX) &&
				OPTIONAL_STRING(objective, "objective", PRESENCE_OBJECTIVE_MAX) &&
				parse_object(root, "metadata", &request->metadata, problem, "metadata must be an object");
		case REQ_SESSION_JOIN:
			return parse_session_id(root, request, true, problem) &&
				parse_status(root, request, false, problem) &&
				OPTIONAL_STRING(activity, "activity", PRESENCE_ACTIVITY_MAX) &&
				parse_cursor(root, request, false, problem);
		case REQ_SESSION_LEAVE:
			return parse_session_id(root, request, true, problem);
		case REQ_PRESENCE_UPDATE:
			return parse_session_id(root, request, true, problem) &&
				parse_status(root, request, true, problem) &&
				OPTIONAL_STRING(activity, "activity", PRESENCE_ACTIVITY_MAX);
		case REQ_CURSOR_UPDATE:
			return parse_session_id(root, request, true, problem) &&
				parse_cursor(root, request, true, problem);
		case REQ_HEARTBEAT:
			return parse_session_id(root, request, false, problem) &&
				parse_cursor(root, request, false, problem);
		case REQ_ACTIVITY:
			if (!parse_session_id(root, request, true, problem) ||
				!OPTIONAL_STRING(activity_type, "activityType", PRESENCE_ACTIVITY_TYPE_MAX) ||
				!parse_object(root, "details", &request->details, problem, "details must be an object"))
				return false;
			if (request->activity_type == NULL || !valid_activity_type(request->activity_type))
			{
				*problem = "activityType must match [a-z][a-z0-9_.]{0,63}";
				return false;
			}
			if (server_activity_type(request->activity_type))
			{
				*problem = "this activityType is written by the server";
				return false;
			}
			return true;
		case REQ_SESSION_END:
			if (!parse_session_id(root, request, true, problem) ||
				!OPTIONAL_STRING(end_status, "status", PRESENCE_END_STATUS_MAX))
				return false;
			if (request->end_status == NULL)
				request->end_status = "completed";
			if (strcmp(request->end_status, "completed") != 0 && strcmp(request->end_status, "failed") != 0)
			{
				*problem = "status must be \"completed\" or \"failed\"";
				return false;
			}
			return true;
		case REQ_TYPE_COUNT:
			break;
	}
	*problem = "unknown type";
	return false;
}

/*
 * Parses one client frame.  On failure returns false with *problem set;
 * request->ref is still filled when the frame was an object with a valid
 * ref, so the error reply can carry it.  The caller always calls
 * protocol_request_free.
 */
bool
protocol_parse(const char *text, size_t len, ClientRequest *request, const char **problem)
{
	json_t	   *root,
			   *type,
			   *ref;
	int			index;

	memset(request, 0, sizeof(*request));
	request->status = -1;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	if (root == NULL)
	{
		*problem = "invalid JSON";
		return false;
	}
	request->root = root;
	if (!json_is_object(root))
	{
		*problem = "a message must be a JSON object";
		return false;
	}

	ref = json_object_get(root, "ref");
	if (ref != NULL && !json_is_null(ref))
	{
		if (!((json_is_string(ref) && utf8_characters(json_string_value(ref), json_string_length(ref)) <= PROTOCOL_REF_MAX) ||
			  json_is_integer(ref)))
		{
			*problem = "ref must be a string of at most 64 characters or an integer";
			return false;
		}
		request->ref = ref;
	}

	type = json_object_get(root, "type");
	if (!json_is_string(type))
	{
		*problem = "type must be a string";
		return false;
	}
	index = name_index(request_type_names, REQ_TYPE_COUNT, json_string_value(type));
	if (index < 0)
	{
		request->type = REQ_TYPE_COUNT;
		*problem = "unknown message type";
		return false;
	}
	request->type = (RequestType) index;
	return parse_fields(root, request, problem);
}

void
protocol_request_free(ClientRequest *request)
{
	if (request->root)
		json_decref(request->root);
	request->root = NULL;
}

/*
 * A new empty JSON object.  jansson's json_object() must not be called
 * from this library: the postgres executable exports a function of the
 * same name (the SQL json_object()), and the dynamic linker binds our
 * call to it.  jansson's own internal calls are bound directly, so
 * building through json_pack() is safe.
 */
json_t *
protocol_object(void)
{
	return json_pack("{}");
}

/* {"type": type, "ref": ref} with ref omitted when NULL. */
json_t *
protocol_reply(const char *type, json_t *ref)
{
	json_t	   *message = protocol_object();

	if (message == NULL)
		return NULL;
	json_object_set_new(message, "type", json_string(type));
	if (ref)
		json_object_set(message, "ref", ref);
	return message;
}

json_t *
protocol_error(json_t *ref, const char *code, const char *message)
{
	json_t	   *error = protocol_reply("error", ref);

	if (error == NULL)
		return NULL;
	if (ref == NULL)
		json_object_set_new(error, "ref", json_null());
	json_object_set_new(error, "code", json_string(code));
	json_object_set_new(error, "message", json_string(message));
	return error;
}

/*
 * Length of the valid UTF-8 sequence at in (at most len bytes), or 0
 * when there is none: overlong forms, surrogates and code points past
 * U+10FFFF are invalid, as PostgreSQL's own check (pg_utf8_islegal) says.
 */
static size_t
utf8_sequence_length(const unsigned char *in, size_t len)
{
	size_t		need;
	uint32_t	code;
	uint32_t	minimum;

	if (in[0] < 0x80)
		return 1;
	if ((in[0] & 0xE0) == 0xC0)
		need = 2, code = in[0] & 0x1F, minimum = 0x80;
	else if ((in[0] & 0xF0) == 0xE0)
		need = 3, code = in[0] & 0x0F, minimum = 0x800;
	else if ((in[0] & 0xF8) == 0xF0)
		need = 4, code = in[0] & 0x07, minimum = 0x10000;
	else
		return 0;
	if (len < need)
		return 0;
	for (size_t i = 1; i < need; i++)
	{
		if ((in[i] & 0xC0) != 0x80)
			return 0;
		code = (code << 6) | (in[i] & 0x3F);
	}
	if (code < minimum || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))
		return 0;
	return need;
}

/*
 * Makes text from the network (a header value) safe to store: valid
 * UTF-8 is kept, every invalid byte and every control character becomes
 * U+FFFD, and the result is cut to fit out_size (terminator included)
 * at a character boundary.  So whatever a client sends, the activity log
 * dumps and restores.
 */
void
protocol_clean_text(const char *in, size_t len, char *out, size_t out_size)
{
	static const char replacement[] = "\xEF\xBF\xBD";
	const unsigned char *bytes = (const unsigned char *) in;
	size_t		written = 0;

	if (out_size == 0)
		return;
	for (size_t i = 0; i < len;)
	{
		size_t		sequence = utf8_sequence_length(bytes + i, len - i);
		bool		control = sequence == 1 && (bytes[i] < 0x20 || bytes[i] == 0x7F);
		const char *piece = sequence == 0 || control ? replacement : in + i;
		size_t		piece_len = sequence == 0 || control ? sizeof(replacement) - 1 : sequence;

		if (written + piece_len >= out_size)
			break;
		memcpy(out + written, piece, piece_len);
		written += piece_len;
		i += sequence == 0 ? 1 : sequence;
	}
	out[written] = '\0';
}

/* Makes room for len more bytes; false (and failed) when there is none. */
static bool
json_text_reserve(JsonText *text, size_t len)
{
	size_t		capacity = text->capacity ? text->capacity : 256;
	char	   *grown;

	if (text->failed)
		return false;
	if (text->len + len <= text->capacity)
		return true;
	while (capacity < text->len + len)
		capacity *= 2;
	if ((grown = realloc(text->data, capacity)) == NULL)
	{
		text->failed = true;
		return false;
	}
	text->data = grown;
	text->capacity = capacity;
	return true;
}

void
json_text_raw(JsonText *text, const char *raw, size_t len)
{
	if (json_text_reserve(text, len))
	{
		memcpy(text->data + text->len, raw, len);
		text->len += len;
	}
}

void
json_text_literal(JsonText *text, const char *raw)
{
	json_text_raw(text, raw, strlen(raw));
}

/*
 * A JSON string of value: quote, backslash and control characters
 * escaped, and, as in protocol_clean_text, each byte that is not valid
 * UTF-8 replaced by U+FFFD, so whatever a database or Redis held, the
 * frame is text a browser accepts.
 */
void
json_text_string(JsonText *text, const char *value)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *bytes = (const unsigned char *) value;
	size_t		len = strlen(value);

	/* at most six bytes out for each one in, and the quotes */
	if (!json_text_reserve(text, 6 * len + 2))
		return;
	text->data[text->len++] = '"';
	for (size_t i = 0; i < len;)
	{
		size_t		sequence = utf8_sequence_length(bytes + i, len - i);
		char	   *out = text->data + text->len;

		if (sequence == 0)
		{
			memcpy(out, "\\ufffd", 6);
			text->len += 6;
			i++;
			continue;
		}
		if (sequence == 1 && (bytes[i] == '"' || bytes[i] == '\\'))
		{
			out[0] = '\\';
			out[1] = (char) bytes[i];
			text->len += 2;
		}
		else if (sequence == 1 && bytes[i] < 0x20)
		{
			memcpy(out, "\\u00", 4);
			out[4] = hex[bytes[i] >> 4];
			out[5] = hex[bytes[i] & 0xF];
			text->len += 6;
		}
		else
		{
			memcpy(out, bytes + i, sequence);
			text->len += sequence;
		}
		i += sequence;
	}
	text->data[text->len++] = '"';
}

void
json_text_int(JsonText *text, int64_t value)
{
	char		digits[24];

	json_text_raw(text, digits, snprintf(digits, sizeof(digits), "%lld", (long long) value));
}

/* Empties the text for reuse, keeping its memory. */
void
json_text_reset(JsonText *text)
{
	text->len = 0;
	text->failed = false;
}
