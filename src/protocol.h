/*-------------------------------------------------------------------------
 * protocol.h
 *	  Protocol v1 (docs/protocol.md): client requests parsed and validated into
 *	  a ClientRequest, server messages built as jansson objects.  Nothing
 *	  here raises a PostgreSQL error; everything runs inside lws callbacks.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_PROTOCOL_H
#define PRESENCE_PROTOCOL_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "presence_limits.h"

/* see protocol_object(): never call jansson's json_object() from here */
#define json_object() use_protocol_object_instead

#define PROTOCOL_VERSION 1
#define PROTOCOL_REF_MAX 64

typedef enum RequestType
{
	REQ_AUTH,
	REQ_SESSION_CREATE,
	REQ_SESSION_JOIN,
	REQ_SESSION_LEAVE,
	REQ_PRESENCE_UPDATE,
	REQ_CURSOR_UPDATE,
	REQ_HEARTBEAT,
	REQ_ACTIVITY,
	REQ_SESSION_END,
	REQ_TYPE_COUNT
} RequestType;

typedef enum PresenceStatus
{
	STATUS_ONLINE,
	STATUS_AWAY,
	STATUS_OFFLINE,
	STATUS_COUNT
} PresenceStatus;

typedef struct CursorPosition
{
	bool		present;
	char		event_id[PRESENCE_EVENT_ID_MAX + 1];
	int64_t		position;
} CursorPosition;

/* A validated request; string fields point into root, which owns them. */
typedef struct ClientRequest
{
	RequestType type;
	json_t	   *root;
	json_t	   *ref;			/* NULL when the client sent none */
	const char *token;
	const char *session_id;		/* NULL when absent */
	int			status;			/* PresenceStatus, or -1 when absent */
	const char *activity;		/* NULL when absent */
	CursorPosition cursor;
	const char *activity_type;
	json_t	   *details;		/* object or NULL */
	json_t	   *metadata;		/* object or NULL */
	const char *operation_id;
	const char *target;
	const char *objective;
	const char *end_status;		/* "completed" / "failed" */
} ClientRequest;

extern const char *const request_type_names[REQ_TYPE_COUNT];
extern const char *const presence_status_names[STATUS_COUNT];

/* Error codes of docs/protocol.md, in the order /metrics counts them. */
#define PROTOCOL_ERROR_CODES 8
extern const char *const protocol_error_codes[PROTOCOL_ERROR_CODES];
extern int	protocol_error_code_index(const char *code);

#define SERVER_MESSAGE_TYPES 11
extern const char *const server_message_types[SERVER_MESSAGE_TYPES];
extern int	server_message_type_index(const char *type);

extern bool protocol_parse(const char *text, size_t len, ClientRequest *request,
						   const char **problem);
extern void protocol_request_free(ClientRequest *request);
extern bool protocol_valid_session_id(const char *session_id);
extern void protocol_clean_text(const char *in, size_t len, char *out, size_t out_size);

extern json_t *protocol_object(void);
extern json_t *protocol_error(json_t *ref, const char *code, const char *message);
extern json_t *protocol_reply(const char *type, json_t *ref);

/*
 * JSON text written directly, without a jansson tree: for the messages
 * built for every cursor move.  A failed allocation sets failed and
 * stops the writing; the caller checks it once at the end.
 */
typedef struct JsonText
{
	char	   *data;
	size_t		len;
	size_t		capacity;
	bool		failed;
} JsonText;

extern void json_text_raw(JsonText *text, const char *raw, size_t len);
extern void json_text_literal(JsonText *text, const char *raw);
extern void json_text_string(JsonText *text, const char *value);
extern void json_text_int(JsonText *text, int64_t value);
extern void json_text_reset(JsonText *text);

#endif							/* PRESENCE_PROTOCOL_H */
