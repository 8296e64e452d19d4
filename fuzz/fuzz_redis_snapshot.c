/*-------------------------------------------------------------------------
 * fuzz_redis_snapshot.c
 *	  libFuzzer target: a session's snapshot from Redis (the snapshot
 *	  script's reply), as live_apply_snapshot reads it: entries alternate
 *	  PresenceData JSON, parsed by redis_parse_presence
 *	  (src/redis_layout.c), and the user's connection ids.  The input is
 *	  the entries, one per line.
 *-------------------------------------------------------------------------
 */
#include "fuzz_redis.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *text = fuzz_cstring(data, size);
	char	   *line = text;

	for (int i = 0; line != NULL; i++)
	{
		char	   *end = strchr(line, '\n');

		if (end)
			*end = '\0';
		if (i % 2 == 0)
		{
			/* hiredis hands live_state a NUL-terminated string */
			json_t	   *presence = json_loads(line, 0, NULL);

			fuzz_check_presence(presence);
			if (presence)
				json_decref(presence);
		}
		line = end ? end + 1 : NULL;
	}
	free(text);
	return 0;
}
