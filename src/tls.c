/*-------------------------------------------------------------------------
 * tls.c
 *	  The ws workers' TLS: the certificate and key of presence.ssl_cert_file
 *	  and presence.ssl_key_file, and the client certificates a
 *	  presence.ssl_ca_file asks for.
 *
 * libwebsockets builds the vhost's SSL_CTX from the files when the worker
 * starts and hands it over once (LOAD_EXTRA_SERVER_VERIFY_CERTS).  On
 * SIGHUP the files are read again, checked (the key must match the
 * certificate), and only then put into that SSL_CTX together, so a
 * renewed certificate (every 60 to 90 days with the usual CAs) needs a
 * reload, not a restart.  OpenSSL copies a context's certificate into
 * each connection when the connection is made, so connections that are
 * open keep theirs and new ones get the new one.  Files that cannot be
 * used leave everything as it was, and the log says why.  Turning TLS on
 * or off, or client certificates on or off, changes the listening
 * vhost: that needs a restart.
 *
 * tls_context_created runs inside an lws callback and raises nothing;
 * tls_reload runs in the main loop.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls.h"

static SSL_CTX *server_context;
/* bumped when the client CAs change, so older sessions cannot be resumed */
static uint32 generation;
/* whether the vhost was made asking for client certificates */
static bool verifying_clients;

/* Whether the worker serves wss:// (the certificate file is set). */
bool
tls_configured(void)
{
	return presence_ssl_cert_file && presence_ssl_cert_file[0];
}

void
tls_context_created(void *ssl_ctx)
{
	server_context = ssl_ctx;
	verifying_clients = presence_ssl_ca_file && presence_ssl_ca_file[0];
}

/*
 * The oldest OpenSSL error, for the log ("unknown" when there is none);
 * the audit signing key's errors are worded with it too.
 */
const char *
tls_openssl_problem(void)
{
	static char text[256];
	unsigned long error = ERR_get_error();

	ERR_clear_error();
	if (error == 0)
		return "unknown error";
	ERR_error_string_n(error, text, sizeof(text));
	return text;
}

/* The certificate file: the certificate, then the chain of intermediates. */
static X509 *
read_certificates(const char *path, STACK_OF(X509) **chain)
{
	BIO		   *file = BIO_new_file(path, "r");
	X509	   *certificate;
	X509	   *next;

	*chain = NULL;
	if (file == NULL)
		return NULL;
	certificate = PEM_read_bio_X509_AUX(file, NULL, NULL, NULL);
	if (certificate)
		*chain = sk_X509_new_null();
	while (certificate && *chain && (next = PEM_read_bio_X509(file, NULL, NULL, NULL)) != NULL)
		sk_X509_push(*chain, next);
	/* the end of the file is the one error expected */
	ERR_clear_error();
	BIO_free(file);
	if (certificate && *chain == NULL)
	{
		X509_free(certificate);
		certificate = NULL;
	}
	return certificate;
}

/* An encrypted key is refused, never asked for on the postmaster's terminal. */
static int
no_passphrase(char *buffer, int size, int rwflag, void *arg)
{
	return 0;
}

/* A PEM private key from bio, or NULL; the audit signing key is read so too. */
EVP_PKEY *
tls_read_private_key(BIO *bio)
{
	return PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
}

static EVP_PKEY *
read_key(const char *path)
{
	BIO		   *file = BIO_new_file(path, "r");
	EVP_PKEY   *key;

	if (file == NULL)
		return NULL;
	key = tls_read_private_key(file);
	BIO_free(file);
	return key;
}

/* Replaces the CAs client certificates are checked against. */
static bool
reload_client_cas(void)
{
	X509_STORE *store = X509_STORE_new();
	STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(presence_ssl_ca_file);

	if (store == NULL || names == NULL || X509_STORE_load_file(store, presence_ssl_ca_file) != 1)
	{
		ereport(WARNING,
				(errmsg("presence: could not reload presence.ssl_ca_file \"%s\": %s; keeping the current CAs",
						presence_ssl_ca_file, tls_openssl_problem())));
		X509_STORE_free(store);
		if (names)
			sk_X509_NAME_pop_free(names, X509_NAME_free);
		return false;
	}
	SSL_CTX_set_cert_store(server_context, store);
	SSL_CTX_set_client_CA_list(server_context, names);

	/*
	 * A client whose certificate the old CAs accepted could otherwise
	 * come back with a resumed session, never checked again: a new
	 * session id context makes every ticket and cached session of before
	 * unusable.
	 */
	generation++;
	SSL_CTX_set_session_id_context(server_context, (const unsigned char *) &generation, sizeof(generation));
	SSL_CTX_flush_sessions(server_context, 0);
	return true;
}

