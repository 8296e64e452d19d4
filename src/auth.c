/*-------------------------------------------------------------------------
 * auth.c
 *	  HS256 JSON Web Tokens, signed and verified with OpenSSL's HMAC.
 *
 * Only HS256 is accepted and the algorithm is pinned before any
 * signature work, so "alg": "none" or an RSA/HMAC confusion token never
 * reaches the MAC check.  MACs are compared with CRYPTO_memcmp (constant
 * time).  This file uses only malloc-based libraries (OpenSSL, jansson)
 * and never raises a PostgreSQL error: the worker calls it from inside
 * libwebsockets callbacks, where a longjmp would corrupt lws's stack.
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"

#define HS256_MAC_BYTES 32
#define HS256_SIGNATURE_CHARS 43	/* unpadded base64url of 32 bytes */

static const char base64url_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t base64url_encode(const unsigned char *in, size_t len, char *out);
static long base64url_decode(const char *in, size_t len, unsigned char *out);
static json_t *decode_json_part(const char *part, size_t len);
static int	claim_number(json_t *claims, const char *name, int64_t *value);

/* Encodes without padding; out needs 4 * ceil(len / 3) + 1 bytes. */
static size_t
base64url_encode(const unsigned char *in, size_t len, char *out)
{
	size_t		n = 0;

	for (size_t i = 0; i < len; i += 3)
	{
		uint32_t	chunk = (uint32_t) in[i] << 16;
		size_t		remaining = len - i;

		if (remaining > 1)
			chunk |= (uint32_t) in[i + 1] << 8;
		if (remaining > 2)
			chunk |= in[i + 2];
		out[n++] = base64url_alphabet[(chunk >> 18) & 63];
		out[n++] = base64url_alphabet[(chunk >> 12) & 63];
		if (remaining > 1)
			out[n++] = base64url_alphabet[(chunk >> 6) & 63];
		if (remaining > 2)
			out[n++] = base64url_alphabet[chunk & 63];
	}
	out[n] = '\0';
	return n;
}

/*
 * Decodes unpadded base64url (RFC 7515 section 2); returns the decoded
 * length, or -1 on any character outside the alphabet or an impossible
 * length.  out needs 3 * len / 4 + 1 bytes.
 */
static long
base64url_decode(const char *in, size_t len, unsigned char *out)
{
	uint32_t	buffer = 0;
	int			bits = 0;
	long		n = 0;

	if (len % 4 == 1)
		return -1;
	for (size_t i = 0; i < len; i++)
	{
		const char *at = memchr(base64url_alphabet, in[i], 64);

		if (at == NULL || in[i] == '\0')
			return -1;
		buffer = (buffer << 6) | (uint32_t) (at - base64url_alphabet);
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[n++] = (unsigned char) (buffer >> bits);
		}
	}
	return n;
}

/* Decodes one token part into a JSON object, or NULL. */
static json_t *
decode_json_part(const char *part, size_t len)
{
	unsigned char *raw = malloc(3 * len / 4 + 1);
	long		raw_len;
	json_t	   *value = NULL;

	if (raw == NULL)
		return NULL;
	raw_len = base64url_decode(part, len, raw);
	if (raw_len > 0)
	{
		value = json_loadb((const char *) raw, (size_t) raw_len, JSON_REJECT_DUPLICATES, NULL);
		if (value != NULL && !json_is_object(value))
		{
			json_decref(value);
			value = NULL;
		}
	}
	free(raw);
	return value;
}

/*
 * Reads a NumericDate claim.  Returns 1 when present and valid, 0 when
 * absent, -1 when present but not a number, or a real too large for
 * int64 (converting it would be undefined behaviour).
 */
static int
claim_number(json_t *claims, const char *name, int64_t *value)
{
	json_t	   *claim = json_object_get(claims, name);

	if (claim == NULL)
		return 0;
	if (json_is_integer(claim))
		*value = (int64_t) json_integer_value(claim);
	else if (json_is_real(claim) && json_real_value(claim) >= -9223372036854775808.0 &&
			 json_real_value(claim) < 9223372036854775808.0)
		*value = (int64_t) json_real_value(claim);
	else
		return -1;
	return 1;
}

