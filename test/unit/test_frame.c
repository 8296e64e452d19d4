/*-------------------------------------------------------------------------
 * test_frame.c
 *	  src/frame.c without a server: the RFC 6455 header of a plain frame
 *	  at each length boundary, the permessage-deflate twin (RFC 7692:
 *	  RSV1, raw deflate, 00 00 ff ff dropped, no context between
 *	  messages), when no twin is made, and reference counting (the leak
 *	  check at exit proves every frame freed).
 *-------------------------------------------------------------------------
 */
#include <stdint.h>

#include <zlib.h>

#include "frame.h"
#include "protocol.h"
#include "unit.h"

/* {"p":"xxx…"} with as many x as make its compact JSON exactly len bytes (len >= 8). */
static json_t *
message_of_length(size_t len)
{
	size_t		fill = len - strlen("{\"p\":\"\"}");
	char	   *text = malloc(fill + 1);
	json_t	   *message;

	memset(text, 'x', fill);
	text[fill] = '\0';
	message = json_pack("{s:s}", "p", text);
	free(text);
	return message;
}

/* The frame's payload as the header says: checks the header, returns the payload length. */
static size_t
check_header(const unsigned char *wire, size_t wire_len, unsigned char first_byte, int line)
{
	size_t		header_len,
				len;

	if (wire[0] != first_byte)
		unit_fail(__FILE__, line, "first byte 0x%02x, expected 0x%02x", wire[0], first_byte);
	if ((wire[1] & 0x80) != 0)
		unit_fail(__FILE__, line, "a server frame must not be masked");
	len = wire[1] & 0x7F;
	header_len = 2;
	if (len == 126)
	{
		len = ((size_t) wire[2] << 8) | wire[3];
		header_len = 4;
		if (len < 126)
			unit_fail(__FILE__, line, "16-bit length %zu should have been 7-bit", len);
	}
	else if (len == 127)
	{
		len = 0;
		for (int i = 0; i < 8; i++)
			len = (len << 8) | wire[2 + i];
		header_len = 10;
		if (wire[2] & 0x80)
			unit_fail(__FILE__, line, "64-bit length has its top bit set");
		if (len < 65536)
			unit_fail(__FILE__, line, "64-bit length %zu should have been shorter", len);
	}
	if (header_len + len != wire_len)
		unit_fail(__FILE__, line, "header %zu + payload %zu != wire_len %zu", header_len, len, wire_len);
	return len;
}

static void
check_plain_frame(size_t len, size_t expected_header_len, int line)
{
	json_t	   *message = message_of_length(len);
	char	   *dumped = json_dumps(message, JSON_COMPACT);
	OutFrame   *frame = frame_from_json(message, 1234);

	if (frame == NULL)
	{
		unit_fail(__FILE__, line, "no frame for %zu bytes", len);
		free(dumped);
		json_decref(message);
		return;
	}
	if (strlen(dumped) != len)
		unit_fail(__FILE__, line, "test message is %zu bytes, not %zu", strlen(dumped), len);
	if (frame->len != len)
		unit_fail(__FILE__, line, "frame->len %zu != %zu", frame->len, len);
	if (frame->wire_len != expected_header_len + len)
		unit_fail(__FILE__, line, "wire_len %zu != %zu + %zu", frame->wire_len, expected_header_len, len);
	if (frame->wire + expected_header_len != frame->payload)
		unit_fail(__FILE__, line, "the payload does not follow the header");
	if (check_header(frame->wire, frame->wire_len, 0x81, line) != len)
		unit_fail(__FILE__, line, "header length is not %zu", len);
	if (memcmp(frame->payload, dumped, len) != 0)
		unit_fail(__FILE__, line, "payload differs from json_dumps");
	if (memcmp(frame->wire + expected_header_len, dumped, len) != 0)
		unit_fail(__FILE__, line, "wire payload differs from json_dumps");
	if (frame->created_us != 1234 || frame->refs != 1 || frame->deflated != NULL || frame->deflate_tried)
		unit_fail(__FILE__, line, "fresh frame fields wrong");
	frame_release(frame);
	free(dumped);
	json_decref(message);
}

