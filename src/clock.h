/*-------------------------------------------------------------------------
 * clock.h
 *	  Wall-clock time as every part of presence reads it.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_CLOCK_H
#define PRESENCE_CLOCK_H

extern int64 presence_now_us(void);
extern int64 presence_now_ms(void);

#endif							/* PRESENCE_CLOCK_H */
