/*-------------------------------------------------------------------------
 * fuzz_protocol.c
 *	  libFuzzer target: one client WebSocket frame through protocol_parse
 *	  (src/protocol.c), as requests.c hands it every text frame.
 *
 * A frame that parses must be what the rest of the worker assumes: a
 * known type, a valid session id, strings within the protocol's limits
 * and serialisable again (they go back out in presence events and
 * replies), and the error reply for a frame that does not parse must be
 * buildable with whatever ref was accepted.
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"
#include "protocol.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ClientRequest request;
	const char *problem = NULL;
	bool		ok = protocol_parse((const char *) data, size, &request, &problem);
	json_t	   *reply;
	char	   *text;

	if (ok)
	{
		FUZZ_CHECK(request.type >= 0 && request.type < REQ_TYPE_COUNT);
		FUZZ_CHECK(request.root != NULL && json_is_object(request.root));
		FUZZ_CHECK(request.type != REQ_AUTH || request.token != NULL);
		FUZZ_CHECK(fuzz_serialisable(request.token, 8192));
		FUZZ_CHECK(request.session_id == NULL || protocol_valid_session_id(request.session_id));
		FUZZ_CHECK(fuzz_serialisable(request.session_id, 128));
		FUZZ_CHECK(request.status >= -1 && request.status <= 1);
		FUZZ_CHECK(fuzz_serialisable(request.activity, 256));
		FUZZ_CHECK(fuzz_serialisable(request.activity_type, 64));
		FUZZ_CHECK(fuzz_serialisable(request.operation_id, 255));
		FUZZ_CHECK(fuzz_serialisable(request.target, 500));
		FUZZ_CHECK(fuzz_serialisable(request.objective, 10000));
		FUZZ_CHECK(request.details == NULL || json_is_object(request.details));
		FUZZ_CHECK(request.metadata == NULL || json_is_object(request.metadata));
		if (request.type == REQ_SESSION_END)
			FUZZ_CHECK(strcmp(request.end_status, "completed") == 0 ||
					   strcmp(request.end_status, "failed") == 0);
		if (request.cursor.present)
		{
			FUZZ_CHECK(fuzz_serialisable(request.cursor.event_id, 128));
			FUZZ_CHECK(request.cursor.position >= 0);
		}
		/* as live_state's presence_data() sends a cursor to the session */
		reply = json_pack("{s:s, s:I}", "eventId", request.cursor.event_id,
						  "position", (json_int_t) request.cursor.position);
		FUZZ_CHECK(reply != NULL);
		json_decref(reply);
		reply = protocol_reply("ack", request.ref);
	}
	else
	{
		FUZZ_CHECK(problem != NULL);
		reply = protocol_error(request.ref, "invalid_message", problem);
	}
	FUZZ_CHECK(reply != NULL);
	text = json_dumps(reply, JSON_COMPACT);
	FUZZ_CHECK(text != NULL);
	free(text);
	json_decref(reply);
	protocol_request_free(&request);
	FUZZ_CHECK(request.root == NULL);
	return 0;
}
