/* test_policy.c - the allow/deny matcher (src/policy.c): prefixes as
 * text, IPv4, IPv6, IPv4-mapped sources, overlapping prefixes, the most
 * specific wins, a tie denies, allow-only, empty lists, and 10,000 random
 * prefixes against a brute-force reference on 100,000 random addresses. */
#include "policy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define MAXP 64

/* Lists from space-separated prefixes. */
static struct policy *build(const char *allow, const char *deny)
{
	static struct config_prefix a[MAXP], d[MAXP];
	const char *lists[2] = { allow, deny };
	struct config_prefix *out[2] = { a, d };
	unsigned n[2] = { 0, 0 };
	struct policy *p = NULL;
	char why[128];

	for (int k = 0; k < 2; k++) {
		char buf[1024], *save = NULL;

		snprintf(buf, sizeof(buf), "%s", lists[k]);
		for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save))
			if (policy_prefix_parse(t, &out[k][n[k]++], why, sizeof(why)) < 0)
				tap_diag("bad prefix in the test: %s %s", t, why);
	}
	if (policy_build(&p, a, n[0], d, n[1]) < 0)
		tap_diag("policy_build failed");
	return p;
}

static bool allows(const struct policy *p, const char *addr)
{
	uint8_t a[16];
	struct in_addr v4;

	if (inet_pton(AF_INET, addr, &v4) == 1) {
		memset(a, 0, 10);
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &v4, 4);
	} else if (inet_pton(AF_INET6, addr, a) != 1) {
		tap_diag("bad address in the test: %s", addr);
	}
	return policy_allows(p, a);
}

/* Each "addr=1" or "addr=0" in cases must hold. */
static void check(const char *what, const char *allow, const char *deny, const char *cases)
{
	struct policy *p = build(allow, deny);
	char buf[1024], *save = NULL, wrong[512] = "";

	snprintf(buf, sizeof(buf), "%s", cases);
	for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(t, '=');
		bool want = eq[1] == '1';

		*eq = '\0';
		if (allows(p, t) != want)
			snprintf(wrong + strlen(wrong), sizeof(wrong) - strlen(wrong), " %s", t);
	}
	tap_ok(!wrong[0], "%s", what);
	if (wrong[0])
		tap_diag("wrong for:%s", wrong);
	policy_unref(p);
}

static void test_text(void)
{
	static const struct { const char *in, *out, *err; } t[] = {
		{ "10.0.0.0/8", "10.0.0.0/8", NULL },
		{ "192.0.2.1", "192.0.2.1/32", NULL },
		{ "0.0.0.0/0", "0.0.0.0/0", NULL },
		{ "2001:db8::/32", "2001:db8::/32", NULL },
		{ "::1", "::1/128", NULL },
		{ "::/0", "::/0", NULL },
		{ "::ffff:10.0.0.0/104", "10.0.0.0/8", NULL },
		{ "10.0.0.1/8", NULL, "has host bits set (the prefix is 10.0.0.0/8)" },
		{ "2001:db8::1/32", NULL, "has host bits set (the prefix is 2001:db8::/32)" },
		{ "10.0.0.0/33", NULL, "has a prefix length out of range 0..32" },
		{ "::/129", NULL, "has a prefix length out of range 0..128" },
		{ "10.0.0.0/", NULL, "has a prefix length out of range 0..32" },
		{ "10.0.0.0/-1", NULL, "has a prefix length out of range 0..32" },
		{ "10.0.0.0/08x", NULL, "has a prefix length out of range 0..32" },
		{ "10.0.0/8", NULL, "is not an IPv4 or IPv6 prefix" },
		{ "example.com", NULL, "is not an IPv4 or IPv6 prefix" },
		{ "", NULL, "is not an IPv4 or IPv6 prefix" },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct config_prefix p;
		char why[128] = "", out[POLICY_PREFIX_TEXT_MAX] = "";
		int r = policy_prefix_parse(t[i].in, &p, why, sizeof(why));

		if (r == 0)
			policy_prefix_format(&p, out, sizeof(out));
		if (t[i].out)
			tap_ok(r == 0 && !strcmp(out, t[i].out), "'%s' parses as %s (got %s)", t[i].in,
			       t[i].out, out);
		else
			tap_ok(r < 0 && !strcmp(why, t[i].err), "'%s': %s (got '%s')", t[i].in,
			       t[i].err, why);
	}
}

