/*-------------------------------------------------------------------------
 * auth.c
 *	  JSON Web Tokens: HS256 signed and verified with OpenSSL's HMAC;
 *	  RS256, ES256 and EdDSA verified with EVP_DigestVerify against public
 *	  keys parsed from PEM or a JWKS document.
 *
 * The algorithm is never taken from the token alone.  A token's alg must
 * be in the policy's set before any signature work ("none" is no
 * algorithm at all), and every key serves exactly one algorithm: the HMAC
 * secret HS256 only, an RSA key RS256 only, a P-256 key ES256 only, an
 * Ed25519 key EdDSA only.  So an HS256 token "signed" with an RSA public
 * key's bytes is checked against the secret and fails, and an RS256 token
 * never meets an EC key.  MACs are compared with CRYPTO_memcmp (constant
 * time).
 *
 * This file uses only malloc-based libraries (OpenSSL, jansson) and never
 * raises a PostgreSQL error: the worker calls jwt_verify from inside
 * libwebsockets callbacks, where a longjmp would corrupt lws's stack.  It
 * leaves OpenSSL's error queue empty, since lws reads that queue on the
 * same thread to judge its TLS calls.
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "auth.h"

#define HS256_MAC_BYTES 32
#define JWS_RAW_SIGNATURE_BYTES 64	/* ES256 r || s, and Ed25519 */
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192
#define MAX_SIGNATURE_BYTES (RSA_MAX_BITS / 8)
#define MAX_SIGNATURE_CHARS 1366	/* unpadded base64url of 1024 bytes */
#define MAX_KID_BYTES 255

/* A public key and the one algorithm it verifies. */
typedef struct JwtKey
{
	EVP_PKEY   *pkey;
	unsigned	algorithm;		/* one JWT_ALG_* bit */
	char	   *kid;			/* NULL: none (PEM keys, JWKS keys without kid) */
} JwtKey;

struct JwtKeySet
{
	int			count;
	int			skipped;		/* JWKS keys not for signatures or of other types */
	JwtKey		keys[JWT_MAX_KEYS];
};

/* Names as RFC 7518 spells them (case-sensitive). */
static const struct
{
	const char *name;
	unsigned	algorithm;
}			algorithm_names[] =
{
	{"HS256", JWT_ALG_HS256},
	{"RS256", JWT_ALG_RS256},
	{"ES256", JWT_ALG_ES256},
	{"EdDSA", JWT_ALG_EDDSA},
};

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
 * length, or -1 on any character outside the alphabet, an impossible
 * length or trailing bits that are not zero (so two different strings
 * never decode to the same token).  out needs 3 * len / 4 + 1 bytes.
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
	/* the bits past the last byte must be zero: one encoding per value */
	if (bits > 0 && (buffer & ((1u << bits) - 1)) != 0)
		return -1;
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

/* The algorithm named by the len bytes at name, or 0 when none is. */
static unsigned
algorithm_named(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(algorithm_names) / sizeof(algorithm_names[0]); i++)
		if (strlen(algorithm_names[i].name) == len && memcmp(algorithm_names[i].name, name, len) == 0)
			return algorithm_names[i].algorithm;
	return 0;
}

static const char *
algorithm_name(unsigned algorithm)
{
	for (size_t i = 0; i < sizeof(algorithm_names) / sizeof(algorithm_names[0]); i++)
		if (algorithm_names[i].algorithm == algorithm)
			return algorithm_names[i].name;
	return "?";
}

/*
 * Parses presence.jwt_algorithms: names separated by commas, spaces
 * around them allowed, at least one.  Sets *algorithms to the set, or to
 * 0 and returns false when the list is not valid.
 */
