/*-------------------------------------------------------------------------
 * fuzz_jwt.c
 *	  libFuzzer target: jwt_verify (src/auth.c), as the WebSocket
 *	  handshake and the auth message call it, with a fixed clock.
 *
 * A random token almost never carries a valid HMAC, so most of
 * jwt_verify (claims, times, audience, subject) would be out of reach.
 * The first input byte picks how the rest becomes a token:
 *   0  the bytes are the token, as a client sent it;
 *   1  the bytes are header JSON, '\n', claims JSON: encoded and signed
 *      with the secret here, so every claim check is reached;
 *   2  the bytes are claims JSON, signed by jwt_sign (issue_token's path).
 * Bit 0x80 of the first byte sets an audience to check.  A token that
 * verifies must yield a canonical user UUID, a username that fits and
 * can be serialised again, and an expiry the clock has not passed.
 *-------------------------------------------------------------------------
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"
#include "fuzz_common.h"

#define FUZZ_SECRET "fuzz-secret-0123456789abcdef-0123456789"
#define FUZZ_AUDIENCE "presence"
#define FUZZ_NOW 1764526000
#define FUZZ_LEEWAY 30

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

/* header.claims.signature, signed with FUZZ_SECRET; malloc'd. */
static char *
signed_token(const uint8_t *header, size_t header_len, const uint8_t *claims, size_t claims_len)
{
	char	   *token = malloc(4 * ((header_len + claims_len) / 3 + 2) + 64 + 8);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	size_t		n;

	if (token == NULL)
		abort();
	n = encode(header, header_len, token);
	token[n++] = '.';
	n += encode(claims, claims_len, token + n);
	if (HMAC(EVP_sha256(), FUZZ_SECRET, (int) strlen(FUZZ_SECRET), (unsigned char *) token, n,
			 mac, &mac_len) == NULL)
		abort();
	token[n++] = '.';
	encode(mac, mac_len, token + n);
	return token;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	JwtIdentity identity;
	JwtVerdict	verdict;
	const char *audience;
	char	   *token;
	size_t		token_len;
	char		canonical[37];

	if (size < 1 || size > 3 * JWT_MAX_TOKEN_BYTES)
		return 0;
	audience = (data[0] & 0x80) ? FUZZ_AUDIENCE : NULL;
	switch (data[0] & 0x7f)
	{
		case 0:
			token = malloc(size - 1 > 0 ? size - 1 : 1);
			if (token == NULL)
				abort();
			memcpy(token, data + 1, size - 1);
			token_len = size - 1;
			break;
		case 1:
			{
				const uint8_t *newline = memchr(data + 1, '\n', size - 1);
				size_t		header_len = newline ? (size_t) (newline - (data + 1)) : size - 1;
				const uint8_t *claims = newline ? newline + 1 : data + size;

				token = signed_token(data + 1, header_len, claims, (size_t) (data + size - claims));
				token_len = strlen(token);
				break;
			}
		case 2:
			{
				char	   *claims = fuzz_cstring(data + 1, size - 1);

				token = jwt_sign(FUZZ_SECRET, claims);
				free(claims);
				FUZZ_CHECK(token != NULL);
				token_len = strlen(token);
				break;
			}
		default:
			return 0;
	}

	verdict = jwt_verify(token, token_len, FUZZ_SECRET, audience, FUZZ_LEEWAY, FUZZ_NOW, &identity);
	FUZZ_CHECK(jwt_verdict_message(verdict) != NULL);
	if (verdict == JWT_VALID)
	{
		FUZZ_CHECK(strlen(identity.user_id) == 36);
		FUZZ_CHECK(jwt_parse_uuid(identity.user_id, canonical) && strcmp(canonical, identity.user_id) == 0);
		FUZZ_CHECK(fuzz_serialisable(identity.username, 255));
		FUZZ_CHECK(identity.expires_at >= FUZZ_NOW - FUZZ_LEEWAY);
	}
	else
		FUZZ_CHECK(identity.user_id[0] == '\0' && identity.username[0] == '\0' && identity.expires_at == 0);
	/* the same token under a different secret never verifies */
	FUZZ_CHECK(jwt_verify(token, token_len, "another-secret-0123456789abcdef-0123", audience,
						  FUZZ_LEEWAY, FUZZ_NOW, &identity) != JWT_VALID);
	free(token);
	return 0;
}
