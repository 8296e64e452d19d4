/*-------------------------------------------------------------------------
 * fuzz_common.h
 *	  Helpers shared by the fuzz targets: a NUL-terminated copy of the
 *	  input, and the checks that turn a broken invariant into a finding.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_FUZZ_COMMON_H
#define PRESENCE_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* A broken invariant is a finding: report it and abort, libFuzzer saves the input. */
#define FUZZ_CHECK(condition) \
	do { \
		if (!(condition)) \
		{ \
			fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #condition); \
			abort(); \
		} \
	} while (0)

/* The input as a C string in a buffer of exactly size + 1 bytes (ASan sees any overread). */
static inline char *
fuzz_cstring(const uint8_t *data, size_t size)
{
	char	   *text = malloc(size + 1);

	if (text == NULL)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	return text;
}

/* Whether text of at most max_len bytes survives being serialised as a JSON string. */
static inline int
fuzz_serialisable(const char *text, size_t max_len)
{
	json_t	   *value;

	if (text == NULL)
		return 1;
	if (strlen(text) > max_len)
		return 0;
	value = json_string(text);	/* NULL unless valid UTF-8 */
	if (value == NULL)
		return 0;
	json_decref(value);
	return 1;
}

#endif							/* PRESENCE_FUZZ_COMMON_H */