bool
jwt_parse_algorithms(const char *list, unsigned *algorithms)
{
	const char *at = list;

	*algorithms = 0;
	for (;;)
	{
		size_t		len;
		unsigned	algorithm;

		while (*at == ' ')
			at++;
		len = strcspn(at, ", ");
		algorithm = algorithm_named(at, len);
		if (algorithm == 0)
			break;
		*algorithms |= algorithm;
		at += len;
		while (*at == ' ')
			at++;
		if (*at == '\0')
			return true;
		if (*at != ',')
			break;
		at++;
	}
	*algorithms = 0;
	return false;
}

/*
 * Verifies an RS256, ES256 or EdDSA signature with one key of that
 * algorithm.  The JWS forms are the ones RFC 7518 fixes: RSASSA-PKCS1-v1_5
 * with SHA-256 of the key's size, ECDSA P-256 as raw r || s (converted to
 * the DER that OpenSSL verifies), Ed25519 over the message itself.
 */
static bool
signature_verifies(const JwtKey *key, const unsigned char *message, size_t message_len,
				   const unsigned char *signature, size_t signature_len)
{
	EVP_MD_CTX *context;
	const EVP_MD *digest = key->algorithm == JWT_ALG_EDDSA ? NULL : EVP_sha256();
	unsigned char *der = NULL;
	bool		verified;

	if (key->algorithm == JWT_ALG_RS256 ? signature_len != (size_t) EVP_PKEY_get_size(key->pkey)
		: signature_len != JWS_RAW_SIGNATURE_BYTES)
		return false;
	if (key->algorithm == JWT_ALG_ES256)
	{
		ECDSA_SIG  *pair = ECDSA_SIG_new();
		BIGNUM	   *r = BN_bin2bn(signature, JWS_RAW_SIGNATURE_BYTES / 2, NULL);
		BIGNUM	   *s = BN_bin2bn(signature + JWS_RAW_SIGNATURE_BYTES / 2, JWS_RAW_SIGNATURE_BYTES / 2, NULL);
		int			der_len = -1;

		if (pair && r && s && ECDSA_SIG_set0(pair, r, s))
		{
			r = s = NULL;		/* pair owns them now */
			der_len = i2d_ECDSA_SIG(pair, &der);
		}
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(pair);
		if (der_len <= 0)
			return false;
		signature = der;
		signature_len = (size_t) der_len;
	}
	context = EVP_MD_CTX_new();
	verified = context != NULL &&
		EVP_DigestVerifyInit(context, NULL, digest, NULL, key->pkey) == 1 &&
		EVP_DigestVerify(context, signature, signature_len, message, message_len) == 1;
	EVP_MD_CTX_free(context);
	OPENSSL_free(der);
	return verified;
}

/* Whether any public key carries this kid. */
static bool
kid_is_known(const JwtKeySet *keys, const char *kid)
{
	if (keys == NULL || kid == NULL)
		return false;
	for (int i = 0; i < keys->count; i++)
		if (keys->keys[i].kid && strcmp(keys->keys[i].kid, kid) == 0)
			return true;
	return false;
}

/*
 * Checks an RS256, ES256 or EdDSA signature against the public keys.  The
 * candidates: the keys with the token's kid; when no key has it, or the
 * token has none, the keys without a kid (PEM keys); a token without kid
 * may also match any key with one.  Of those, only keys of the token's
 * algorithm are tried.
 */
static JwtVerdict
verify_with_keys(const JwtKeySet *keys, unsigned algorithm, const char *kid,
				 const unsigned char *message, size_t message_len,
				 const unsigned char *signature, size_t signature_len)
{
	bool		named = kid_is_known(keys, kid);
	bool		candidates = false;
	bool		typed = false;

	if (keys == NULL || keys->count == 0)
		return JWT_NO_PUBLIC_KEYS;
	for (int i = 0; i < keys->count; i++)
	{
		const JwtKey *key = &keys->keys[i];

		if (kid != NULL && (named ? key->kid == NULL || strcmp(key->kid, kid) != 0 : key->kid != NULL))
			continue;
		candidates = true;
		if (key->algorithm != algorithm)
			continue;
		typed = true;
		if (signature_verifies(key, message, message_len, signature, signature_len))
			return JWT_VALID;
	}
	if (!candidates)
		return JWT_UNKNOWN_KEY;
	return typed ? JWT_BAD_SIGNATURE : JWT_KEY_MISMATCH;
}

