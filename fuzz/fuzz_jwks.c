/*-------------------------------------------------------------------------
 * fuzz_jwks.c
 *	  libFuzzer target: jwt_keys_parse (src/auth.c), the parser of
 *	  presence.jwt_public_keys_file (a JWKS document or PEM public keys),
 *	  then jwt_verify with whatever keys it gave.
 *
 * A file that parses yields at most JWT_MAX_KEYS keys; one that does not
 * yields a reason that is printable ASCII (it goes to the server log and
 * never quotes the file).  Tokens of each public-key algorithm, with and
 * without a kid the seeds use, are then verified against the parsed keys:
 * their signatures are made of nothing, so none may verify, whatever
 * strange key (an RSA modulus of odd size, a point at a corner of the
 * curve) was accepted.
 *-------------------------------------------------------------------------
 */
#include <ctype.h>

#include "auth.h"
#include "fuzz_common.h"

#define FUZZ_NOW 1764526000

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Headers {"alg":"RS256"}, {"alg":"ES256","kid":"ec-1"}, {"alg":"EdDSA"},
 * {"alg":"RS256","kid":"rsa-1"}; claims {"sub":"b0b00000-0000-4000-8000-000000000002","exp":1764529600};
 * signatures of 256 and 64 zero bytes.
 */
#define CLAIMS "eyJzdWIiOiJiMGIwMDAwMC0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDIiLCJleHAiOjE3NjQ1Mjk2MDB9"
/* 64 and 256 zero bytes, base64url: 86 and 342 characters */
#define ZEROS_64 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define ZEROS_256 ZEROS_64 ZEROS_64 ZEROS_64 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static const char *const tokens[] = {
	"eyJhbGciOiJSUzI1NiJ9." CLAIMS "." ZEROS_256,
	"eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjLTEifQ." CLAIMS "." ZEROS_64,
	"eyJhbGciOiJFZERTQSJ9." CLAIMS "." ZEROS_64,
	"eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0." CLAIMS "." ZEROS_256,
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		problem[256];
	char	   *text = fuzz_cstring(data, size);
	JwtKeySet  *keys = jwt_keys_parse(text, size, problem, sizeof(problem));

	free(text);
	if (keys == NULL)
	{
		FUZZ_CHECK(problem[0] != '\0' && strlen(problem) < sizeof(problem));
		for (const char *c = problem; *c; c++)
			FUZZ_CHECK(isprint((unsigned char) *c));
		return 0;
	}
	FUZZ_CHECK(problem[0] == '\0');
	FUZZ_CHECK(jwt_keys_count(keys) >= 0 && jwt_keys_count(keys) <= JWT_MAX_KEYS);
	FUZZ_CHECK(jwt_keys_skipped(keys) >= 0);
	for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++)
	{
		JwtPolicy	policy = {
			.algorithms = JWT_ALG_ALL,
			.keys = keys,
			.user_id_claim = "sub",
		};
		JwtIdentity identity;
		JwtVerdict	verdict = jwt_verify(tokens[i], strlen(tokens[i]), &policy, FUZZ_NOW, &identity);

		FUZZ_CHECK(verdict != JWT_VALID && jwt_verdict_message(verdict) != NULL);
	}
	jwt_keys_free(keys);
	return 0;
}