static void
plain_frame_headers(void)
{
	/* 0 bytes cannot be: the smallest JSON object is 2 bytes, checked by hand */
	{
		json_t	   *empty = json_pack("{}");
		OutFrame   *frame = frame_from_json(empty, 0);

		REQUIRE(frame != NULL);
		CHECK_EQ_INT(frame->wire_len, 4);
		CHECK_EQ_INT(frame->wire[0], 0x81);
		CHECK_EQ_INT(frame->wire[1], 2);
		CHECK(memcmp(frame->wire + 2, "{}", 2) == 0);
		frame_release(frame);
		json_decref(empty);
	}
	check_plain_frame(8, 2, __LINE__);
	check_plain_frame(125, 2, __LINE__);
	check_plain_frame(126, 4, __LINE__);
	check_plain_frame(127, 4, __LINE__);
	check_plain_frame(65535, 4, __LINE__);
	check_plain_frame(65536, 10, __LINE__);
	check_plain_frame(70000, 10, __LINE__);
}

static void
header_bytes_exact(void)
{
	json_t	   *message;
	OutFrame   *frame;

	message = message_of_length(126);
	frame = frame_from_json(message, 0);
	REQUIRE(frame != NULL);
	CHECK(frame->wire[0] == 0x81 && frame->wire[1] == 126 && frame->wire[2] == 0 && frame->wire[3] == 126);
	frame_release(frame);
	json_decref(message);

	message = message_of_length(65535);
	frame = frame_from_json(message, 0);
	REQUIRE(frame != NULL);
	CHECK(frame->wire[1] == 126 && frame->wire[2] == 0xFF && frame->wire[3] == 0xFF);
	frame_release(frame);
	json_decref(message);

	message = message_of_length(65536);
	frame = frame_from_json(message, 0);
	REQUIRE(frame != NULL);
	{
		static const unsigned char expected[10] = {0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0};

		CHECK(memcmp(frame->wire, expected, 10) == 0);
	}
	frame_release(frame);
	json_decref(message);
}

static void
no_frame_for_what_serialises_to_nothing(void)
{
	/* a bare string is not dumped without JSON_ENCODE_ANY */
	json_t	   *bare = json_string("x");

	CHECK(frame_from_json(bare, 0) == NULL);
	json_decref(bare);
}

static void
type_index_for_metrics(void)
{
	json_t	   *presence = json_pack("{s:s, s:s, s:[]}", "type", "presence", "sessionId", "s1", "events");
	json_t	   *unknown = json_pack("{s:s}", "type", "nonsense");
	json_t	   *untyped = json_pack("{s:i}", "type", 3);
	OutFrame   *a = frame_from_json(presence, 0);
	OutFrame   *b = frame_from_json(unknown, 0);
	OutFrame   *c = frame_from_json(untyped, 0);

	REQUIRE(a && b && c);
	CHECK_EQ_INT(a->type_index, server_message_type_index("presence"));
	CHECK_EQ_INT(b->type_index, -1);
	CHECK_EQ_INT(c->type_index, -1);
	frame_release(a);
	frame_release(b);
	frame_release(c);
	json_decref(presence);
	json_decref(unknown);
	json_decref(untyped);
}

/*
 * Inflates a permessage-deflate payload the way a client without the
 * server's context does: a fresh raw inflater, 00 00 ff ff appended.
 * Returns the inflated bytes (malloc'd) and their length, or NULL.
 */
static unsigned char *
inflate_fresh(const unsigned char *payload, size_t len, size_t *out_len)
{
	unsigned char *in = malloc(len + 4);
	size_t		capacity = 1 << 20;
	unsigned char *out = malloc(capacity);
	z_stream	inflater;
	int			rc;

	memset(&inflater, 0, sizeof(inflater));
	memcpy(in, payload, len);
	memcpy(in + len, "\x00\x00\xff\xff", 4);
	if (inflateInit2(&inflater, -15) != Z_OK)
	{
		free(in);
		free(out);
		return NULL;
	}
	inflater.next_in = in;
	inflater.avail_in = len + 4;
	inflater.next_out = out;
	inflater.avail_out = capacity;
	rc = inflate(&inflater, Z_SYNC_FLUSH);
	*out_len = capacity - inflater.avail_out;
	inflateEnd(&inflater);
	free(in);
	if ((rc != Z_OK && rc != Z_STREAM_END) || inflater.avail_in != 0)
	{
		free(out);
		return NULL;
	}
	return out;
}

