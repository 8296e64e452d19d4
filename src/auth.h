/*-------------------------------------------------------------------------
 * auth.h
 *	  HS256 JSON Web Tokens: signing (issue_token) and verification (the
 *	  WebSocket handshake).  Verification never raises a PostgreSQL error,
 *	  so it is safe inside libwebsockets callbacks.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_AUTH_H
#define PRESENCE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_TOKEN_BYTES 8192

typedef enum JwtVerdict
{
	JWT_VALID = 0,
	JWT_NO_SECRET,				/* presence.jwt_secret is empty */
	JWT_MALFORMED,				/* not three base64url parts of JSON objects */
	JWT_BAD_ALGORITHM,			/* alg is not HS256 (none included) */
	JWT_BAD_SIGNATURE,
	JWT_EXPIRED,
	JWT_NOT_YET_VALID,			/* nbf or iat in the future */
	JWT_BAD_AUDIENCE,
	JWT_BAD_SUBJECT,			/* sub missing or not a UUID */
	JWT_NO_EXPIRY
} JwtVerdict;

typedef struct JwtIdentity
{
	char		user_id[37];	/* lower-case textual UUID */
	char		username[256];	/* name / preferred_username, or "" */
	int64_t		expires_at;		/* exp, seconds since the Unix epoch */
} JwtIdentity;

extern JwtVerdict jwt_verify(const char *token, size_t token_len, const char *secret,
							 const char *audience, int leeway_s, int64_t now_s,
							 JwtIdentity *identity);
extern const char *jwt_verdict_message(JwtVerdict verdict);
extern char *jwt_sign(const char *secret, const char *claims_json);
extern int	jwt_parse_uuid(const char *text, char *canonical);

#endif							/* PRESENCE_AUTH_H */
