/*-------------------------------------------------------------------------
 * auth_keys.c
 *	  The ws worker's token policy: the presence.jwt_* GUCs and the public
 *	  keys of presence.jwt_public_keys_file, applied by jwt_verify.
 *
 * The keys are read outside library callbacks, when the worker starts and
 * after each reload (auth_keys_reload); a file that cannot be read or
 * parsed leaves the keys in use as they were, so a bad edit during a key
 * rotation does not lock every client out.  jwt_verify_client_token runs
 * inside libwebsockets callbacks: it reads GUC variables and the loaded
 * set, and allocates nothing from PostgreSQL.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <errno.h>
#include <stdio.h>

#include "auth.h"

/* A JWKS document is a few kB; this bounds what a mistaken path costs. */
#define KEYS_FILE_MAX_BYTES (1024 * 1024)

/* The keys in use, owned here; NULL when no file is configured. */
static JwtKeySet *loaded_keys = NULL;

/*
 * The file's contents, malloc'd, with *len set; or NULL with problem set.
 * Plain stdio: nothing here may raise.
 */
static char *
read_keys_file(const char *path, size_t *len, char *problem, size_t problem_size)
{
	FILE	   *file = fopen(path, "rb");
	char	   *text = NULL;

	if (file == NULL)
	{
		snprintf(problem, problem_size, "%s", strerror(errno));
		return NULL;
	}
	text = malloc(KEYS_FILE_MAX_BYTES + 1);
	if (text == NULL)
		snprintf(problem, problem_size, "out of memory");
	else
	{
		*len = fread(text, 1, KEYS_FILE_MAX_BYTES + 1, file);
		if (ferror(file))
			snprintf(problem, problem_size, "%s", strerror(errno));
		else if (*len > KEYS_FILE_MAX_BYTES)
			snprintf(problem, problem_size, "larger than %d bytes", KEYS_FILE_MAX_BYTES);
		else
		{
			fclose(file);
			return text;
		}
		free(text);
	}
	fclose(file);
	return NULL;
}

/*
 * (Re)reads presence.jwt_public_keys_file.  Returns true when the keys in
 * use are now the file's (or none, with the setting empty), false when
 * they stayed as they were (none when none had loaded yet).  message gets what to log either way: why the
 * file was refused, or how many keys it gave; "" when the setting is
 * empty.
 */
bool
auth_keys_reload(char *message, size_t message_size)
{
	const char *path = presence_jwt_public_keys_file;
	char		problem[256];
	char	   *text;
	size_t		len = 0;
	JwtKeySet  *keys = NULL;

	message[0] = '\0';
	if (path == NULL || path[0] == '\0')
	{
		jwt_keys_free(loaded_keys);
		loaded_keys = NULL;
		return true;
	}
	text = read_keys_file(path, &len, problem, sizeof(problem));
	if (text != NULL)
	{
		keys = jwt_keys_parse(text, len, problem, sizeof(problem));
		free(text);
	}
	if (keys == NULL)
	{
		snprintf(message, message_size, "could not load JWT public keys from \"%s\": %s; %s",
				 path, problem, loaded_keys ? "the previous keys stay in use" : "no public keys are in use");
		return false;
	}
	jwt_keys_free(loaded_keys);
	loaded_keys = keys;
	if (jwt_keys_skipped(keys) > 0)
		snprintf(message, message_size,
				 "loaded %d JWT public keys from \"%s\", skipped %d not for signatures or of another type",
				 jwt_keys_count(keys), path, jwt_keys_skipped(keys));
	else
		snprintf(message, message_size, "loaded %d JWT public keys from \"%s\"", jwt_keys_count(keys), path);
	return true;
}

/*
 * Verifies a client's token (Authorization header or auth message) under
 * the current GUCs and keys.
 */
JwtVerdict
jwt_verify_client_token(const char *token, size_t token_len, int64_t now_s, JwtIdentity *identity)
{
	JwtPolicy	policy = {
		.secret = presence_jwt_secret,
		.keys = loaded_keys,
		.audience = presence_jwt_audience,
		.issuer = presence_jwt_issuer,
		.user_id_claim = presence_jwt_user_id_claim,
		.leeway_s = presence_jwt_leeway_s,
	};

	/* the check hook refuses an invalid list, so this sets the GUC's set */
	(void) jwt_parse_algorithms(presence_jwt_algorithms, &policy.algorithms);
	return jwt_verify(token, token_len, &policy, now_s, identity);
}