/* A 2 KB presence-like message that compresses well. */
static json_t *
repetitive_message(int variant)
{
	json_t	   *events = json_array();

	for (int i = 0; i < 12; i++)
		json_array_append_new(events,
							  json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:I}}", "kind", "cursor", "user",
										"userId", "a11c0000-0000-0000-0000-000000000001",
										"username", "alice", "role", "operator", "status", "online",
										"lastSeen", (json_int_t) 1764526000000 + i + variant));
	return json_pack("{s:s, s:s, s:o}", "type", "presence", "sessionId", "demo", "events", events);
}

/* Checks a deflated twin against its plain frame and returns whether it inflates back. */
static void
check_deflated(OutFrame *frame, int line)
{
	size_t		payload_len,
				inflated_len = 0;
	unsigned char *inflated;
	size_t		header_len;

	if (frame->deflated == NULL)
	{
		unit_fail(__FILE__, line, "no deflated twin for %zu bytes", frame->len);
		return;
	}
	if (frame->deflated_len >= frame->wire_len)
		unit_fail(__FILE__, line, "deflated %zu is not smaller than %zu", frame->deflated_len, frame->wire_len);
	payload_len = check_header(frame->deflated, frame->deflated_len, 0xC1, line);
	header_len = frame->deflated_len - payload_len;
	if (payload_len >= 4 && memcmp(frame->deflated + frame->deflated_len - 4, "\x00\x00\xff\xff", 4) == 0)
		unit_fail(__FILE__, line, "the 00 00 ff ff tail was not removed");
	inflated = inflate_fresh(frame->deflated + header_len, payload_len, &inflated_len);
	if (inflated == NULL)
	{
		unit_fail(__FILE__, line, "the payload does not inflate with a fresh inflater");
		return;
	}
	if (inflated_len != frame->len || memcmp(inflated, frame->payload, frame->len) != 0)
		unit_fail(__FILE__, line, "inflated %zu bytes differ from the %zu bytes of JSON", inflated_len, frame->len);
	free(inflated);
}

static void
deflate_repetitive_message(void)
{
	json_t	   *message = repetitive_message(0);
	char	   *dumped = json_dumps(message, JSON_COMPACT);
	OutFrame   *frame = frame_from_json(message, 0);
	unsigned char *first;

	REQUIRE(frame != NULL);
	CHECK(frame->len >= 1900 && frame->len <= 2400);
	CHECK(strlen(dumped) == frame->len);
	frame_deflate(frame);
	CHECK(frame->deflate_tried);
	REQUIRE(frame->deflated != NULL);
	CHECK_EQ_INT(frame->deflated[0], 0xC1);
	CHECK(frame->deflated_len < frame->wire_len / 2);
	check_deflated(frame, __LINE__);
	/* the plain frame is untouched, and a second call changes nothing */
	CHECK(memcmp(frame->payload, dumped, frame->len) == 0);
	CHECK_EQ_INT(frame->wire[0], 0x81);
	first = frame->deflated;
	frame_deflate(frame);
	CHECK(frame->deflated == first);
	frame_release(frame);
	free(dumped);
	json_decref(message);
}

static void
deflate_large_message_uses_long_header(void)
{
	/* 200 KB of JSON that deflates past 65535 bytes needs random-ish text: use varied numbers */
	json_t	   *numbers = json_array();
	json_t	   *message;
	OutFrame   *frame;
	uint32_t	x = 2463534242u;

	for (int i = 0; i < 20000; i++)
	{
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		json_array_append_new(numbers, json_integer(x));
	}
	message = json_pack("{s:s, s:o}", "type", "broadcast", "payload", numbers);
	frame = frame_from_json(message, 0);
	REQUIRE(frame != NULL);
	CHECK(frame->len > 65536);
	frame_deflate(frame);
	REQUIRE(frame->deflated != NULL);
	CHECK(frame->deflated_len - 10 >= 65536);	/* so the 64-bit length is tested */
	CHECK_EQ_INT(frame->deflated[1], 127);
	check_deflated(frame, __LINE__);
	frame_release(frame);
	json_decref(message);
}

static void
no_twin_when_not_smaller(void)
{
	json_t	   *tiny = json_pack("{s:s}", "type", "ack");
	json_t	   *empty = json_pack("{}");
	OutFrame   *a = frame_from_json(tiny, 0);
	OutFrame   *b = frame_from_json(empty, 0);

	REQUIRE(a && b);
	frame_deflate(a);
	frame_deflate(b);
	CHECK(a->deflate_tried && a->deflated == NULL);
	CHECK(b->deflate_tried && b->deflated == NULL);
	frame_release(a);
	frame_release(b);
	json_decref(tiny);
	json_decref(empty);
}

