/* http_tls.c - TLS of the metrics endpoint: the certificate and key checked
 * with GnuTLS as libmicrohttpd will load them; see http_tls.h */
#include "autoconfig.h"

#include "http_tls.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

bool http_tls_supported(void)
{
	return MHD_is_feature_supported(MHD_FEATURE_TLS) == MHD_YES;
}

static gnutls_datum_t datum(const char *p, size_t len)
{
	gnutls_datum_t d = { .data = (unsigned char *)(uintptr_t)p, .size = (unsigned)len };

	return d;
}

enum http_tls_fault http_tls_check(const char *cert, size_t cert_len, const char *key,
				   size_t key_len, char *why, size_t size)
{
	gnutls_datum_t c = datum(cert, cert_len), k = datum(key, key_len);
	gnutls_certificate_credentials_t cred = NULL;
	gnutls_x509_crt_t *crts = NULL;
	gnutls_x509_privkey_t pk = NULL;
	unsigned n = 0;
	int r;

	why[0] = '\0';
	r = gnutls_x509_crt_list_import2(&crts, &n, &c, GNUTLS_X509_FMT_PEM, 0);
	if (r < 0 || n == 0) {
		snprintf(why, size, "no PEM X.509 certificate: %s",
			 r < 0 ? gnutls_strerror(r) : "none in the file");
		return HTTP_TLS_BAD_CERT;
	}
	for (unsigned i = 0; i < n; i++)
		gnutls_x509_crt_deinit(crts[i]);
	gnutls_free(crts);
	r = gnutls_x509_privkey_init(&pk);
	if (r >= 0)
		r = gnutls_x509_privkey_import2(pk, &k, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (pk)
		gnutls_x509_privkey_deinit(pk);
	if (r < 0) {
		snprintf(why, size, "no unencrypted PEM private key: %s", gnutls_strerror(r));
		return HTTP_TLS_BAD_KEY;
	}
	r = gnutls_certificate_allocate_credentials(&cred);
	if (r >= 0)
		r = gnutls_certificate_set_x509_key_mem2(cred, &c, &k, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (cred)
		gnutls_certificate_free_credentials(cred);
	if (r == GNUTLS_E_CERTIFICATE_KEY_MISMATCH) {
		snprintf(why, size, "the key does not match the certificate");
		return HTTP_TLS_MISMATCH;
	}
	if (r < 0) {
		snprintf(why, size, "GnuTLS refuses the pair: %s", gnutls_strerror(r));
		return HTTP_TLS_MISMATCH;
	}
	return HTTP_TLS_OK;
}

int http_tls_describe(const char *cert, size_t cert_len, char *buf, size_t size,
		      bool *expired)
{
	gnutls_datum_t c = datum(cert, cert_len), dn = { NULL, 0 };
	gnutls_x509_crt_t crt;
	unsigned char serial[64];
	char hex[2 * sizeof(serial) + 1], until[32];
	size_t slen = sizeof(serial);
	time_t t0, t1, now = time(NULL);
	struct tm tm;

	*expired = false;
	if (gnutls_x509_crt_init(&crt) < 0)
		return -1;
	if (gnutls_x509_crt_import(crt, &c, GNUTLS_X509_FMT_PEM) < 0 ||
	    gnutls_x509_crt_get_serial(crt, serial, &slen) < 0) {
		gnutls_x509_crt_deinit(crt);
		return -1;
	}
	for (size_t i = 0; i < slen; i++)
		snprintf(hex + 2 * i, 3, "%02X", serial[i]);
	t0 = gnutls_x509_crt_get_activation_time(crt);
	t1 = gnutls_x509_crt_get_expiration_time(crt);
	*expired = (t0 != (time_t)-1 && now < t0) || (t1 != (time_t)-1 && now > t1);
	if (t1 == (time_t)-1 || !gmtime_r(&t1, &tm) ||
	    !strftime(until, sizeof(until), "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(until, sizeof(until), "unknown");
	gnutls_x509_crt_get_dn3(crt, &dn, 0);
	snprintf(buf, size, "subject %s, serial %s, valid until %s",
		 dn.data ? (const char *)dn.data : "unknown", hex, until);
	gnutls_free(dn.data);
	gnutls_x509_crt_deinit(crt);
	return 0;
}
