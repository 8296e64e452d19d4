/*-------------------------------------------------------------------------
 * tls.h
 *	  wss:// for the ws workers: the server certificate, renewed without a
 *	  restart, and optional client certificates.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_TLS_H
#define PRESENCE_TLS_H

#include <stdbool.h>

#include <openssl/bio.h>
#include <openssl/evp.h>

extern bool tls_configured(void);
extern void tls_context_created(void *ssl_ctx);
extern void tls_reload(void);
extern const char *tls_openssl_problem(void);
extern EVP_PKEY *tls_read_private_key(BIO *bio);

#endif							/* PRESENCE_TLS_H */
