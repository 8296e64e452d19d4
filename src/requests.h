/*-------------------------------------------------------------------------
 * requests.h
 *	  Handling one client message: authentication, authorisation, state.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_REQUESTS_H
#define PRESENCE_REQUESTS_H

#include <jansson.h>

#include "connection.h"

#define REQUEST_ERROR_CODES 8
extern const char *const request_error_codes[REQUEST_ERROR_CODES];

extern void request_handle(Connection *connection, const char *text, size_t len);
extern void request_authenticate(Connection *connection, const char *token, size_t token_len,
								 json_t *ref);
extern void request_admit(Connection *connection, const JwtIdentity *identity, json_t *ref);
extern void request_fail(Connection *connection, json_t *ref, const char *code, const char *message);

#endif							/* PRESENCE_REQUESTS_H */
