/*-------------------------------------------------------------------------
 * tls.h
 *	  wss:// for the ws workers: the server certificate, renewed without a
 *	  restart, and optional client certificates.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_TLS_H
#define PRESENCE_TLS_H

#include <stdbool.h>

extern bool tls_configured(void);
extern void tls_context_created(void *ssl_ctx);
extern void tls_reload(void);

#endif							/* PRESENCE_TLS_H */
