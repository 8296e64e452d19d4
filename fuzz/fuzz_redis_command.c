/*-------------------------------------------------------------------------
 * fuzz_redis_command.c
 *	  libFuzzer target: a message on the Redis commands channel (a SQL
 *	  command another node published), as live_apply_remote_command
 *	  reads it: redis_parse_command (src/redis_layout.c).
 *-------------------------------------------------------------------------
 */
#include "fuzz_redis.h"
#include "auth.h"
#include "protocol.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	RedisCommand command;
	char		canonical[PRESENCE_UUID_LEN + 1];

	if (!redis_parse_command((const char *) data, size, &command))
	{
		FUZZ_CHECK(command.root == NULL);
		return 0;
	}
	FUZZ_CHECK(command.origin && command.command && command.session_id);
	FUZZ_CHECK(protocol_valid_session_id(command.session_id));
	if (command.user_id)
		FUZZ_CHECK(jwt_parse_uuid(command.user_id, canonical) && strcmp(canonical, command.user_id) == 0);
	/* live_apply_command builds the broadcast like this */
	if (command.payload)
	{
		json_t	   *message = json_pack("{s:s, s:s, s:O}", "type", "broadcast",
										"sessionId", command.session_id, "payload", command.payload);
		char	   *text;

		FUZZ_CHECK(message != NULL);
		text = json_dumps(message, JSON_COMPACT);
		FUZZ_CHECK(text != NULL);
		free(text);
		json_decref(message);
	}
	json_decref(command.root);
	return 0;
}
