/* http_tls.h - TLS of the metrics endpoint: what libmicrohttpd serves HTTPS
 * with (GnuTLS), checked before it is used.
 *
 * The certificate and the key of "metrics.tls_certificate" and
 * "metrics.tls_key" are checked when the configuration is loaded (each
 * load and reload reads the files again), through GnuTLS as libmicrohttpd
 * will use them (gnutls_certificate_set_x509_key_mem2), so that a bad file
 * or a key that does not match refuses the configuration before anything
 * is swapped. */
#ifndef ECHOD_HTTP_TLS_H
#define ECHOD_HTTP_TLS_H

#include <stdbool.h>
#include <stddef.h>

/* Whether this libmicrohttpd serves HTTPS (MHD_FEATURE_TLS). */
bool http_tls_supported(void);

/* What is wrong with a certificate (chain) and key pair, both PEM. */
enum http_tls_fault {
	HTTP_TLS_OK = 0,
	HTTP_TLS_BAD_CERT,              /* no X.509 certificate in PEM */
	HTTP_TLS_BAD_KEY,               /* no unencrypted private key in PEM */
	HTTP_TLS_MISMATCH,              /* the key is not the first certificate's */
};

/* Check cert and key (len bytes each, NUL-terminated); a fault with why
 * (a phrase, GnuTLS's words at the end). */
enum http_tls_fault http_tls_check(const char *cert, size_t cert_len, const char *key,
				   size_t key_len, char *why, size_t size);

/* "subject ..., serial ..., valid until ..." of the first certificate into
 * buf; *expired set if it is outside its validity now.  0 or -1. */
int http_tls_describe(const char *cert, size_t cert_len, char *buf, size_t size,
		      bool *expired);

#endif
