/*-------------------------------------------------------------------------
 * growable.c
 *	  Growing malloc'd arrays (growable.h).  Plain C: it serves code that
 *	  runs inside library callbacks, where no PostgreSQL error may be
 *	  raised, so running out of memory is the caller's to answer.
 *-------------------------------------------------------------------------
 */
#include <limits.h>
#include <stdlib.h>

#include "growable.h"

/* The next capacity of an array that is full: twice as many, at least minimum. */
int
growable_capacity(int capacity, int minimum)
{
	if (capacity < minimum)
		return minimum;
	return capacity > INT_MAX / 2 ? INT_MAX : capacity * 2;
}

/*
 * Makes room for one more item in items, an array of count items of
 * item_size bytes with room for *capacity: returns the array, moved when
 * it had to grow, or NULL when memory ran out (items is then as it was).
 */
void *
growable_reserve(void *items, int *capacity, int count, size_t item_size, int minimum)
{
	int			grown_capacity;
	void	   *grown;

	if (count < *capacity)
		return items;
	grown_capacity = growable_capacity(*capacity, minimum);
	if (grown_capacity <= count || (grown = realloc(items, (size_t) grown_capacity * item_size)) == NULL)
		return NULL;
	*capacity = grown_capacity;
	return grown;
}
