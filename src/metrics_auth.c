/* metrics_auth.c - basic auth of the metrics endpoint: "USER:BCRYPT-HASH"
 * entries checked, and a verifier (libxcrypt's crypt_rn) with a bounded
 * cache of verified credentials; see metrics_auth.h */
#include "autoconfig.h"

#include "metrics_auth.h"

#include <crypt.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIGEST_LEN 32           /* SHA-256 */

struct cache_slot {
	uint8_t digest[DIGEST_LEN];
	uint8_t used;
};

struct metrics_auth {
	unsigned n;
	struct config_cred creds[CONFIG_MAX_BASIC_AUTH];
	uint8_t key[DIGEST_LEN];        /* random: the cache's digests are keyed */
	struct cache_slot cache[METRICS_AUTH_CACHE_SLOTS];
	unsigned next;                  /* the slot the next verified pair takes */
	uint64_t bcrypts;
	struct crypt_data scratch;      /* crypt_rn's, reused: no allocation per check */
};

/* ---- the entries ---- */

static bool is_b64(char c)
{
	return c == '.' || c == '/' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9');
}

/* Whether hash is bcrypt as libcrypt makes it; why not in why. */
static bool bcrypt_ok(const char *hash, char *why, size_t size)
{
	size_t len = strlen(hash);
	int cost;

	if (strncmp(hash, "$2y$", 4) && strncmp(hash, "$2b$", 4) && strncmp(hash, "$2a$", 4)) {
		if (hash[0] == '$' && strchr(hash + 1, '$')) {
			int id = (int)(strchr(hash + 1, '$') - hash) + 1;

			snprintf(why, size, "the hash is not bcrypt (it starts with '%.*s'); only "
				 "bcrypt ($2y$, $2b$, $2a$) is accepted: htpasswd -nBC 10 USER",
				 id > 8 ? 8 : id, hash);
		} else {
			snprintf(why, size, "the hash is not bcrypt; only bcrypt ($2y$, $2b$, $2a$) "
				 "is accepted: htpasswd -nBC 10 USER");
		}
		return false;
	}
	if (len != CONFIG_BCRYPT_LEN || hash[4] < '0' || hash[4] > '9' || hash[5] < '0' ||
	    hash[5] > '9' || hash[6] != '$') {
		snprintf(why, size, "malformed bcrypt hash (expected $2y$NN$ and 53 characters, "
			 "%d in all)", CONFIG_BCRYPT_LEN);
		return false;
	}
	cost = (hash[4] - '0') * 10 + (hash[5] - '0');
	if (cost < 4 || cost > 31) {
		snprintf(why, size, "bcrypt cost %02d is out of range 04..31", cost);
		return false;
	}
	for (size_t i = 7; i < len; i++) {
		if (!is_b64(hash[i])) {
			snprintf(why, size, "malformed bcrypt hash (a character outside ./A-Za-z0-9 "
				 "at %zu)", i + 1);
			return false;
		}
	}
	if (crypt_checksalt(hash) != CRYPT_SALT_OK) {
		snprintf(why, size, "libcrypt does not accept this bcrypt hash");
		return false;
	}
	return true;
}

int metrics_auth_parse(const char *entry, struct config_cred *cred, char *why, size_t size)
{
	const char *colon = entry ? strchr(entry, ':') : NULL;
	size_t ulen;

	memset(cred, 0, sizeof(*cred));
	if (!colon) {
		snprintf(why, size, "expected USER:BCRYPT-HASH (as htpasswd -nBC 10 USER prints)");
		return -1;
	}
	ulen = (size_t)(colon - entry);
	if (ulen == 0) {
		snprintf(why, size, "empty user name");
		return -1;
	}
	if (ulen >= CONFIG_USER_MAX) {
		snprintf(why, size, "user name longer than %d bytes", CONFIG_USER_MAX - 1);
		return -1;
	}
	for (size_t i = 0; i < ulen; i++) {
		if ((unsigned char)entry[i] < 0x20 || entry[i] == 0x7f) {
			snprintf(why, size, "control character in the user name");
			return -1;
		}
	}
	if (!bcrypt_ok(colon + 1, why, size))
		return -1;
	memcpy(cred->user, entry, ulen);
	memcpy(cred->hash, colon + 1, CONFIG_BCRYPT_LEN);
	return 0;
}

/* ---- the verifier ---- */

struct metrics_auth *metrics_auth_new(const struct config_cred *creds, unsigned n)
{
	struct metrics_auth *a;

