/*-------------------------------------------------------------------------
 * frame.h
 *	  A server message as WebSocket frames, serialised once and shared by
 *	  every connection it goes to.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_FRAME_H
#define PRESENCE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/*
 * Headroom before the payload, where the frame header is written: the
 * LWS_PRE of libwebsockets 4.1, which lws_write() requires before any
 * buffer it is given (ws_server.c checks the two agree).
 */
#define FRAME_HEADROOM 16
/* The longest header of an unmasked frame. */
#define FRAME_HEADER_MAX 10

/*
 * Whole frames: plain (the header in the headroom before payload) and,
 * made when a connection first needs it, compressed (RFC 7692).
 */
typedef struct OutFrame
{
	int			refs;
	int64_t		created_us;		/* when its oldest event happened; 0 for replies */
	int			type_index;		/* server_message_types[] index, for /metrics */
	size_t		len;
	unsigned char *payload;		/* points FRAME_HEADROOM bytes into buffer */
	unsigned char *wire;		/* the plain frame: header, then payload */
	size_t		wire_len;
	bool		deflate_tried;	/* deflated is made, or not worth making */
	unsigned char *deflated;	/* the permessage-deflate frame, or NULL */
	size_t		deflated_len;
	unsigned char buffer[];
} OutFrame;

extern OutFrame *frame_from_json(json_t *message, int64_t created_us);
extern OutFrame *frame_from_text(const char *text, size_t len, int64_t created_us, int type_index);
extern OutFrame *frame_ping(void);
extern void frame_hold(OutFrame *frame);
extern void frame_release(OutFrame *frame);
extern void frame_deflate(OutFrame *frame);
extern void frame_deflater_end(void);

#endif							/* PRESENCE_FRAME_H */
