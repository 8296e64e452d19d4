/*-------------------------------------------------------------------------
 * frame.c
 *	  Server messages as whole WebSocket frames: serialised once with room
 *	  for the header in front, shared (reference counted) by every
 *	  connection they go to, and compressed at most once.
 *
 * Plain C on malloc, zlib and jansson: it runs inside libwebsockets
 * callbacks and in the unit tests alike, and raises no PostgreSQL error.
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "frame.h"
#include "protocol.h"

#define FRAME_FIN 0x80
#define FRAME_RSV1 0x40				/* permessage-deflate: a compressed message */
#define FRAME_OPCODE_TEXT 0x1
#define FRAME_OPCODE_PING 0x9
/* How the worker's one deflater compresses server messages. */
#define DEFLATE_LEVEL 6
#define DEFLATE_WINDOW_BITS 15
#define DEFLATE_MEM_LEVEL 8

static z_stream frame_deflater;
static bool frame_deflater_ready;

/*
 * Writes the header of an unmasked, final text frame into the bytes just
 * before payload and returns its length.  RSV1 marks a permessage-deflate
 * payload (RFC 7692).
 */
static size_t
frame_header(unsigned char *payload, size_t len, bool compressed)
{
	unsigned char *header;
	size_t		header_len = len < 126 ? 2 : len < 65536 ? 4 : 10;

	header = payload - header_len;
	header[0] = FRAME_FIN | (compressed ? FRAME_RSV1 : 0) | FRAME_OPCODE_TEXT;
	if (len < 126)
		header[1] = (unsigned char) len;
	else if (len < 65536)
	{
		header[1] = 126;
		header[2] = (unsigned char) (len >> 8);
		header[3] = (unsigned char) len;
	}
	else
	{
		header[1] = 127;
		for (int i = 0; i < 8; i++)
			header[2 + i] = (unsigned char) ((uint64_t) len >> (56 - 8 * i));
	}
	return header_len;
}

/* A frame with room for a payload of len bytes, for the caller to fill and frame_seal. */
static OutFrame *
frame_alloc(size_t len, int64_t created_us, int type_index)
{
	OutFrame   *frame = malloc(offsetof(OutFrame, buffer) + FRAME_HEADROOM + len);

	if (frame == NULL)
		return NULL;
	frame->refs = 1;
	frame->created_us = created_us;
	frame->len = len;
	frame->payload = frame->buffer + FRAME_HEADROOM;
	frame->type_index = type_index;
	frame->deflate_tried = false;
	frame->deflated = NULL;
	return frame;
}

/* Writes the header in front of the filled payload. */
static OutFrame *
frame_seal(OutFrame *frame)
{
	frame->wire_len = frame_header(frame->payload, frame->len, false) + frame->len;
	frame->wire = frame->payload + frame->len - frame->wire_len;
	return frame;
}

/*
 * Serialises a server message once, with FRAME_HEADROOM bytes in front
 * for the header, so every connection it goes to shares the same bytes.
 */
OutFrame *
frame_from_json(json_t *message, int64_t created_us)
{
	size_t		len = json_dumpb(message, NULL, 0, JSON_COMPACT);
	json_t	   *type = json_object_get(message, "type");
	OutFrame   *frame;

	if (len == 0 ||
		(frame = frame_alloc(len, created_us,
							 json_is_string(type) ? server_message_type_index(json_string_value(type)) : -1)) == NULL)
		return NULL;
	json_dumpb(message, (char *) frame->payload, len, JSON_COMPACT);
	return frame_seal(frame);
}

/* The same for a message already written as JSON text of type_index's type. */
OutFrame *
frame_from_text(const char *text, size_t len, int64_t created_us, int type_index)
{
	OutFrame   *frame = len > 0 ? frame_alloc(len, created_us, type_index) : NULL;

	if (frame == NULL)
		return NULL;
	memcpy(frame->payload, text, len);
	return frame_seal(frame);
}

/*
 * The one ping frame every connection is sent (keepalive.c), made on
 * first use and held for the worker's lifetime; NULL when out of memory.
 * It carries a byte because lws 4.1 reports no pong without payload, and
 * the pong echoes it.
 */
OutFrame *
frame_ping(void)
{
	static OutFrame *ping;

	if (ping == NULL && (ping = calloc(1, offsetof(OutFrame, buffer) + FRAME_HEADROOM + 1)) != NULL)
	{
		ping->refs = 1;
		ping->type_index = -1;
		ping->len = 1;
		ping->payload = ping->buffer + FRAME_HEADROOM;
		ping->payload[0] = 'k';
		ping->wire = ping->payload - 2;
		ping->wire[0] = FRAME_FIN | FRAME_OPCODE_PING;
		ping->wire[1] = 1;
		ping->wire_len = 3;
		/* never compressed: control frames are not (RFC 7692 6.1) */
		ping->deflate_tried = true;
	}
	return ping;
}

void
frame_hold(OutFrame *frame)
{
	frame->refs++;
}

void
frame_release(OutFrame *frame)
{
	if (--frame->refs > 0)
		return;
	free(frame->deflated);
	free(frame);
}

/*
 * Makes the frame's compressed twin once, for every connection that
 * negotiated permessage-deflate: the worker's one deflater starts afresh
 * for each message (a server may always do without context takeover, so
 * the bytes suit every such connection, whatever it offered), flushes
 * with Z_SYNC_FLUSH and drops the 00 00 ff ff that ends it (RFC 7692
 * 7.2.1).  Left NULL when it would not be smaller or zlib fails: then the
 * plain frame goes, which RFC 7692 allows for any message.
 */
void
frame_deflate(OutFrame *frame)
{
	unsigned char *out;
	size_t		capacity;
	size_t		len;

	if (frame->deflate_tried)
		return;
	frame->deflate_tried = true;
	if (!frame_deflater_ready)
	{
		if (deflateInit2(&frame_deflater, DEFLATE_LEVEL, Z_DEFLATED, -DEFLATE_WINDOW_BITS,
						 DEFLATE_MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK)
			return;
		frame_deflater_ready = true;
	}
	/* a sync flush may add a few bytes to what deflateBound counts */
	capacity = deflateBound(&frame_deflater, frame->len) + 16;
	out = malloc(FRAME_HEADER_MAX + capacity);
	if (out == NULL)
		return;
	frame_deflater.next_in = frame->payload;
	frame_deflater.avail_in = frame->len;
	frame_deflater.next_out = out + FRAME_HEADER_MAX;
	frame_deflater.avail_out = capacity;
	if (deflate(&frame_deflater, Z_SYNC_FLUSH) != Z_OK || frame_deflater.avail_in != 0 ||
		frame_deflater.avail_out == 0)
	{
		deflateReset(&frame_deflater);
		free(out);
		return;
	}
	len = capacity - frame_deflater.avail_out - 4;
	deflateReset(&frame_deflater);
	if (len >= frame->len)
	{
		free(out);
		return;
	}
	frame->deflated_len = frame_header(out + FRAME_HEADER_MAX, len, true) + len;
	/* the frame starts where the block does, so frame_release can free it */
	memmove(out, out + FRAME_HEADER_MAX + len - frame->deflated_len, frame->deflated_len);
	frame->deflated = out;
}

void
frame_deflater_end(void)
{
	if (frame_deflater_ready)
		deflateEnd(&frame_deflater);
	frame_deflater_ready = false;
}
