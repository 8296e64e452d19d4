/*-------------------------------------------------------------------------
 * fuzz_redis_event.c
 *	  libFuzzer target: a message on a session's Redis channel, as
 *	  redis_link.c hands it to live_remote.c's remote_event: the channel name
 *	  through redis_session_of_channel, the payload through
 *	  redis_parse_event and its PresenceData through redis_parse_presence
 *	  (src/redis_layout.c).
 *
 * The first input byte picks the part: 0 the channel name, anything
 * else the payload (the rest of the input).
 *-------------------------------------------------------------------------
 */
#include "fuzz_redis.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	RedisEvent	event;

	if (size < 1)
		return 0;
	if (data[0] == 0)
	{
		/* exactly the room redis_link.c gives it, so ASan sees any overrun */
		char	   *session_id = malloc(PRESENCE_SESSION_ID_MAX + 1);
		char	   *channel = fuzz_cstring(data + 1, size - 1);

		if (session_id == NULL)
			abort();
		if (redis_session_of_channel(channel, size - 1, session_id) != NULL)
			FUZZ_CHECK(strlen(session_id) <= PRESENCE_SESSION_ID_MAX);
		free(channel);
		free(session_id);
		return 0;
	}
	if (!redis_parse_event((const char *) data + 1, size - 1, &event))
	{
		FUZZ_CHECK(event.root == NULL);
		return 0;
	}
	FUZZ_CHECK(event.origin && event.kind && event.connection_id && event.user_id);
	FUZZ_CHECK(strlen(event.user_id) == PRESENCE_UUID_LEN);
	FUZZ_CHECK(strlen(event.connection_id) >= 1 && strlen(event.connection_id) <= REDIS_CONNECTION_ID_MAX);
	FUZZ_CHECK(strchr(event.connection_id, ' ') == NULL);
	FUZZ_CHECK(event.presence == NULL || json_is_object(event.presence));
	if (event.presence)
		fuzz_check_presence(event.presence);
	json_decref(event.root);
	return 0;
}
