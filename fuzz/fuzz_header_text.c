/*-------------------------------------------------------------------------
 * fuzz_header_text.c
 *	  libFuzzer target: an HTTP header value (User-Agent) through
 *	  protocol_clean_text (src/protocol.c), as ws_server.c's
 *	  copy_header_text stores it for the activity log.
 *
 * The first two input bytes give the size of the output buffer (1 to
 * 1024), allocated to exactly that size so ASan sees any overrun; the
 * rest is the header value.  The text kept must fit, be valid UTF-8
 * without control characters, and be the input itself when the input was
 * already such text and fitted.
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"
#include "protocol.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t		out_size;
	char	   *out;
	json_t	   *as_json;
	size_t		len;
	bool		clean_input;

	if (size < 2)
		return 0;
	out_size = ((size_t) data[0] << 8 | data[1]) % 1024 + 1;
	out = malloc(out_size);
	if (out == NULL)
		abort();
	memset(out, 'x', out_size);
	protocol_clean_text((const char *) data + 2, size - 2, out, out_size);
	len = strlen(out);			/* ASan: the terminator is inside out */
	FUZZ_CHECK(len < out_size);
	for (size_t i = 0; i < len; i++)
		FUZZ_CHECK((unsigned char) out[i] >= 0x20 && out[i] != 0x7f);
	as_json = json_string(out);
	FUZZ_CHECK(as_json != NULL);	/* valid UTF-8 */
	json_decref(as_json);

	/* text that was clean and fitted comes back unchanged */
	clean_input = size - 2 < out_size && memchr(data + 2, '\0', size - 2) == NULL;
	for (size_t i = 2; clean_input && i < size; i++)
		clean_input = data[i] >= 0x20 && data[i] != 0x7f;
	if (clean_input)
	{
		char	   *text = fuzz_cstring(data + 2, size - 2);

		as_json = json_string(text);
		if (as_json != NULL)
			FUZZ_CHECK(strcmp(out, text) == 0);
		json_decref(as_json);
		free(text);
	}
	free(out);
	return 0;
}
