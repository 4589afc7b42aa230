/* metrics_auth.h - basic auth of the metrics endpoint: the entries of
 * "metrics.basic_auth" ("USER:BCRYPT-HASH", as `htpasswd -nBC 10 USER`
 * prints) checked, and a verifier with a credential cache.
 *
 * bcrypt is slow on purpose (cost 10: some 50-100 ms), and Prometheus sends
 * the same credentials with every scrape: a pair (user, password) that
 * bcrypt verified is remembered, as a keyed SHA-256 digest of the user, the
 * password and the configured hash, in a fixed table of
 * METRICS_AUTH_CACHE_SLOTS (the oldest replaced).  A cache hit needs the
 * whole digest to match (compared in constant time over every slot), so a
 * wrong password never gets in through it; failures are never cached.  An
 * unknown user costs a bcrypt too (against a fixed dummy hash): the time of
 * an answer does not tell which users exist.
 *
 * A verifier holds its own scratch (libcrypt's crypt_data, some 32 KB): a
 * check allocates nothing.  It is not thread-safe: one thread checks with
 * it (the metrics endpoint's libmicrohttpd thread, http.c). */
#ifndef ECHOD_METRICS_AUTH_H
#define ECHOD_METRICS_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define METRICS_AUTH_CACHE_SLOTS 16

struct metrics_auth;

/* Check one "USER:BCRYPT-HASH" entry and split it into *cred: 0, or -1 with
 * why (a phrase: "expected USER:BCRYPT-HASH").  The user is 1..63 bytes, no
 * ':' and no control character; the hash is bcrypt ($2y$, $2b$ or $2a$, cost
 * 04..31, 53 characters of ./A-Za-z0-9) that libcrypt accepts. */
int metrics_auth_parse(const char *entry, struct config_cred *cred, char *why, size_t size);

/* A verifier for n credentials (copied), with an empty cache; NULL if out
 * of memory. */
struct metrics_auth *metrics_auth_new(const struct config_cred *creds, unsigned n);

/* Free a verifier (its cache wiped first).  NULL is a no-op. */
void metrics_auth_free(struct metrics_auth *a);

/* Whether n credentials are those a verifier was made with. */
bool metrics_auth_same(const struct metrics_auth *a, const struct config_cred *creds,
		       unsigned n);

/* How a check went. */
enum metrics_auth_result {
	METRICS_AUTH_DENIED = 0,        /* bcrypt said no (or the user is unknown) */
	METRICS_AUTH_CACHED,            /* yes, from the cache: no bcrypt */
	METRICS_AUTH_VERIFIED,          /* yes, bcrypt said so (now cached) */
};

/* Check user and password (NUL-terminated; NULL is denied). */
enum metrics_auth_result metrics_auth_check(struct metrics_auth *a, const char *user,
					    const char *password);

/* bcrypt computations the verifier has made (the debug log, tests). */
uint64_t metrics_auth_bcrypt_count(const struct metrics_auth *a);

#endif