/*
 * Parses a UUID in any case, with or without hyphens, into its canonical
 * lower-case hyphenated form (37 bytes with terminator).  Returns 0 when
 * text is not a UUID.
 */
int
jwt_parse_uuid(const char *text, char *canonical)
{
	int			digits = 0;
	size_t		len = strlen(text);

	if (len != 32 && len != 36)
		return 0;
	for (size_t i = 0; i < len; i++)
	{
		/*
		 * The 36-character form has its hyphens exactly here: 36 digits
		 * would be 40 characters once hyphenated, past canonical's end.
		 */
		if (len == 36 && (i == 8 || i == 13 || i == 18 || i == 23))
		{
			if (text[i] != '-')
				return 0;
			continue;
		}
		if (!isxdigit((unsigned char) text[i]))
			return 0;
		if (digits == 8 || digits == 12 || digits == 16 || digits == 20)
			*canonical++ = '-';
		*canonical++ = (char) tolower((unsigned char) text[i]);
		digits++;
	}
	*canonical = '\0';
	return digits == 32;
}

/*
 * Verifies an HS256 token and extracts the identity.  now_s is passed in
 * (not read from the clock) so tests and callers control time.
 */
JwtVerdict
jwt_verify(const char *token, size_t token_len, const char *secret, const char *audience,
		   int leeway_s, int64_t now_s, JwtIdentity *identity)
{
	const char *first_dot,
			   *second_dot;
	json_t	   *header = NULL,
			   *claims = NULL,
			   *alg,
			   *sub,
			   *name;
	unsigned char expected_mac[EVP_MAX_MD_SIZE];
	unsigned int expected_len = 0;
	unsigned char given_mac[HS256_MAC_BYTES + 3];
	long		given_len;
	size_t		signature_len;
	int64_t		exp = 0,
				nbf = 0,
				iat = 0;
	int			has;
	JwtVerdict	verdict = JWT_MALFORMED;

	memset(identity, 0, sizeof(*identity));
	if (secret == NULL || secret[0] == '\0')
		return JWT_NO_SECRET;
	if (token_len == 0 || token_len > JWT_MAX_TOKEN_BYTES || memchr(token, '\0', token_len))
		return JWT_MALFORMED;
	first_dot = memchr(token, '.', token_len);
	if (first_dot == NULL)
		return JWT_MALFORMED;
	second_dot = memchr(first_dot + 1, '.', token_len - (size_t) (first_dot + 1 - token));
	if (second_dot == NULL ||
		memchr(second_dot + 1, '.', token_len - (size_t) (second_dot + 1 - token)) != NULL)
		return JWT_MALFORMED;

	header = decode_json_part(token, (size_t) (first_dot - token));
	if (header == NULL)
		goto done;
	alg = json_object_get(header, "alg");
	if (!json_is_string(alg) || strcmp(json_string_value(alg), "HS256") != 0 ||
		json_object_get(header, "crit") != NULL)
	{
		verdict = JWT_BAD_ALGORITHM;
		goto done;
	}

	/* 43 base64url characters encode the 32-byte MAC; more would overrun given_mac */
	signature_len = token_len - (size_t) (second_dot + 1 - token);
	given_len = signature_len == HS256_SIGNATURE_CHARS ?
		base64url_decode(second_dot + 1, signature_len, given_mac) : -1;
	if (given_len != HS256_MAC_BYTES)
	{
		verdict = JWT_BAD_SIGNATURE;
		goto done;
	}
	if (HMAC(EVP_sha256(), secret, (int) strlen(secret), (const unsigned char *) token,
			 (size_t) (second_dot - token), expected_mac, &expected_len) == NULL ||
		expected_len != HS256_MAC_BYTES ||
		CRYPTO_memcmp(expected_mac, given_mac, HS256_MAC_BYTES) != 0)
	{
		verdict = JWT_BAD_SIGNATURE;
		goto done;
	}

	claims = decode_json_part(first_dot + 1, (size_t) (second_dot - first_dot - 1));
	if (claims == NULL)
		goto done;

	has = claim_number(claims, "exp", &exp);
	if (has <= 0)
	{
		verdict = has == 0 ? JWT_NO_EXPIRY : JWT_MALFORMED;
		goto done;
	}
	/* not exp + leeway_s, which overflows for an exp near INT64_MAX */
	if (now_s - leeway_s > exp)
	{
		verdict = JWT_EXPIRED;
		goto done;
	}
	if (claim_number(claims, "nbf", &nbf) < 0 || claim_number(claims, "iat", &iat) < 0)
		goto done;
	if ((nbf != 0 && nbf > now_s + leeway_s) || (iat != 0 && iat > now_s + leeway_s))
	{
		verdict = JWT_NOT_YET_VALID;
		goto done;
	}

	if (audience != NULL && audience[0] != '\0')
	{
		json_t	   *aud = json_object_get(claims, "aud");
		int			matched = json_is_string(aud) && strcmp(json_string_value(aud), audience) == 0;

		if (json_is_array(aud))
		{
			size_t		i;
			json_t	   *item;

			json_array_foreach(aud, i, item)
				matched |= json_is_string(item) && strcmp(json_string_value(item), audience) == 0;
		}
		if (!matched)
		{
			verdict = JWT_BAD_AUDIENCE;
			goto done;
		}
	}

	sub = json_object_get(claims, "sub");
	if (!json_is_string(sub) || !jwt_parse_uuid(json_string_value(sub), identity->user_id))
	{
		verdict = JWT_BAD_SUBJECT;
		goto done;
	}
	name = json_object_get(claims, "name");
	if (!json_is_string(name))
		name = json_object_get(claims, "preferred_username");
	if (json_is_string(name) && json_string_length(name) < sizeof(identity->username))
		strcpy(identity->username, json_string_value(name));
	identity->expires_at = exp;
	verdict = JWT_VALID;

done:
	if (header)
		json_decref(header);
	if (claims)
		json_decref(claims);
	if (verdict != JWT_VALID)
		memset(identity, 0, sizeof(*identity));
	return verdict;
}

