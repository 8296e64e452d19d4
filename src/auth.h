/*-------------------------------------------------------------------------
 * auth.h
 *	  JSON Web Tokens: HS256 signing (issue_token), and verification of
 *	  HS256, RS256, ES256 and EdDSA tokens (the WebSocket handshake and the
 *	  auth message).  Verification never raises a PostgreSQL error, so it
 *	  is safe inside libwebsockets callbacks.
 *
 * auth.c is plain C (OpenSSL, jansson) and is fuzzed on its own; what
 * reads the GUCs and owns the worker's public keys is auth_keys.c.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_AUTH_H
#define PRESENCE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_TOKEN_BYTES 8192
#define JWT_MAX_KEYS 64			/* public keys in one keys file */

typedef enum JwtVerdict
{
	JWT_VALID = 0,
	JWT_NO_SECRET,				/* neither a secret nor public keys: nothing verifies */
	JWT_MALFORMED,				/* not three base64url parts of JSON objects */
	JWT_BAD_ALGORITHM,			/* alg is none, unknown, or crit is present */
	JWT_BAD_SIGNATURE,
	JWT_EXPIRED,
	JWT_NOT_YET_VALID,			/* nbf or iat in the future */
	JWT_BAD_AUDIENCE,
	JWT_BAD_SUBJECT,			/* the user id claim missing or not a UUID */
	JWT_NO_EXPIRY,
	JWT_ALGORITHM_NOT_ALLOWED,	/* a known alg not in presence.jwt_algorithms */
	JWT_UNKNOWN_KEY,			/* no public key has the token's kid */
	JWT_BAD_ISSUER,
	JWT_KEY_MISMATCH,			/* the key the token names is of another type */
	JWT_NO_PUBLIC_KEYS			/* RS256/ES256/EdDSA allowed, no keys loaded */
} JwtVerdict;

/*
 * The algorithms, as bits of a set.  Each public key serves exactly one
 * of them (an RSA key RS256, a P-256 key ES256, an Ed25519 key EdDSA),
 * and the HMAC secret only HS256.
 */
#define JWT_ALG_HS256	0x01
#define JWT_ALG_RS256	0x02
#define JWT_ALG_ES256	0x04
#define JWT_ALG_EDDSA	0x08
#define JWT_ALG_ALL		0x0f

/* Public keys parsed from a keys file; malloc'd, opaque. */
typedef struct JwtKeySet JwtKeySet;

/* What a token must satisfy; the worker builds it from the GUCs. */
typedef struct JwtPolicy
{
	unsigned	algorithms;		/* JWT_ALG_* allowed */
	const char *secret;			/* HS256 secret, or NULL / "" */
	const JwtKeySet *keys;		/* public keys, or NULL */
	const char *audience;		/* aud to require, or NULL / "" */
	const char *issuer;			/* iss to require, or NULL / "" */
	const char *user_id_claim;	/* the claim holding the user UUID, e.g. "sub" */
	int			leeway_s;
} JwtPolicy;

typedef struct JwtIdentity
{
	char		user_id[37];	/* lower-case textual UUID */
	char		username[256];	/* name / preferred_username, or "" */
	int64_t		expires_at;		/* exp, seconds since the Unix epoch */
} JwtIdentity;

/* auth.c */
extern JwtVerdict jwt_verify(const char *token, size_t token_len, const JwtPolicy *policy,
							 int64_t now_s, JwtIdentity *identity);
extern const char *jwt_verdict_message(JwtVerdict verdict);
extern bool jwt_parse_algorithms(const char *list, unsigned *algorithms);
extern JwtKeySet *jwt_keys_parse(const char *text, size_t len, char *problem, size_t problem_size);
extern int	jwt_keys_count(const JwtKeySet *keys);
extern int	jwt_keys_skipped(const JwtKeySet *keys);
extern void jwt_keys_free(JwtKeySet *keys);
extern char *jwt_sign(const char *secret, const char *claims_json);
extern int	jwt_parse_uuid(const char *text, char *canonical);

/* auth_keys.c: the ws worker's policy, from its GUCs and keys file */
extern bool auth_keys_reload(char *message, size_t message_size);
extern JwtVerdict jwt_verify_client_token(const char *token, size_t token_len, int64_t now_s,
										  JwtIdentity *identity);

#endif							/* PRESENCE_AUTH_H */