/*
 * Checks the signature of the token whose header is given, by the
 * header's alg: HS256 against the secret, the others against the public
 * keys.  message is header.claims as sent.
 */
static JwtVerdict
verify_signature(const JwtPolicy *policy, json_t *header, const char *message, size_t message_len,
				 const char *signature_text, size_t signature_chars)
{
	json_t	   *alg = json_object_get(header, "alg");
	json_t	   *kid_value = json_object_get(header, "kid");
	const char *kid = NULL;
	unsigned	algorithm;
	unsigned	allowed = policy->algorithms;
	unsigned char signature[MAX_SIGNATURE_BYTES + 3];
	long		signature_len;

	if (!json_is_string(alg) || json_object_get(header, "crit") != NULL)
		return JWT_BAD_ALGORITHM;
	algorithm = algorithm_named(json_string_value(alg), json_string_length(alg));
	if (algorithm == 0)
		return JWT_BAD_ALGORITHM;
	/* HS256 is allowed only with a secret to check it against */
	if (policy->secret == NULL || policy->secret[0] == '\0')
		allowed &= ~JWT_ALG_HS256;
	if ((allowed & algorithm) == 0)
		return JWT_ALGORITHM_NOT_ALLOWED;
	if (kid_value != NULL)
	{
		if (!json_is_string(kid_value))
			return JWT_MALFORMED;
		kid = json_string_value(kid_value);
	}

	/* the longest signature is an RSA one of RSA_MAX_BITS; more would overrun */
	signature_len = signature_chars <= MAX_SIGNATURE_CHARS ?
		base64url_decode(signature_text, signature_chars, signature) : -1;
	if (signature_len <= 0)
		return JWT_BAD_SIGNATURE;

	if (algorithm == JWT_ALG_HS256)
	{
		unsigned char expected[EVP_MAX_MD_SIZE];
		unsigned int expected_len = 0;

		/* a kid of a public key: a public-key token relabelled HS256 */
		if (kid_is_known(policy->keys, kid))
			return JWT_KEY_MISMATCH;
		if (signature_len != HS256_MAC_BYTES ||
			HMAC(EVP_sha256(), policy->secret, (int) strlen(policy->secret),
				 (const unsigned char *) message, message_len, expected, &expected_len) == NULL ||
			expected_len != HS256_MAC_BYTES ||
			CRYPTO_memcmp(expected, signature, HS256_MAC_BYTES) != 0)
			return JWT_BAD_SIGNATURE;
		return JWT_VALID;
	}
	return verify_with_keys(policy->keys, algorithm, kid, (const unsigned char *) message, message_len,
							signature, (size_t) signature_len);
}

/* Whether the string claim name equals expected. */
static bool
claim_is(json_t *claims, const char *name, const char *expected)
{
	json_t	   *claim = json_object_get(claims, name);

	return json_is_string(claim) && strcmp(json_string_value(claim), expected) == 0;
}

/*
 * Verifies a token under the policy and extracts the identity.  now_s is
 * passed in (not read from the clock) so tests and callers control time.
 */
