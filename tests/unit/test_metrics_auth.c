/* test_metrics_auth.c - basic auth of the metrics endpoint
 * (src/metrics_auth.c): "USER:BCRYPT-HASH" entries accepted and refused
 * with their reason, and the verifier: bcrypt decides, a verified pair is
 * served from the cache without bcrypt, a wrong password, another user's
 * password or an unknown user never gets in (and is never cached), the
 * cache is bounded (the oldest pair is replaced). */
#include "autoconfig.h"

#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_auth.h"
#include "tap.h"

/* A bcrypt hash of password at cost 4 (fast), into out. */
static void make_hash(const char *password, const char *prefix, char *out)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data cd;
	const char *h;

	memset(&cd, 0, sizeof(cd));
	if (!crypt_gensalt_rn(prefix, 4, NULL, 0, salt, sizeof(salt))) {
		perror("crypt_gensalt_rn");
		exit(1);
	}
	h = crypt_rn(password, salt, &cd, sizeof(cd));
	if (!h || strlen(h) != CONFIG_BCRYPT_LEN) {
		fprintf(stderr, "crypt_rn failed\n");
		exit(1);
	}
	strcpy(out, h);
}

static void test_parse(void)
{
	static const struct {
		const char *entry;
		const char *why;        /* NULL: accepted */
	} cases[] = {
		{ "alice:$2y$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG", NULL },
		{ "alice:$2b$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG", NULL },
		{ "alice:$2a$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG", NULL },
		{ "a b.c@d-e:$2y$04$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG", NULL },
		{ "alice", "expected USER:BCRYPT-HASH" },
		{ "", "expected USER:BCRYPT-HASH" },
		{ ":$2y$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG", "empty user name" },
		{ "0123456789012345678901234567890123456789012345678901234567890123:"
		  "$2y$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG",
		  "user name longer than 63 bytes" },
		{ "al\tice:$2y$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG",
		  "control character in the user name" },
		{ "alice:secret", "the hash is not bcrypt;" },
		{ "alice:", "the hash is not bcrypt;" },
		{ "alice:$6$salt$abcdefgh", "the hash is not bcrypt (it starts with '$6$')" },
		{ "alice:$apr1$salt$abcdefgh", "the hash is not bcrypt (it starts with '$apr1$')" },
		{ "alice:$2x$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG",
		  "the hash is not bcrypt (it starts with '$2x$')" },
		{ "alice:{SHA}abcdefgh", "the hash is not bcrypt;" },
		{ "alice:$2y$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DV",
		  "malformed bcrypt hash (expected $2y$NN$ and 53 characters" },
		{ "alice:$2y$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVGG",
		  "malformed bcrypt hash (expected" },
		{ "alice:$2y$1$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVGG",
		  "malformed bcrypt hash (expected" },
		{ "alice:$2y$03$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG",
		  "bcrypt cost 03 is out of range 04..31" },
		{ "alice:$2y$32$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG",
		  "bcrypt cost 32 is out of range 04..31" },
		{ "alice:$2y$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DV!",
		  "a character outside ./A-Za-z0-9 at 60" },
		{ "alice:$2y$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG:x",
		  "malformed bcrypt hash" },
	};
	struct config_cred c;
	char why[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = metrics_auth_parse(cases[i].entry, &c, why, sizeof(why));

		if (!cases[i].why)
			tap_ok(r == 0 && strlen(c.hash) == CONFIG_BCRYPT_LEN &&
			       !strncmp(cases[i].entry, c.user, strlen(c.user)) &&
			       cases[i].entry[strlen(c.user)] == ':',
			       "parse: '%.20s...' accepted (user '%s')", cases[i].entry, c.user);
		else
			tap_ok(r < 0 && strstr(why, cases[i].why) != NULL,
			       "parse: '%.24s%s' refused: %s", cases[i].entry,
			       strlen(cases[i].entry) > 24 ? "..." : "", why);
	}
	tap_ok(metrics_auth_parse(NULL, &c, why, sizeof(why)) < 0, "parse: NULL refused");
}

