/*-------------------------------------------------------------------------
 * growable.h
 *	  The one way a malloc'd array of ours grows: doubling, from a
 *	  minimum, and unchanged when memory runs out.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_GROWABLE_H
#define PRESENCE_GROWABLE_H

#include <stdbool.h>
#include <stddef.h>

extern int	growable_capacity(int capacity, int minimum);
extern void *growable_reserve(void *items, int *capacity, int count, size_t item_size, int minimum);

#endif							/* PRESENCE_GROWABLE_H */