	if (n > CONFIG_MAX_BASIC_AUTH)
		return NULL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->n = n;
	memcpy(a->creds, creds, n * sizeof(*creds));
	if (gnutls_rnd(GNUTLS_RND_KEY, a->key, sizeof(a->key)) < 0) {
		free(a);
		return NULL;
	}
	return a;
}

void metrics_auth_free(struct metrics_auth *a)
{
	if (!a)
		return;
	explicit_bzero(a, sizeof(*a));
	free(a);
}

bool metrics_auth_same(const struct metrics_auth *a, const struct config_cred *creds,
		       unsigned n)
{
	return a && a->n == n && !memcmp(a->creds, creds, n * sizeof(*creds));
}

uint64_t metrics_auth_bcrypt_count(const struct metrics_auth *a)
{
	return a ? a->bcrypts : 0;
}

/* 1 if the n bytes at x and y are equal, else 0; in constant time. */
static unsigned same_bytes(const uint8_t *x, const uint8_t *y, size_t n)
{
	unsigned d = 0;

	for (size_t i = 0; i < n; i++)
		d |= (unsigned)(x[i] ^ y[i]);
	return 1u & ((d - 1u) >> 8);
}

/* The cache's digest of (user, password) for credential c:
 * SHA-256(key, user, NUL, SHA-256(password), hash).  0 or -1. */
static int digest_of(const struct metrics_auth *a, const struct config_cred *c,
		     const char *password, uint8_t *out)
{
	uint8_t buf[DIGEST_LEN + CONFIG_USER_MAX + DIGEST_LEN + CONFIG_BCRYPT_LEN];
	size_t ulen = strlen(c->user), off = 0;
	int r;

	memcpy(buf, a->key, DIGEST_LEN);
	off += DIGEST_LEN;
	memcpy(buf + off, c->user, ulen + 1);
	off += ulen + 1;
	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, password, strlen(password), buf + off) < 0) {
		explicit_bzero(buf, sizeof(buf));
		return -1;
	}
	off += DIGEST_LEN;
	memcpy(buf + off, c->hash, CONFIG_BCRYPT_LEN);
	off += CONFIG_BCRYPT_LEN;
	r = gnutls_hash_fast(GNUTLS_DIG_SHA256, buf, off, out);
	explicit_bzero(buf, sizeof(buf));
	return r < 0 ? -1 : 0;
}

/* Whether digest is in the cache: every slot compared, in constant time. */
static bool cache_has(const struct metrics_auth *a, const uint8_t *digest)
{
	unsigned hit = 0;

	for (unsigned i = 0; i < METRICS_AUTH_CACHE_SLOTS; i++)
		hit |= a->cache[i].used & same_bytes(a->cache[i].digest, digest, DIGEST_LEN);
	return hit != 0;
}

static void cache_put(struct metrics_auth *a, const uint8_t *digest)
{
	struct cache_slot *s = &a->cache[a->next];

	memcpy(s->digest, digest, DIGEST_LEN);
	s->used = 1;
	a->next = (a->next + 1) % METRICS_AUTH_CACHE_SLOTS;
}

/* bcrypt: whether password hashes to hash. */
static bool bcrypt_match(struct metrics_auth *a, const char *password, const char *hash)
{
	const char *out;

	a->bcrypts++;
	out = crypt_rn(password, hash, &a->scratch, (int)sizeof(a->scratch));
	if (!out || strlen(out) != CONFIG_BCRYPT_LEN)
		return false;
	return same_bytes((const uint8_t *)out, (const uint8_t *)hash, CONFIG_BCRYPT_LEN) != 0;
}

enum metrics_auth_result metrics_auth_check(struct metrics_auth *a, const char *user,
					    const char *password)
{
	const struct config_cred *c = NULL;
	uint8_t digest[DIGEST_LEN];
	bool ok;

	if (!a || !a->n || !user || !password)
		return METRICS_AUTH_DENIED;
	for (unsigned i = 0; i < a->n; i++)
		if (!strcmp(a->creds[i].user, user))
			c = &a->creds[i];
	if (c && digest_of(a, c, password, digest) == 0 && cache_has(a, digest)) {
		explicit_bzero(digest, sizeof(digest));
		return METRICS_AUTH_CACHED;
	}
	/* an unknown user costs a bcrypt too, at the cost of the configured hashes */
	ok = bcrypt_match(a, password, c ? c->hash : a->creds[0].hash) && c;
	if (ok && digest_of(a, c, password, digest) == 0)
		cache_put(a, digest);
	explicit_bzero(digest, sizeof(digest));
	return ok ? METRICS_AUTH_VERIFIED : METRICS_AUTH_DENIED;
}