JwtVerdict
jwt_verify(const char *token, size_t token_len, const JwtPolicy *policy, int64_t now_s,
		   JwtIdentity *identity)
{
	const char *first_dot,
			   *second_dot;
	json_t	   *header = NULL,
			   *claims = NULL,
			   *user_id,
			   *name;
	int64_t		exp = 0,
				nbf = 0,
				iat = 0;
	int			has;
	JwtVerdict	verdict = JWT_MALFORMED;

	memset(identity, 0, sizeof(*identity));
	if ((policy->secret == NULL || policy->secret[0] == '\0') &&
		(policy->keys == NULL || policy->keys->count == 0))
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
	verdict = verify_signature(policy, header, token, (size_t) (second_dot - token), second_dot + 1,
							   token_len - (size_t) (second_dot + 1 - token));
	if (verdict != JWT_VALID)
		goto done;
	verdict = JWT_MALFORMED;

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
	if (now_s - policy->leeway_s > exp)
	{
		verdict = JWT_EXPIRED;
		goto done;
	}
	if (claim_number(claims, "nbf", &nbf) < 0 || claim_number(claims, "iat", &iat) < 0)
		goto done;
	if ((nbf != 0 && nbf > now_s + policy->leeway_s) || (iat != 0 && iat > now_s + policy->leeway_s))
	{
		verdict = JWT_NOT_YET_VALID;
		goto done;
	}

	if (policy->issuer != NULL && policy->issuer[0] != '\0' && !claim_is(claims, "iss", policy->issuer))
	{
		verdict = JWT_BAD_ISSUER;
		goto done;
	}
	if (policy->audience != NULL && policy->audience[0] != '\0')
	{
		json_t	   *aud = json_object_get(claims, "aud");
		int			matched = claim_is(claims, "aud", policy->audience);

		if (json_is_array(aud))
		{
			size_t		i;
			json_t	   *item;

			json_array_foreach(aud, i, item)
				matched |= json_is_string(item) && strcmp(json_string_value(item), policy->audience) == 0;
		}
		if (!matched)
		{
			verdict = JWT_BAD_AUDIENCE;
			goto done;
		}
	}

	user_id = json_object_get(claims, policy->user_id_claim);
	if (!json_is_string(user_id) || !jwt_parse_uuid(json_string_value(user_id), identity->user_id))
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
	ERR_clear_error();
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
			return "unsupported token algorithm";
		case JWT_BAD_SIGNATURE:
			return "invalid token signature";
		case JWT_EXPIRED:
			return "token expired";
		case JWT_NOT_YET_VALID:
			return "token not yet valid";
		case JWT_BAD_AUDIENCE:
			return "token audience mismatch";
		case JWT_BAD_SUBJECT:
			return "token user id must be a UUID";
		case JWT_NO_EXPIRY:
			return "token has no exp claim";
		case JWT_ALGORITHM_NOT_ALLOWED:
			return "token algorithm not allowed";
		case JWT_UNKNOWN_KEY:
			return "unknown token key (kid)";
		case JWT_BAD_ISSUER:
			return "token issuer mismatch";
		case JWT_KEY_MISMATCH:
			return "token key type does not match its algorithm";
		case JWT_NO_PUBLIC_KEYS:
			return "no public keys configured";
	}
	return "invalid token";
}

/*
 * The one algorithm a public key serves, or 0 for a key of another type
 * (RSA-PSS, DSA, EC on another curve, X25519, ...).
 */
static unsigned
key_algorithm(EVP_PKEY *pkey)
{
	char		group[64];

	switch (EVP_PKEY_get_base_id(pkey))
	{
		case EVP_PKEY_RSA:
			return JWT_ALG_RS256;
		case EVP_PKEY_ED25519:
			return JWT_ALG_EDDSA;
		case EVP_PKEY_EC:
			if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) &&
				OBJ_txt2nid(group) == NID_X9_62_prime256v1)
				return JWT_ALG_ES256;
			return 0;
	}
	return 0;
}

/*
 * Adds a key to the set (which then owns pkey, freed on failure too).
 * number is the key's position in the file, for the problem.
 */
