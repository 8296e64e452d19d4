/*-------------------------------------------------------------------------
 * fuzz_redis.h
 *	  The check the Redis targets share: PresenceData another node wrote,
 *	  parsed by redis_parse_presence, must fit live_state's SessionUser
 *	  and be serialisable again as presence_data() builds it.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_FUZZ_REDIS_H
#define PRESENCE_FUZZ_REDIS_H

#include "presence.h"

#include "fuzz_common.h"
#include "redis_layout.h"

/* src into a buffer of size bytes, as live_state's strlcpy does. */
static inline void
fuzz_copy(char *dst, size_t size, const char *src)
{
	size_t		len = strlen(src);

	if (len >= size)
		len = size - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

static inline void
fuzz_check_presence(json_t *data)
{
	RedisPresence presence;
	/* the sizes of SessionUser's fields (live_state.c) */
	char		user_id[PRESENCE_UUID_LEN + 1] = "";
	char		username[PRESENCE_USERNAME_MAX + 1] = "";
	char		role[16] = "";
	char		event_id[PRESENCE_EVENT_ID_MAX + 1] = "";
	char		activity[PRESENCE_ACTIVITY_MAX + 1] = "";
	json_t	   *rebuilt;

	redis_parse_presence(data, &presence);
	FUZZ_CHECK(presence.status >= -1 && presence.status <= 1);
	FUZZ_CHECK(presence.has_cursor == (presence.cursor_event_id != NULL));
	if (presence.user_id)
	{
		FUZZ_CHECK(strlen(presence.user_id) == PRESENCE_UUID_LEN);
		fuzz_copy(user_id, sizeof(user_id), presence.user_id);
	}
	if (presence.username)
		fuzz_copy(username, sizeof(username), presence.username);
	if (presence.role)
		fuzz_copy(role, sizeof(role), presence.role);
	if (presence.cursor_event_id)
		fuzz_copy(event_id, sizeof(event_id), presence.cursor_event_id);
	if (presence.activity)
		fuzz_copy(activity, sizeof(activity), presence.activity);
	/* what is kept must be what was sent, and go out again (presence_data) */
	FUZZ_CHECK(presence.username == NULL || strcmp(username, presence.username) == 0);
	FUZZ_CHECK(presence.role == NULL || strcmp(role, presence.role) == 0);
	FUZZ_CHECK(presence.cursor_event_id == NULL || strcmp(event_id, presence.cursor_event_id) == 0);
	FUZZ_CHECK(presence.activity == NULL || strcmp(activity, presence.activity) == 0);
	rebuilt = json_pack("{s:s, s:s, s:s, s:s, s:I, s:{s:s, s:I}, s:s}",
						"userId", user_id, "username", username, "role", role,
						"status", "online", "lastSeen", (json_int_t) presence.last_seen_ms,
						"cursor", "eventId", event_id, "position", (json_int_t) presence.cursor_position,
						"activity", activity);
	FUZZ_CHECK(rebuilt != NULL);
	json_decref(rebuilt);
}

#endif							/* PRESENCE_FUZZ_REDIS_H */