/* Close reasons for each verdict; none echoes any part of the token. */
const char *
jwt_verdict_message(JwtVerdict verdict)
{
	switch (verdict)
	{
		case JWT_VALID:
			return "valid";
		case JWT_NO_SECRET:
			return "authentication is not configured";
		case JWT_MALFORMED:
			return "malformed token";
		case JWT_BAD_ALGORITHM:
			return "token algorithm must be HS256";
		case JWT_BAD_SIGNATURE:
			return "invalid token signature";
		case JWT_EXPIRED:
			return "token expired";
		case JWT_NOT_YET_VALID:
			return "token not yet valid";
		case JWT_BAD_AUDIENCE:
			return "token audience mismatch";
		case JWT_BAD_SUBJECT:
			return "token subject must be a user UUID";
		case JWT_NO_EXPIRY:
			return "token has no exp claim";
	}
	return "invalid token";
}

/*
 * Signs claims_json (a JSON object) as an HS256 token.  Returns a
 * malloc'd string, or NULL when out of memory or OpenSSL fails.
 */
char *
jwt_sign(const char *secret, const char *claims_json)
{
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	size_t		claims_len = strlen(claims_json);
	size_t		capacity = 4 * ((sizeof(header) + claims_len + HS256_MAC_BYTES) / 3 + 3) + 8;
	char	   *token = malloc(capacity);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	size_t		n;

	if (token == NULL)
		return NULL;
	n = base64url_encode((const unsigned char *) header, sizeof(header) - 1, token);
	token[n++] = '.';
	n += base64url_encode((const unsigned char *) claims_json, claims_len, token + n);
	if (HMAC(EVP_sha256(), secret, (int) strlen(secret), (const unsigned char *) token, n,
			 mac, &mac_len) == NULL)
	{
		free(token);
		return NULL;
	}
	token[n++] = '.';
	base64url_encode(mac, mac_len, token + n);
	return token;
}
