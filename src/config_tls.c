/* config_tls.c - the types of the metrics endpoint's TLS and basic auth
 * settings, and their check across settings:
 *   schema_pem_file    "metrics.tls_certificate", "metrics.tls_key": "" or
 *                      an absolute path; the file (regular, 1..CONFIG_PEM_MAX
 *                      bytes) is read into struct config_pem at every load,
 *                      so a reload sees a rotated certificate and the diff
 *                      names it; errors "PEMFILE: setting: message"
 *   schema_basic_auth  "metrics.basic_auth": "USER:BCRYPT-HASH" entries
 *                      (metrics_auth.h), no user twice; errors
 *                      "FILE:LINE: message"
 *   schema_check_tls() both files or neither, libmicrohttpd built with TLS,
 *                      the certificate and key as GnuTLS loads them
 *                      (http_tls.h): a bad pair refuses the configuration
 *                      before anything is swapped. */
#include "autoconfig.h"

#include "config.h"
#include "config_scan.h"
#include "config_schema.h"
#include "config_where.h"
#include "http_tls.h"
#include "metrics_auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PEM(cfg, st) ((struct config_pem *)((char *)(cfg) + (st)->offset))
#define CPEM(cfg, st) ((const struct config_pem *)((const char *)(cfg) + (st)->offset))
#define CREDS(cfg, st) ((struct config_cred *)((char *)(cfg) + (st)->offset))
#define CCREDS(cfg, st) ((const struct config_cred *)((const char *)(cfg) + (st)->offset))

/* s as a libconfig string literal ("" around, \ and " escaped) into buf. */
static size_t quote(char *buf, size_t size, const char *s)
{
	size_t len = 0;

	if (size < 3)
		return 0;
	buf[len++] = '"';
	for (; *s && len + 3 < size; s++) {
		if (*s == '"' || *s == '\\')
			buf[len++] = '\\';
		buf[len++] = *s;
	}
	buf[len++] = '"';
	buf[len] = '\0';
	return len;
}

/* ---- PEM files ---- */

/* Read path into pem: 0, or -1 with why. */
static int pem_read(const char *path, struct config_pem *pem, char *why, size_t size)
{
	struct stat st;
	ssize_t n;
	size_t got = 0;
	int fd;

	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		snprintf(why, size, "cannot open: %s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, size, "not a regular file");
		close(fd);
		return -1;
	}
	/* one byte more than fits: a file too large is an error, not cut */
	while (got <= CONFIG_PEM_MAX) {
		n = read(fd, pem->data + got, CONFIG_PEM_MAX + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(why, size, "read: %s", strerror(errno));
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got > CONFIG_PEM_MAX) {
		snprintf(why, size, "larger than %d bytes", CONFIG_PEM_MAX);
		return -1;
	}
	if (got == 0) {
		snprintf(why, size, "empty file");
		return -1;
	}
	pem->data[got] = '\0';
	pem->len = (uint32_t)got;
	return 0;
}

static void pem_parse(struct scan *sc, const config_setting_t *s, const struct schema_setting *st,
		      struct echod_config *cfg)
{
	char shown[SCAN_SHOWN_SIZE], why[256];
	struct config_pem *pem = PEM(cfg, st);
	const char *path;

	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		where_error(sc, s, "%s: expected a string, got %s", st->name, schema_type_name(s));
		return;
	}
	path = config_setting_get_string(s);
	memset(pem, 0, sizeof(*pem));
	if (!path[0])
		return;         /* "": none */
	if (path[0] != '/' || strlen(path) >= CONFIG_PATH_MAX) {
		where_error(sc, s, "%s: '%s' is not an absolute path (below %d bytes)", st->name,
			    SCAN_PRINTABLE(shown, path), CONFIG_PATH_MAX);
		return;
	}
	for (const char *p = path; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			where_error(sc, s, "%s: control character in the path '%s'", st->name,
				    SCAN_PRINTABLE(shown, path));
			return;
		}
	}
	strcpy(pem->path, path);
	if (pem_read(path, pem, why, sizeof(why)) < 0) {
		config_error(sc->errs, "%s: %s: %s", SCAN_PRINTABLE(shown, path), st->name, why);
		pem->len = 0;
	}
}

static void pem_default(const struct schema_setting *st, struct echod_config *cfg)
{
	memset(PEM(cfg, st), 0, sizeof(struct config_pem));
}

static bool pem_equal(const struct schema_setting *st, const struct echod_config *a,
		      const struct echod_config *b)
{
	const struct config_pem *x = CPEM(a, st), *y = CPEM(b, st);

	return !strcmp(x->path, y->path) && x->len == y->len && !memcmp(x->data, y->data, x->len);
}

static void pem_format(const struct schema_setting *st, const struct echod_config *cfg,
		       char *buf, size_t size)
{
	quote(buf, size, CPEM(cfg, st)->path);
}

static void pem_range(const struct schema_setting *st, char *buf, size_t size)
{
	(void)st;
	snprintf(buf, size, "the absolute path of a PEM file of at most %d bytes or \"\"",
		 CONFIG_PEM_MAX);
}

const struct schema_type schema_pem_file = {
	pem_parse, pem_default, pem_equal, pem_format, pem_range,
};

/* ---- basic auth entries ---- */

static void auth_parse(struct scan *sc, const config_setting_t *s, const struct schema_setting *st,
		       struct echod_config *cfg)
{
	char shown[SCAN_SHOWN_SIZE], why[256];
	struct config_cred *tmp;
	unsigned count, n = 0;
	bool ok = true;

