/*-------------------------------------------------------------------------
 * fuzz_jwt.c
 *	  libFuzzer target: jwt_verify (src/auth.c), as the WebSocket
 *	  handshake and the auth message call it, with a fixed clock.
 *
 * A random token almost never carries a valid signature, so most of
 * jwt_verify (claims, times, issuer, audience, user id) would be out of
 * reach.  The low two bits of the first input byte pick how the rest
 * becomes a token:
 *   0  the bytes are the token, as a client sent it;
 *   1  the bytes are header JSON, '\n', claims JSON: encoded and signed
 *      here by the header's alg (RS256, ES256 and EdDSA with this run's
 *      keys, anything else HS256 with the secret), so every claim check
 *      is reached;
 *   2  the bytes are claims JSON, signed by jwt_sign (issue_token's path);
 *   3  as 1, but HMAC-signed with the RSA public key's PEM as the secret:
 *      the key-confusion forgery, which must never verify.
 * Bits 2-4 pick the allowed algorithms (0: all four), bit 5 the keys (a
 * JWKS document with kids "rsa", "ec", "ed", or the same keys as PEM),
 * bit 6 an issuer to check and the user id in claim "uid", bit 7 an
 * audience.  A token that verifies must yield a canonical user UUID, a
 * username that fits and can be serialised again, and an expiry the
 * clock has not passed; it must not verify once its algorithm is taken
 * out of the allowed set, nor under another secret without public keys.
 *-------------------------------------------------------------------------
 */
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "auth.h"
#include "fuzz_common.h"

#define FUZZ_SECRET "fuzz-secret-0123456789abcdef-0123456789"
#define FUZZ_AUDIENCE "presence"
#define FUZZ_ISSUER "https://issuer.example"
#define FUZZ_NOW 1764526000
#define FUZZ_LEEWAY 30

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned algorithm_sets[8] = {
	JWT_ALG_ALL, JWT_ALG_HS256, JWT_ALG_RS256, JWT_ALG_ES256, JWT_ALG_EDDSA,
	JWT_ALG_HS256 | JWT_ALG_RS256, JWT_ALG_RS256 | JWT_ALG_ES256 | JWT_ALG_EDDSA, JWT_ALG_ES256 | JWT_ALG_EDDSA,
};

/* This run's keys, made once. */
static EVP_PKEY *rsa_key,
		   *ec_key,
		   *ed_key;
static JwtKeySet *jwks_keys,
		   *pem_keys;
static char *rsa_pem;