static bool
add_key(JwtKeySet *set, EVP_PKEY *pkey, const char *kid, int number, char *problem, size_t problem_size)
{
	unsigned	algorithm = key_algorithm(pkey);
	EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	bool		valid = check != NULL && EVP_PKEY_public_check(check) == 1;

	EVP_PKEY_CTX_free(check);
	if (algorithm == 0)
		snprintf(problem, problem_size, "key %d is not an RSA, P-256 or Ed25519 key", number);
	else if (algorithm == JWT_ALG_RS256 &&
			 (EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS || EVP_PKEY_get_bits(pkey) > RSA_MAX_BITS))
		snprintf(problem, problem_size, "key %d is an RSA key of %d bits; %d to %d are accepted",
				 number, EVP_PKEY_get_bits(pkey), RSA_MIN_BITS, RSA_MAX_BITS);
	else if (!valid)
		snprintf(problem, problem_size, "key %d is not a valid public key", number);
	else if (set->count == JWT_MAX_KEYS)
		snprintf(problem, problem_size, "more than %d keys", JWT_MAX_KEYS);
	else
	{
		JwtKey	   *key = &set->keys[set->count];

		key->kid = kid ? strdup(kid) : NULL;
		if (kid == NULL || key->kid != NULL)
		{
			key->pkey = pkey;
			key->algorithm = algorithm;
			set->count++;
			return true;
		}
		snprintf(problem, problem_size, "out of memory");
	}
	EVP_PKEY_free(pkey);
	return false;
}

/* A public key from OSSL_PARAMs (RSA n, e; EC group and point), or NULL. */
static EVP_PKEY *
key_from_params(const char *type, const OSSL_PARAM *params)
{
	EVP_PKEY_CTX *context = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY   *pkey = NULL;

	if (context == NULL || EVP_PKEY_fromdata_init(context) != 1 ||
		EVP_PKEY_fromdata(context, &pkey, EVP_PKEY_PUBLIC_KEY, (OSSL_PARAM *) params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(context);
	return pkey;
}

/*
 * Decodes the base64url member name of a JWK into out (out_size bytes):
 * its length, or -1 when it is missing, not base64url or longer.
 */
static long
jwk_bytes(json_t *jwk, const char *name, unsigned char *out, size_t out_size)
{
	json_t	   *member = json_object_get(jwk, name);
	size_t		chars = json_string_length(member);
	unsigned char *decoded;
	long		len;

	if (!json_is_string(member) || chars == 0 || chars > 4 * out_size / 3 + 1)
		return -1;
	decoded = malloc(3 * chars / 4 + 1);
	len = decoded ? base64url_decode(json_string_value(member), chars, decoded) : -1;
	if (len > (long) out_size)
		len = -1;
	if (len > 0)
		memcpy(out, decoded, (size_t) len);
	free(decoded);
	return len;
}

/* An RSA key from a JWK's n and e, or NULL. */
static EVP_PKEY *
jwk_rsa(json_t *jwk)
{
	unsigned char n_bytes[RSA_MAX_BITS / 8 + 1];
	unsigned char e_bytes[8];	/* e is 65537 in practice; a huge one would slow verification */
	long		n_len = jwk_bytes(jwk, "n", n_bytes, sizeof(n_bytes));
	long		e_len = jwk_bytes(jwk, "e", e_bytes, sizeof(e_bytes));
	BIGNUM	   *n = n_len > 0 ? BN_bin2bn(n_bytes, (int) n_len, NULL) : NULL;
	BIGNUM	   *e = e_len > 0 ? BN_bin2bn(e_bytes, (int) e_len, NULL) : NULL;
	OSSL_PARAM_BLD *builder = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY   *pkey = NULL;

	if (n && e && builder && OSSL_PARAM_BLD_push_BN(builder, OSSL_PKEY_PARAM_RSA_N, n) &&
		OSSL_PARAM_BLD_push_BN(builder, OSSL_PKEY_PARAM_RSA_E, e) &&
		(params = OSSL_PARAM_BLD_to_param(builder)) != NULL)
		pkey = key_from_params("RSA", params);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(builder);
	BN_free(n);
	BN_free(e);
	return pkey;
}

/* A P-256 key from a JWK's x and y (the uncompressed point 04 || x || y), or NULL. */
static EVP_PKEY *
jwk_p256(json_t *jwk)
{
	unsigned char point[65];
	char		group[] = "P-256";
	OSSL_PARAM	params[3];

	point[0] = 0x04;
	if (jwk_bytes(jwk, "x", point + 1, 32) != 32 || jwk_bytes(jwk, "y", point + 33, 32) != 32)
		return NULL;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point));
	params[2] = OSSL_PARAM_construct_end();
	return key_from_params("EC", params);
}