/*
 * After SIGHUP: the certificate, its key and chain, and the client CAs,
 * read again and put in place together when they are usable.
 */
void
tls_reload(void)
{
	STACK_OF(X509) *chain = NULL;
	X509	   *certificate;
	EVP_PKEY   *key;
	X509	   *current;

	if (server_context == NULL)
	{
		if (tls_configured())
			ereport(LOG, (errmsg("presence: presence.ssl_cert_file takes effect at the next restart: this worker serves ws://")));
		return;
	}
	if (!tls_configured())
	{
		ereport(LOG, (errmsg("presence: turning TLS off takes a restart; serving wss:// with the current certificate")));
		return;
	}
	certificate = read_certificates(presence_ssl_cert_file, &chain);
	if (certificate == NULL)
	{
		ereport(WARNING,
				(errmsg("presence: could not read presence.ssl_cert_file \"%s\": %s; keeping the current certificate",
						presence_ssl_cert_file, tls_openssl_problem())));
		return;
	}
	key = read_key(presence_ssl_key_file);
	if (key && SSL_CTX_get0_privatekey(server_context) &&
		EVP_PKEY_get_base_id(key) != EVP_PKEY_get_base_id(SSL_CTX_get0_privatekey(server_context)))
	{
		/* OpenSSL keeps one certificate per key type: the old one would stay in service */
		ereport(WARNING,
				(errmsg("presence: presence.ssl_key_file \"%s\" is of another key type than the current key; "
						"changing it takes a restart, keeping the current certificate", presence_ssl_key_file)));
		EVP_PKEY_free(key);
		X509_free(certificate);
		sk_X509_pop_free(chain, X509_free);
		return;
	}
	if (key == NULL || X509_check_private_key(certificate, key) != 1)
	{
		ereport(WARNING,
				(errmsg("presence: %s presence.ssl_key_file \"%s\": %s; keeping the current certificate",
						key ? "the certificate does not match" : "could not read", presence_ssl_key_file,
						tls_openssl_problem())));
		EVP_PKEY_free(key);
		X509_free(certificate);
		sk_X509_pop_free(chain, X509_free);
		return;
	}
	current = SSL_CTX_get0_certificate(server_context);
	if (current == NULL || X509_cmp(current, certificate) != 0)
	{
		if (SSL_CTX_use_cert_and_key(server_context, certificate, key, chain, 1) == 1)
		{
			char		subject[256];
			char		expires[64] = "";
			BIO		   *text = BIO_new(BIO_s_mem());
			int			expires_len;

			X509_NAME_oneline(X509_get_subject_name(certificate), subject, sizeof(subject));
			if (text && ASN1_TIME_print(text, X509_get0_notAfter(certificate)) &&
				(expires_len = BIO_read(text, expires, sizeof(expires) - 1)) > 0)
				expires[expires_len] = '\0';
			BIO_free(text);
			ereport(LOG, (errmsg("presence: new connections get the TLS certificate %s, valid until %s",
								 subject, expires)));
		}
		else
			ereport(WARNING,
					(errmsg("presence: could not use the TLS certificate of \"%s\": %s; keeping the current one",
							presence_ssl_cert_file, tls_openssl_problem())));
	}
	EVP_PKEY_free(key);
	X509_free(certificate);
	sk_X509_pop_free(chain, X509_free);

	/* the CAs after the certificate, so a refused certificate changes nothing */
	if (verifying_clients != (presence_ssl_ca_file && presence_ssl_ca_file[0]))
		ereport(LOG, (errmsg("presence: asking for client certificates, or no longer, takes a restart")));
	else if (verifying_clients)
		(void) reload_client_cas();
}