/* Unpadded base64url of in into out (room for 4 * (len / 3 + 1) + 1). */
static size_t
encode(const uint8_t *in, size_t len, char *out)
{
	int			n = EVP_EncodeBlock((unsigned char *) out, in, (int) len);

	while (n > 0 && out[n - 1] == '=')
		n--;
	for (int i = 0; i < n; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	out[n] = '\0';
	return (size_t) n;
}

static void
append_pem(BIO *bio, EVP_PKEY *key)
{
	if (!PEM_write_bio_PUBKEY(bio, key))
		abort();
}

/* The public keys as a JWKS document and as PEM, through jwt_keys_parse. */
static void
make_keys(void)
{
	BIGNUM	   *n = NULL,
			   *e = NULL;
	unsigned char n_bytes[256],
				e_bytes[8],
				point[65],
				ed[32];
	size_t		point_len = 0,
				ed_len = sizeof(ed);
	char		n64[400],
				e64[16],
				x64[48],
				y64[48],
				ed64[48];
	char		jwks[1200];
	char		problem[256];
	BIO		   *bio = BIO_new(BIO_s_mem());
	char	   *pem;
	long		pem_len;

	rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
	ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	ed_key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (!rsa_key || !ec_key || !ed_key || !bio ||
		!EVP_PKEY_get_bn_param(rsa_key, OSSL_PKEY_PARAM_RSA_N, &n) ||
		!EVP_PKEY_get_bn_param(rsa_key, OSSL_PKEY_PARAM_RSA_E, &e) ||
		BN_bn2bin(n, n_bytes) != 256 ||
		!EVP_PKEY_get_octet_string_param(ec_key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &point_len) ||
		point_len != 65 || !EVP_PKEY_get_raw_public_key(ed_key, ed, &ed_len))
		abort();
	encode(n_bytes, 256, n64);
	encode(e_bytes, (size_t) BN_bn2bin(e, e_bytes), e64);
	encode(point + 1, 32, x64);
	encode(point + 33, 32, y64);
	encode(ed, ed_len, ed64);
	BN_free(n);
	BN_free(e);
	snprintf(jwks, sizeof(jwks),
			 "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"rsa\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":\"%s\"},"
			 "{\"kty\":\"EC\",\"kid\":\"ec\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},"
			 "{\"kty\":\"OKP\",\"kid\":\"ed\",\"crv\":\"Ed25519\",\"x\":\"%s\"}]}",
			 n64, e64, x64, y64, ed64);
	jwks_keys = jwt_keys_parse(jwks, strlen(jwks), problem, sizeof(problem));
	FUZZ_CHECK(jwks_keys != NULL && jwt_keys_count(jwks_keys) == 3);

	append_pem(bio, rsa_key);
	pem_len = BIO_get_mem_data(bio, &pem);
	rsa_pem = fuzz_cstring((const uint8_t *) pem, (size_t) pem_len);
	append_pem(bio, ec_key);
	append_pem(bio, ed_key);
	pem_len = BIO_get_mem_data(bio, &pem);
	pem_keys = jwt_keys_parse(pem, (size_t) pem_len, problem, sizeof(problem));
	FUZZ_CHECK(pem_keys != NULL && jwt_keys_count(pem_keys) == 3);
	BIO_free(bio);
}

/* The header's alg, if it is one of the public-key algorithms. */
static unsigned
header_algorithm(const uint8_t *header, size_t len)
{
	json_t	   *value = json_loadb((const char *) header, len, 0, NULL);
	const char *alg = json_string_value(json_object_get(value, "alg"));
	unsigned	algorithm = 0;

	if (alg && strcmp(alg, "RS256") == 0)
		algorithm = JWT_ALG_RS256;
	else if (alg && strcmp(alg, "ES256") == 0)
		algorithm = JWT_ALG_ES256;
	else if (alg && strcmp(alg, "EdDSA") == 0)
		algorithm = JWT_ALG_EDDSA;
	json_decref(value);
	return algorithm;
}

/* The JWS signature of message with a key: raw r || s for ES256. */
static size_t
sign(unsigned algorithm, const char *message, size_t len, unsigned char *signature)
{
	EVP_PKEY   *key = algorithm == JWT_ALG_RS256 ? rsa_key : algorithm == JWT_ALG_ES256 ? ec_key : ed_key;
	EVP_MD_CTX *context = EVP_MD_CTX_new();
	unsigned char der[256];
	size_t		der_len = sizeof(der);

	if (context == NULL ||
		EVP_DigestSignInit(context, NULL, algorithm == JWT_ALG_EDDSA ? NULL : EVP_sha256(), NULL, key) != 1 ||
		EVP_DigestSign(context, der, &der_len, (const unsigned char *) message, len) != 1)
		abort();
	EVP_MD_CTX_free(context);
	if (algorithm == JWT_ALG_ES256)
	{
		const unsigned char *at = der;
		ECDSA_SIG  *pair = d2i_ECDSA_SIG(NULL, &at, (long) der_len);

		if (pair == NULL || BN_bn2binpad(ECDSA_SIG_get0_r(pair), signature, 32) != 32 ||
			BN_bn2binpad(ECDSA_SIG_get0_s(pair), signature + 32, 32) != 32)
			abort();
		ECDSA_SIG_free(pair);
		return 64;
	}
	memcpy(signature, der, der_len);
	return der_len;
}

/* header.claims.signature; malloc'd.  secret NULL: by the header's alg. */
static char *
signed_token(const uint8_t *header, size_t header_len, const uint8_t *claims, size_t claims_len,
			 const char *secret)
{
	char	   *token = malloc(4 * ((header_len + claims_len) / 3 + 2) + 400 + 8);
	unsigned char signature[256];
	unsigned int mac_len = 0;
	size_t		signature_len;
	unsigned	algorithm = secret ? 0 : header_algorithm(header, header_len);
	size_t		n;

	if (token == NULL)
		abort();
	n = encode(header, header_len, token);
	token[n++] = '.';
	n += encode(claims, claims_len, token + n);
	if (algorithm != 0)
		signature_len = sign(algorithm, token, n, signature);
	else
	{
		secret = secret ? secret : FUZZ_SECRET;
		if (HMAC(EVP_sha256(), secret, (int) strlen(secret), (unsigned char *) token, n,
				 signature, &mac_len) == NULL)
			abort();
		signature_len = mac_len;
	}
	token[n++] = '.';
	encode(signature, signature_len, token + n);
	return token;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	JwtIdentity identity;
	JwtVerdict	verdict;
	JwtPolicy	policy;
	JwtPolicy	other;
	int			mode;
	char	   *token;
	size_t		token_len;
	char		canonical[37];

	if (size < 1 || size > 3 * JWT_MAX_TOKEN_BYTES)
		return 0;
	if (rsa_key == NULL)
		make_keys();
	policy = (JwtPolicy) {
		.algorithms = algorithm_sets[(data[0] >> 2) & 7],
		.secret = FUZZ_SECRET,
		.keys = (data[0] & 0x20) ? pem_keys : jwks_keys,
		.audience = (data[0] & 0x80) ? FUZZ_AUDIENCE : NULL,
		.issuer = (data[0] & 0x40) ? FUZZ_ISSUER : NULL,
		.user_id_claim = (data[0] & 0x40) ? "uid" : "sub",
		.leeway_s = FUZZ_LEEWAY,
	};
	mode = data[0] & 3;
	if (mode == 0)
	{
		token = malloc(size - 1 > 0 ? size - 1 : 1);
		if (token == NULL)
			abort();
		memcpy(token, data + 1, size - 1);
		token_len = size - 1;
	}
	else if (mode == 2)
	{
		char	   *claims = fuzz_cstring(data + 1, size - 1);

		token = jwt_sign(FUZZ_SECRET, claims);
		free(claims);
		FUZZ_CHECK(token != NULL);
		token_len = strlen(token);
	}
	else
	{
		const uint8_t *newline = memchr(data + 1, '\n', size - 1);
		size_t		header_len = newline ? (size_t) (newline - (data + 1)) : size - 1;
		const uint8_t *claims = newline ? newline + 1 : data + size;

		token = signed_token(data + 1, header_len, claims, (size_t) (data + size - claims),
							 mode == 3 ? rsa_pem : NULL);
		token_len = strlen(token);
	}

	verdict = jwt_verify(token, token_len, &policy, FUZZ_NOW, &identity);
	FUZZ_CHECK(jwt_verdict_message(verdict) != NULL);
	if (verdict == JWT_VALID)
	{
		FUZZ_CHECK(mode != 3);
		FUZZ_CHECK(strlen(identity.user_id) == 36);
		FUZZ_CHECK(jwt_parse_uuid(identity.user_id, canonical) && strcmp(canonical, identity.user_id) == 0);
		FUZZ_CHECK(fuzz_serialisable(identity.username, 255));
		FUZZ_CHECK(identity.expires_at >= FUZZ_NOW - FUZZ_LEEWAY);
		/* the token's one algorithm decides: without it, nothing verifies */
		other = policy;
		other.algorithms = JWT_ALG_ALL & ~policy.algorithms;
		FUZZ_CHECK(jwt_verify(token, token_len, &other, FUZZ_NOW, &identity) != JWT_VALID);
	}
	else
		FUZZ_CHECK(identity.user_id[0] == '\0' && identity.username[0] == '\0' && identity.expires_at == 0);
	/* the same token under a different secret and without public keys never verifies */
	other = policy;
	other.secret = "another-secret-0123456789abcdef-0123";
	other.keys = NULL;
	FUZZ_CHECK(jwt_verify(token, token_len, &other, FUZZ_NOW, &identity) != JWT_VALID);
	free(token);
	return 0;
}