static void test_rules(void)
{
	/* what, allow, deny, "address=allowed ..." */
	static const char *const t[][4] = {
		{ "empty lists: everyone",
		  "", "",
		  "10.1.2.3=1 ::1=1 2001:db8::1=1 0.0.0.0=1" },
		{ "IPv4 deny only: the rest may",
		  "", "10.0.0.0/8 192.0.2.7",
		  "10.0.0.1=0 10.255.255.255=0 11.0.0.0=1 192.0.2.7=0 192.0.2.8=1 ::1=1" },
		{ "IPv4 allow only: nobody else, IPv6 neither",
		  "127.0.0.0/8", "",
		  "127.0.0.1=1 127.9.9.9=1 128.0.0.1=0 ::1=0 ::ffff:127.0.0.5=1" },
		{ "IPv6 deny",
		  "", "::1/128 2001:db8::/32",
		  "::1=0 ::2=1 2001:db8:ffff::1=0 2001:db9::1=1 127.0.0.1=1" },
		{ "IPv4-mapped sources are judged as IPv4",
		  "", "10.0.0.0/8",
		  "::ffff:10.1.1.1=0 ::ffff:11.1.1.1=1" },
		{ "an IPv6 prefix over ::ffff:0:0/96 does not judge IPv4 sources",
		  "", "::/0",
		  "10.1.1.1=1 ::ffff:10.1.1.1=1 ::1=0 2001:db8::1=0" },
		{ "most specific wins: allow /8, deny /16, allow /24, deny /32",
		  "10.0.0.0/8 10.1.2.0/24", "10.1.0.0/16 10.1.2.3",
		  "10.9.9.9=1 10.1.9.9=0 10.1.2.4=1 10.1.2.3=0 11.0.0.1=0" },
		{ "most specific wins: deny /8, allow /24 inside",
		  "10.1.2.0/24", "10.0.0.0/8",
		  "10.1.2.9=1 10.1.3.9=0 12.0.0.1=0" },
		{ "most specific wins, no allow list: deny /8, allow /24 inside",
		  "", "0.0.0.0/0",
		  "1.2.3.4=0 ::1=1" },
		{ "a tie denies",
		  "10.0.0.0/8 ::1", "10.0.0.0/8 ::1/128",
		  "10.0.0.1=0 ::1=0 11.0.0.1=0" },
		{ "a tie denies, whatever the order",
		  "192.0.2.0/24 192.0.2.0/24", "192.0.2.0/24",
		  "192.0.2.1=0" },
		{ "/0 allow with a /32 deny",
		  "0.0.0.0/0 ::/0", "192.0.2.1",
		  "192.0.2.1=0 192.0.2.2=1 ::1=1" },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		check(t[i][0], t[i][1], t[i][2], t[i][3]);
	tap_ok(build("", "") == NULL && policy_allows(NULL, (const uint8_t *)"0123456789abcdef"),
	       "empty lists compile to NULL, which allows");
}

/* ---- 10,000 random prefixes against a brute force ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

struct ref {
	uint8_t addr[16], mask[16];
	uint64_t w[2], m[2];         /* addr and mask as two words, for speed */
	unsigned len;
	bool deny;
};