/* An Ed25519 key from a JWK's x, or NULL. */
static EVP_PKEY *
jwk_ed25519(json_t *jwk)
{
	unsigned char x[32];

	if (jwk_bytes(jwk, "x", x, sizeof(x)) != sizeof(x))
		return NULL;
	return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, sizeof(x));
}

/*
 * Reads a JWKS document (RFC 7517) into set.  Keys not meant for
 * signatures ("use" other than "sig"), of types no algorithm here uses
 * ("oct" secrets among them: symmetric keys never come from this file),
 * or whose "alg" is not the one their type serves are skipped and
 * counted, as an identity provider's JWKS may hold encryption keys; a key
 * of a supported type that does not decode fails the whole file.
 */
static bool
parse_jwks(JwtKeySet *set, const char *text, size_t len, char *problem, size_t problem_size)
{
	json_error_t error;
	json_t	   *document = json_loadb(text, len, JSON_REJECT_DUPLICATES, &error);
	json_t	   *keys = json_object_get(document, "keys");
	json_t	   *jwk;
	size_t		i;
	bool		ok = true;

	if (document == NULL)
	{
		/* the position, not error.text, which quotes the file */
		snprintf(problem, problem_size, "not valid JSON (line %d, column %d)", error.line, error.column);
		return false;
	}
	if (!json_is_array(keys))
	{
		snprintf(problem, problem_size, "a JWKS document needs a \"keys\" array");
		json_decref(document);
		return false;
	}
	json_array_foreach(keys, i, jwk)
	{
		json_t	   *kty = json_object_get(jwk, "kty");
		json_t	   *crv = json_object_get(jwk, "crv");
		json_t	   *use = json_object_get(jwk, "use");
		json_t	   *alg = json_object_get(jwk, "alg");
		json_t	   *kid = json_object_get(jwk, "kid");
		const char *type = json_string_value(kty);
		const char *curve = json_is_string(crv) ? json_string_value(crv) : "";
		unsigned	algorithm = 0;
		EVP_PKEY   *pkey = NULL;
		int			number = (int) i + 1;

		if (!json_is_string(kty) || (use && !json_is_string(use)) || (alg && !json_is_string(alg)) ||
			(kid && (!json_is_string(kid) || json_string_length(kid) > MAX_KID_BYTES)))
		{
			snprintf(problem, problem_size,
					 "key %d needs kty, and its use, alg and kid must be strings (kid of at most %d bytes)",
					 number, MAX_KID_BYTES);
			ok = false;
			break;
		}
		if (strcmp(type, "RSA") == 0)
			algorithm = JWT_ALG_RS256;
		else if (strcmp(type, "EC") == 0 && strcmp(curve, "P-256") == 0)
			algorithm = JWT_ALG_ES256;
		else if (strcmp(type, "OKP") == 0 && strcmp(curve, "Ed25519") == 0)
			algorithm = JWT_ALG_EDDSA;
		if (algorithm == 0 || (use && strcmp(json_string_value(use), "sig") != 0) ||
			(alg && strcmp(json_string_value(alg), algorithm_name(algorithm)) != 0))
		{
			set->skipped++;
			continue;
		}
		pkey = algorithm == JWT_ALG_RS256 ? jwk_rsa(jwk) :
			algorithm == JWT_ALG_ES256 ? jwk_p256(jwk) : jwk_ed25519(jwk);
		if (pkey == NULL)
		{
			snprintf(problem, problem_size, "key %d (%s) does not decode: %s", number, algorithm_name(algorithm),
					 algorithm == JWT_ALG_RS256 ? "n and e must be base64url big-endian integers" :
					 algorithm == JWT_ALG_ES256 ? "x and y must be base64url 32-byte coordinates of a P-256 point" :
					 "x must be a base64url 32-byte Ed25519 public key");
			ok = false;
			break;
		}
		if (!add_key(set, pkey, json_string_value(kid), number, problem, problem_size))
		{
			ok = false;
			break;
		}
	}
	json_decref(document);
	return ok;
}