	if (config_setting_type(s) != CONFIG_TYPE_LIST && config_setting_type(s) != CONFIG_TYPE_ARRAY) {
		where_error(sc, s, "%s: expected a list of \"USER:BCRYPT-HASH\" strings, got %s",
			    st->name, schema_type_name(s));
		return;
	}
	count = (unsigned)config_setting_length(s);
	if (count > st->max_count) {
		where_error(sc, s, "%s: too many entries (%u, at most %u)", st->name, count,
			    st->max_count);
		return;
	}
	tmp = calloc(count ? count : 1, sizeof(*tmp));
	if (!tmp) {
		where_error(sc, s, "%s: out of memory", st->name);
		return;
	}
	for (unsigned i = 0; i < count; i++) {
		const config_setting_t *e = config_setting_get_elem(s, i);
		unsigned k;

		if (config_setting_type(e) != CONFIG_TYPE_STRING) {
			where_error(sc, e, "%s[%u]: expected a string, got %s", st->name, i,
				    schema_type_name(e));
			ok = false;
			continue;
		}
		if (metrics_auth_parse(config_setting_get_string(e), &tmp[n], why, sizeof(why)) < 0) {
			where_error(sc, e, "%s[%u]: %s", st->name, i, why);
			ok = false;
			continue;
		}
		for (k = 0; k < n && strcmp(tmp[k].user, tmp[n].user); k++)
			;
		if (k < n) {
			where_error(sc, e, "%s[%u]: duplicate user '%s'", st->name, i,
				    SCAN_PRINTABLE(shown, tmp[n].user));
			ok = false;
			continue;
		}
		n++;
	}
	if (ok) {
		memset(CREDS(cfg, st), 0, st->size);
		memcpy(CREDS(cfg, st), tmp, n * sizeof(*tmp));
		schema_set_count(st, cfg, n);
	}
	free(tmp);
}

static void auth_default(const struct schema_setting *st, struct echod_config *cfg)
{
	memset(CREDS(cfg, st), 0, st->size);
	schema_set_count(st, cfg, 0);
}

static bool auth_equal(const struct schema_setting *st, const struct echod_config *a,
		       const struct echod_config *b)
{
	unsigned na = schema_count_of(st, a), nb = schema_count_of(st, b);

	return na == nb && !memcmp(CCREDS(a, st), CCREDS(b, st), na * sizeof(struct config_cred));
}

static void auth_format(const struct schema_setting *st, const struct echod_config *cfg,
			char *buf, size_t size)
{
	const struct config_cred *c = CCREDS(cfg, st);
	unsigned n = schema_count_of(st, cfg);
	char entry[CONFIG_USER_MAX + CONFIG_BCRYPT_LEN + 2];
	size_t len = 1;

	snprintf(buf, size, "[");
	for (unsigned i = 0; i < n && len + 4 < size; i++) {
		snprintf(entry, sizeof(entry), "%s:%s", c[i].user, c[i].hash);
		if (i) {
			snprintf(buf + len, size - len, ", ");
			len += 2;
		}
		len += quote(buf + len, size - len, entry);
	}
	if (len + 1 < size)
		snprintf(buf + len, size - len, "]");
}

static void auth_range(const struct schema_setting *st, char *buf, size_t size)
{
	snprintf(buf, size, "\"USER:BCRYPT-HASH\" strings, a list of at most %u", st->max_count);
}

const struct schema_type schema_basic_auth = {
	auth_parse, auth_default, auth_equal, auth_format, auth_range,
};

/* ---- across settings ---- */

/* Report at setting name if the file has it, else without a line. */
static void error_at(struct scan *sc, const config_setting_t *root, const char *name,
		     const char *msg)
{
	const config_setting_t *s = config_setting_lookup((config_setting_t *)root, name);

	if (s)
		where_error(sc, s, "%s", msg);
	else
		config_error(sc->errs, "%s", msg);
}

void schema_check_tls(struct scan *sc, const config_setting_t *root, struct echod_config *cfg)
{
	const struct config_pem *c = &cfg->metrics.tls_certificate, *k = &cfg->metrics.tls_key;
	char why[256], cshown[SCAN_SHOWN_SIZE], kshown[SCAN_SHOWN_SIZE];

	if (!c->path[0] && !k->path[0])
		return;
	if (!c->path[0] || !k->path[0]) {
		error_at(sc, root, c->path[0] ? "metrics.tls_certificate" : "metrics.tls_key",
			 c->path[0] ? "metrics.tls_certificate: set without metrics.tls_key "
				      "(give both or neither)"
				    : "metrics.tls_key: set without metrics.tls_certificate "
				      "(give both or neither)");
		return;
	}
	if (!http_tls_supported()) {
		error_at(sc, root, "metrics.tls_certificate",
			 "metrics.tls_certificate: this libmicrohttpd was built without TLS "
			 "(MHD_FEATURE_TLS): no HTTPS");
		return;
	}
	if (!c->len || !k->len)
		return;         /* a file could not be read: reported */
	SCAN_PRINTABLE(cshown, c->path);
	SCAN_PRINTABLE(kshown, k->path);
	switch (http_tls_check(c->data, c->len, k->data, k->len, why, sizeof(why))) {
	case HTTP_TLS_OK:
		break;
	case HTTP_TLS_BAD_CERT:
		config_error(sc->errs, "%s: metrics.tls_certificate: %s", cshown, why);
		break;
	case HTTP_TLS_BAD_KEY:
		config_error(sc->errs, "%s: metrics.tls_key: %s", kshown, why);
		break;
	default:
		config_error(sc->errs, "%s: metrics.tls_key: %s: %s", kshown, why, cshown);
		break;
	}
}