static void random_addr(uint8_t a[16], bool v4)
{
	uint64_t r = next_rand(), s = next_rand();

	memcpy(a, &r, 8);
	memcpy(a + 8, &s, 8);
	if (v4) {
		/* a small space so that prefixes overlap: 10.0.0.0/14 */
		memset(a, 0, 10);
		a[10] = a[11] = 0xff;
		a[12] = 10;
		a[13] &= 0x03;
	} else {
		/* 2001:db8::/32 with few bits in use past it */
		a[0] = 0x20; a[1] = 0x01; a[2] = 0x0d; a[3] = 0xb8;
		a[4] &= 0x03;
		memset(a + 5, 0, 6);
	}
}

static bool ref_allows(const struct ref *r, unsigned n, bool has_allow, const uint8_t a[16])
{
	int best = -1;
	bool deny = false;

	uint64_t w[2];

	memcpy(w, a, 16);
	for (unsigned i = 0; i < n; i++) {
		if (((w[0] & r[i].m[0]) ^ r[i].w[0]) | ((w[1] & r[i].m[1]) ^ r[i].w[1]))
			continue;
		if ((int)r[i].len > best || ((int)r[i].len == best && r[i].deny)) {
			if ((int)r[i].len > best)
				deny = false;
			best = (int)r[i].len;
			deny = deny || r[i].deny;
		}
	}
	return best < 0 ? !has_allow : !deny;
}

static void test_random(void)
{
	enum { NPREFIX = 10000, NADDR = 100000 };
	struct config_prefix *allow = calloc(NPREFIX, sizeof(*allow));
	struct config_prefix *deny = calloc(NPREFIX, sizeof(*deny));
	struct ref *r = calloc(NPREFIX, sizeof(*r));
	unsigned na = 0, nd = 0, bad = 0, allowed = 0;
	struct policy *p = NULL;

	for (unsigned i = 0; i < NPREFIX; i++) {
		bool v4 = next_rand() & 1, is_deny = next_rand() % 3 != 0;
		unsigned len = v4 ? 96 + 8 + (unsigned)(next_rand() % 25)     /* /8../32 */
				  : 16 + (unsigned)(next_rand() % 113);       /* /16../128 */
		struct config_prefix *c = is_deny ? &deny[nd++] : &allow[na++];

		random_addr(r[i].addr, v4);
		for (unsigned k = 0; k < 16; k++) {
			unsigned bits = len > k * 8 ? len - k * 8 : 0;

			r[i].mask[k] = bits >= 8 ? 0xff : (uint8_t)(0xff00u >> bits);
			r[i].addr[k] &= r[i].mask[k];
		}
		memcpy(r[i].w, r[i].addr, 16);
		memcpy(r[i].m, r[i].mask, 16);
		r[i].len = len;
		r[i].deny = is_deny;
		memcpy(c->addr, r[i].addr, 16);
		c->len = (uint8_t)len;
	}
	tap_ok(policy_build(&p, allow, na, deny, nd) == 0 && p, "%u allow and %u deny prefixes compile",
	       na, nd);
	for (unsigned i = 0; i < NADDR; i++) {
		uint8_t a[16];
		bool got, want;

		random_addr(a, next_rand() & 1);
		got = policy_allows(p, a);
		want = ref_allows(r, NPREFIX, na > 0, a);
		bad += got != want;
		allowed += got;
	}
	tap_ok(bad == 0 && allowed > NADDR / 20 && allowed < NADDR - NADDR / 20,
	       "%u random addresses: the lookup agrees with a brute force (%u allowed, %u wrong)",
	       (unsigned)NADDR, allowed, bad);
	policy_unref(p);
	free(allow);
	free(deny);
	free(r);
}

static void test_refs(void)
{
	struct policy *p = build("", "10.0.0.0/8");

	policy_ref(p);
	policy_unref(p);
	tap_ok(!allows(p, "10.0.0.1"), "a reference kept: still usable");
	policy_unref(p);        /* the last: freed (ASan/LSan tell otherwise) */
	policy_ref(NULL);
	policy_unref(NULL);
	tap_ok(1, "NULL references are no-ops");
}

int main(void)
{
	test_text();
	test_rules();
	test_random();
	test_refs();
	return tap_done();
}