/*
 * Reads PEM blocks into set: each must be a PUBLIC KEY (SubjectPublicKeyInfo);
 * text outside the blocks is ignored, as PEM tools do.  At least one.
 */
static bool
parse_pem(JwtKeySet *set, const char *text, size_t len, char *problem, size_t problem_size)
{
	BIO		   *bio = BIO_new_mem_buf(text, (int) len);
	bool		ok = bio != NULL;

	if (!ok)
		snprintf(problem, problem_size, "out of memory");
	for (int number = 1; ok; number++)
	{
		char	   *name = NULL;
		char	   *headers = NULL;
		unsigned char *data = NULL;
		long		data_len = 0;
		const unsigned char *at;
		EVP_PKEY   *pkey = NULL;

		if (!PEM_read_bio(bio, &name, &headers, &data, &data_len))
		{
			/* the end of the blocks is a PEM_R_NO_START_LINE */
			if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE)
				snprintf(problem, problem_size, "PEM block %d is not valid PEM", number);
			else if (number == 1)
				snprintf(problem, problem_size, "neither a JWKS document nor PEM public keys");
			else
				break;
			ok = false;
			break;
		}
		at = data;
		if (strcmp(name, "PUBLIC KEY") != 0)
			snprintf(problem, problem_size, "PEM block %d is not a PUBLIC KEY", number);
		else if ((pkey = d2i_PUBKEY(NULL, &at, data_len)) == NULL || at != data + data_len)
			snprintf(problem, problem_size, "PEM block %d is not a valid public key", number);
		ok = pkey != NULL && at == data + data_len;
		OPENSSL_free(name);
		OPENSSL_free(headers);
		OPENSSL_free(data);
		if (!ok)
			EVP_PKEY_free(pkey);
		else
			ok = add_key(set, pkey, NULL, number, problem, problem_size);
	}
	BIO_free(bio);
	return ok;
}

/*
 * Parses a keys file: a JWKS document when it starts with '{' (after
 * white space), else PEM public keys.  Returns the malloc'd set, or NULL
 * with problem set (a fixed text with positions; it never quotes the
 * file).  Runs outside library callbacks, but raises nothing either.
 */
JwtKeySet *
jwt_keys_parse(const char *text, size_t len, char *problem, size_t problem_size)
{
	JwtKeySet  *set = calloc(1, sizeof(JwtKeySet));
	size_t		start = 0;
	bool		ok;

	problem[0] = '\0';
	if (set == NULL)
	{
		snprintf(problem, problem_size, "out of memory");
		return NULL;
	}
	while (start < len && isspace((unsigned char) text[start]))
		start++;
	if (len > INT32_MAX)
	{
		snprintf(problem, problem_size, "too large");
		ok = false;
	}
	else if (start < len && text[start] == '{')
		ok = parse_jwks(set, text, len, problem, problem_size);
	else
		ok = parse_pem(set, text, len, problem, problem_size);
	ERR_clear_error();
	if (!ok)
	{
		jwt_keys_free(set);
		return NULL;
	}
	return set;
}

int
jwt_keys_count(const JwtKeySet *keys)
{
	return keys ? keys->count : 0;
}

int
jwt_keys_skipped(const JwtKeySet *keys)
{
	return keys ? keys->skipped : 0;
}

void
jwt_keys_free(JwtKeySet *keys)
{
	if (keys == NULL)
		return;
	for (int i = 0; i < keys->count; i++)
	{
		EVP_PKEY_free(keys->keys[i].pkey);
		free(keys->keys[i].kid);
	}
	free(keys);
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