static void
no_twin_for_random_message(void)
{
	/*
	 * 100 printable ASCII characters from a fixed-seed generator: no
	 * repeats to find, and too short for Huffman codes to pay for their
	 * table.  (JSON text is never wholly incompressible: it uses fewer
	 * than 256 byte values, so random text of some 150 bytes and more
	 * does shrink a little, and gets a twin.)
	 */
	char		text[101];
	uint32_t	x = 88172645u;
	json_t	   *message;
	OutFrame   *frame;

	for (size_t i = 0; i < sizeof(text) - 1; i++)
	{
		char		c;

		do
		{
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			c = (char) (' ' + x % 95);
		} while (c == '"' || c == '\\');
		text[i] = c;
	}
	text[sizeof(text) - 1] = '\0';
	message = json_pack("{s:s}", "p", text);
	frame = frame_from_json(message, 0);
	REQUIRE(frame != NULL);
	frame_deflate(frame);
	CHECK(frame->deflate_tried);
	CHECK(frame->deflated == NULL);
	frame_release(frame);
	json_decref(message);
}

static void
no_context_takeover_between_frames(void)
{
	/* the same message twice: with context kept, the second would be a back-reference */
	json_t	   *one = repetitive_message(0);
	json_t	   *same = repetitive_message(0);
	json_t	   *other = repetitive_message(7);
	OutFrame   *a = frame_from_json(one, 0);
	OutFrame   *b = frame_from_json(same, 0);
	OutFrame   *c = frame_from_json(other, 0);

	REQUIRE(a && b && c);
	frame_deflate(a);
	frame_deflate(b);
	frame_deflate(c);
	check_deflated(a, __LINE__);
	check_deflated(b, __LINE__);
	check_deflated(c, __LINE__);
	REQUIRE(a->deflated && b->deflated);
	CHECK_EQ_INT(b->deflated_len, a->deflated_len);
	CHECK(memcmp(a->deflated, b->deflated, a->deflated_len) == 0);
	frame_release(a);
	frame_release(b);
	frame_release(c);
	json_decref(one);
	json_decref(same);
	json_decref(other);
}

static void
deflater_restarts_after_end(void)
{
	json_t	   *message = repetitive_message(1);
	OutFrame   *a = frame_from_json(message, 0);
	OutFrame   *b = frame_from_json(message, 0);

	REQUIRE(a && b);
	frame_deflate(a);
	frame_deflater_end();
	frame_deflater_end();		/* twice is harmless */
	frame_deflate(b);			/* a new deflater is made */
	check_deflated(a, __LINE__);
	check_deflated(b, __LINE__);
	frame_release(a);
	frame_release(b);
	json_decref(message);
}

static void
refcount_hold_and_release(void)
{
	json_t	   *message = repetitive_message(2);
	OutFrame   *frame = frame_from_json(message, 0);

	REQUIRE(frame != NULL);
	frame_deflate(frame);
	CHECK(frame->deflated != NULL);
	frame_hold(frame);
	CHECK_EQ_INT(frame->refs, 2);
	frame_release(frame);
	CHECK_EQ_INT(frame->refs, 1);
	CHECK_EQ_INT(frame->wire[0], 0x81);	/* still alive after the first release */
	frame_release(frame);		/* frees the frame and its twin: LeakSanitizer checks */
	json_decref(message);
}

int
main(int argc, char **argv)
{
	int			status;

	UNIT_MAIN_BEGIN(argc, argv);
	UNIT_RUN(plain_frame_headers);
	UNIT_RUN(header_bytes_exact);
	UNIT_RUN(no_frame_for_what_serialises_to_nothing);
	UNIT_RUN(type_index_for_metrics);
	UNIT_RUN(deflate_repetitive_message);
	UNIT_RUN(deflate_large_message_uses_long_header);
	UNIT_RUN(no_twin_when_not_smaller);
	UNIT_RUN(no_twin_for_random_message);
	UNIT_RUN(no_context_takeover_between_frames);
	UNIT_RUN(deflater_restarts_after_end);
	UNIT_RUN(refcount_hold_and_release);
	status = unit_main_end("test_frame");
	frame_deflater_end();
	return status;
}