static void test_verify(void)
{
	struct config_cred creds[2];
	struct metrics_auth *a;
	enum metrics_auth_result r;
	char entry[160], why[256], hash[CONFIG_BCRYPT_LEN + 1];
	char long_pw[128];
	uint64_t n;

	make_hash("secret", "$2b$", hash);
	snprintf(entry, sizeof(entry), "alice:%s", hash);
	tap_ok(metrics_auth_parse(entry, &creds[0], why, sizeof(why)) == 0,
	       "a crypt_gensalt $2b$ hash is accepted");
	/* bob's password: 72 bytes (all bcrypt reads) then anything */
	memset(long_pw, 'p', 72);
	long_pw[72] = '\0';
	make_hash(long_pw, "$2y$", hash);
	snprintf(entry, sizeof(entry), "bob:%s", hash);
	tap_ok(metrics_auth_parse(entry, &creds[1], why, sizeof(why)) == 0,
	       "a crypt_gensalt $2y$ hash is accepted");

	a = metrics_auth_new(creds, 2);
	tap_ok(a && metrics_auth_bcrypt_count(a) == 0, "a verifier for 2 users");
	tap_ok(metrics_auth_same(a, creds, 2) && !metrics_auth_same(a, creds, 1) &&
	       !metrics_auth_same(a, creds + 1, 1), "metrics_auth_same: the users it was made with");

	r = metrics_auth_check(a, "alice", "secret");
	tap_ok(r == METRICS_AUTH_VERIFIED && metrics_auth_bcrypt_count(a) == 1,
	       "alice, right password: verified by bcrypt (1 bcrypt)");
	for (int i = 0; i < 100; i++)
		r = metrics_auth_check(a, "alice", "secret");
	tap_ok(r == METRICS_AUTH_CACHED && metrics_auth_bcrypt_count(a) == 1,
	       "alice, right password, 100 times more: from the cache (still 1 bcrypt)");

	n = metrics_auth_bcrypt_count(a);
	tap_ok(metrics_auth_check(a, "alice", "wrong") == METRICS_AUTH_DENIED &&
	       metrics_auth_check(a, "alice", "wrong") == METRICS_AUTH_DENIED &&
	       metrics_auth_bcrypt_count(a) == n + 2,
	       "alice, wrong password twice: denied, a bcrypt each time (failures not cached)");
	tap_ok(metrics_auth_check(a, "alice", "secre") == METRICS_AUTH_DENIED &&
	       metrics_auth_check(a, "alice", "secret ") == METRICS_AUTH_DENIED &&
	       metrics_auth_check(a, "alice", "") == METRICS_AUTH_DENIED &&
	       metrics_auth_check(a, "alice", "Secret") == METRICS_AUTH_DENIED,
	       "alice, a prefix, an extension, empty, another case: denied with alice cached");
	tap_ok(metrics_auth_check(a, "Alice", "secret") == METRICS_AUTH_DENIED &&
	       metrics_auth_check(a, "alice ", "secret") == METRICS_AUTH_DENIED &&
	       metrics_auth_check(a, "bob", "secret") == METRICS_AUTH_DENIED,
	       "alice's password under another user name: denied");
	n = metrics_auth_bcrypt_count(a);
	tap_ok(metrics_auth_check(a, "mallory", "secret") == METRICS_AUTH_DENIED &&
	       metrics_auth_bcrypt_count(a) == n + 1,
	       "an unknown user: denied, after a bcrypt all the same (timing)");
	tap_ok(metrics_auth_check(a, NULL, "secret") == METRICS_AUTH_DENIED &&
	       metrics_auth_check(a, "alice", NULL) == METRICS_AUTH_DENIED &&
	       metrics_auth_check(NULL, "alice", "secret") == METRICS_AUTH_DENIED,
	       "NULL user, password or verifier: denied");

	/* bounded: bcrypt ignores what follows 72 bytes, so bob has as many
	 * valid passwords as we like; each is a pair of its own in the cache */
	n = metrics_auth_bcrypt_count(a);
	for (int i = 0; i <= METRICS_AUTH_CACHE_SLOTS; i++) {
		snprintf(long_pw + 72, sizeof(long_pw) - 72, "-%d", i);
		r = metrics_auth_check(a, "bob", long_pw);
		if (r != METRICS_AUTH_VERIFIED)
			break;
	}
	tap_ok(r == METRICS_AUTH_VERIFIED &&
	       metrics_auth_bcrypt_count(a) == n + METRICS_AUTH_CACHE_SLOTS + 1,
	       "%d distinct verified pairs: each verified by bcrypt", METRICS_AUTH_CACHE_SLOTS + 1);
	snprintf(long_pw + 72, sizeof(long_pw) - 72, "-%d", METRICS_AUTH_CACHE_SLOTS);
	tap_ok(metrics_auth_check(a, "bob", long_pw) == METRICS_AUTH_CACHED,
	       "the newest pair is cached");
	tap_ok(metrics_auth_check(a, "alice", "secret") == METRICS_AUTH_VERIFIED,
	       "alice's pair was replaced (the table holds %d): bcrypt again",
	       METRICS_AUTH_CACHE_SLOTS);
	metrics_auth_free(a);
	metrics_auth_free(NULL);

	/* a verifier made with another hash for alice shares nothing */
	make_hash("other", "$2b$", hash);
	snprintf(entry, sizeof(entry), "alice:%s", hash);
	metrics_auth_parse(entry, &creds[0], why, sizeof(why));
	a = metrics_auth_new(creds, 1);
	tap_ok(a && metrics_auth_check(a, "alice", "secret") == METRICS_AUTH_DENIED &&
	       metrics_auth_check(a, "alice", "other") == METRICS_AUTH_VERIFIED,
	       "a new hash for alice: the old password denied, the new one verified");
	metrics_auth_free(a);
	tap_ok(metrics_auth_new(creds, CONFIG_MAX_BASIC_AUTH + 1) == NULL,
	       "more than %d users refused", CONFIG_MAX_BASIC_AUTH);
}

int main(void)
{
	test_parse();
	test_verify();
	return tap_done();
}
