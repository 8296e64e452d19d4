/*-------------------------------------------------------------------------
 * admission.h
 *	  Bounds on the sockets of a ws worker that have not authenticated.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_ADMISSION_H
#define PRESENCE_ADMISSION_H

typedef struct Newcomer Newcomer;

/* Closes a newcomer's socket soon; the transport then calls admission_done. */
typedef void (*NewcomerEvict) (void *socket);

extern void admission_init(NewcomerEvict evict);
extern Newcomer *admission_admit(const char *address, bool from_proxy, int64 now_ms);
extern void admission_bind(Newcomer *newcomer, void *socket);
extern void admission_upgraded(Newcomer *newcomer);
extern void admission_done(Newcomer *newcomer);
extern void admission_sweep(int64 now_ms);

#endif							/* PRESENCE_ADMISSION_H */
