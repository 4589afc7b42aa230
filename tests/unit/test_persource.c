/* test_persource.c - the per-source table (src/persource.c) over a fake
 * clock: the connection limit, the token buckets' arithmetic (burst,
 * refill, a lowered burst, a clock read earlier by another loop), the
 * coldest idle entry evicted and never one holding connections, a full
 * table (refused with limits, untracked without), IPv6 aggregation to
 * ipv6_prefix, IPv4-mapped sources as whole /32s, adoption over the
 * limit, the log throttle, and a random run against a reference model. */
#include "persource.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

static void addr(const char *text, uint8_t a[16])
{
	struct in_addr v4;

	if (inet_pton(AF_INET, text, &v4) == 1) {
		memset(a, 0, 10);
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &v4, 4);
	} else if (inet_pton(AF_INET6, text, a) != 1) {
		tap_diag("bad address in the test: %s", text);
	}
}

static struct persource *table(uint32_t size, uint32_t maxc, uint32_t crate, uint32_t cburst,
			       uint32_t drate, uint32_t dburst, unsigned prefix)
{
	struct persource_limits l = { maxc, crate, cburst, drate, dburst, prefix };
	struct persource *t = NULL;

	if (persource_create(&t, size) < 0)
		tap_diag("persource_create(%u) failed", size);
	persource_set_limits(t, &l);
	return t;
}

static enum persource_verdict open1(struct persource *t, const char *src, uint64_t now,
				    uint32_t *slot)
{
	struct persource_refusal r;
	uint8_t a[16];

	addr(src, a);
	return persource_conn_open(t, a, now, slot, &r);
}

static uint32_t count(struct persource *t, const char *src)
{
	uint8_t a[16];

	addr(src, a);
	return persource_count(t, a);
}

static void test_connections(void)
{
	struct persource *t = table(64, 3, 0, 1, 0, 1, 64);
	uint32_t s[4], other;
	enum persource_verdict v;
	int ok = 1;

	for (int i = 0; i < 3; i++)
		ok &= open1(t, "192.0.2.1", 1000, &s[i]) == PS_PASS && s[i] != PERSOURCE_NONE;
	v = open1(t, "192.0.2.1", 1000, &s[3]);
	tap_ok(ok && v == PS_CONNECTIONS && s[3] == PERSOURCE_NONE && count(t, "192.0.2.1") == 3,
	       "connections: 3 admitted, the 4th refused (PS_CONNECTIONS), count 3");
	tap_ok(open1(t, "192.0.2.2", 1000, &other) == PS_PASS && count(t, "192.0.2.2") == 1,
	       "connections: another source is not affected");
	persource_conn_close(t, s[0]);
	tap_ok(open1(t, "192.0.2.1", 1000, &s[3]) == PS_PASS && s[3] == s[1] &&
	       count(t, "192.0.2.1") == 3,
	       "connections: one closed, one more admitted, the same slot");
	for (int i = 1; i < 4; i++)
		persource_conn_close(t, s[i]);
	persource_conn_close(t, PERSOURCE_NONE);
	persource_conn_close(t, s[1]);       /* once too often: never below 0 */
	tap_ok(count(t, "192.0.2.1") == 0, "connections: all closed, count 0 (no underflow)");
	/* the limit turned on by a reload is exact for connections already open */
	struct persource_limits off = { 0, 0, 1, 0, 1, 64 }, on = { 2, 0, 1, 0, 1, 64 };

	persource_set_limits(t, &off);
	for (int i = 0; i < 4; i++)
		ok &= open1(t, "192.0.2.9", 1000, &s[i]) == PS_PASS;
	persource_set_limits(t, &on);
	v = open1(t, "192.0.2.9", 1000, &other);
	for (int i = 0; i < 3; i++)
		persource_conn_close(t, s[i]);
	tap_ok(ok && v == PS_CONNECTIONS && open1(t, "192.0.2.9", 1000, &other) == PS_PASS &&
	       open1(t, "192.0.2.9", 1000, &other) == PS_CONNECTIONS,
	       "connections: 4 open without a limit, limit 2 on: refused until 3 closed, then "
	       "1 more admitted, not 2");
	persource_destroy(t);
}

static void test_conn_rate(void)
{
	struct persource *t = table(64, 0, 10, 5, 0, 1, 64);
	uint32_t s;
	unsigned passed = 0;
	enum persource_verdict v;

	/* burst 5 at t=0 */
	for (int i = 0; i < 8; i++)
		passed += open1(t, "198.51.100.7", 10000, &s) == PS_PASS;
	tap_ok(passed == 5, "rate: a full bucket admits the burst (5 of 8 at once), got %u", passed);
	v = open1(t, "198.51.100.7", 10099, &s);
	tap_ok(v == PS_RATE, "rate: 99 ms later (0.99 token at 10/s) still refused");
	tap_ok(open1(t, "198.51.100.7", 10100, &s) == PS_PASS, "rate: 100 ms later one more");
	/* a clock read earlier by another loop: no refill, and time never goes back */
	tap_ok(open1(t, "198.51.100.7", 10050, &s) == PS_RATE &&
	       open1(t, "198.51.100.7", 10199, &s) == PS_RATE &&
	       open1(t, "198.51.100.7", 10200, &s) == PS_PASS,
	       "rate: an earlier clock adds nothing and does not move the refill back");
	/* a long pause fills to the burst, not beyond */
	passed = 0;
	for (int i = 0; i < 20; i++)
		passed += open1(t, "198.51.100.7", 10000000, &s) == PS_PASS;
	tap_ok(passed == 5, "rate: after 2.7 hours the bucket holds the burst, 5, got %u", passed);
	/* steady: over 10 s at one attempt per ms, admitted = burst + rate x time */
	passed = 0;
	for (uint64_t ms = 20000000; ms <= 20010000; ms++)
		passed += open1(t, "198.51.100.8", ms, &s) == PS_PASS;
	tap_ok(passed == 5 + 100, "rate: 10,001 attempts over 10 s at 10/s burst 5: %u admitted "
	       "(5 + 100)", passed);
	/* lowering the burst clips a full bucket */
	struct persource_limits l = { 0, 10, 2, 0, 1, 64 };

	persource_set_limits(t, &l);
	passed = 0;
	for (int i = 0; i < 10; i++)
		passed += open1(t, "198.51.100.9", 30000000, &s) == PS_PASS;
	tap_ok(passed == 2, "rate: burst lowered to 2 by a reload: 2 admitted at once, got %u",
	       passed);
	/* a refusal by rate does not count a connection */
	tap_ok(count(t, "198.51.100.9") == 2, "rate: refused attempts hold no count");
	persource_destroy(t);
}

static void test_dgram(void)
{
	struct persource *t = table(64, 0, 0, 1, 1000, 64, 64);
	struct persource_refusal r;
	uint8_t a[16];
	unsigned passed = 0;

	addr("203.0.113.5", a);
	tap_ok(persource_dgram_metered(t), "datagrams: metered with datagram_rate on");
	tap_ok(persource_dgram(t, a, 64, 5000, &r) == PS_PASS &&
	       persource_dgram(t, a, 1, 5000, &r) == PS_RATE && r.limit == 1000 && r.burst == 64,
	       "datagrams: a GRO receive of 64 empties the bucket of 64, the next is refused");
	tap_ok(persource_dgram(t, a, 2, 5001, &r) == PS_RATE &&
	       persource_dgram(t, a, 1, 5001, &r) == PS_PASS,
	       "datagrams: 1 ms at 1000/s: 1 token, a receive of 2 refused whole, of 1 admitted");
	for (uint64_t ms = 6000; ms < 7000; ms++)
		for (int k = 0; k < 3; k++)
			passed += persource_dgram(t, a, 1, ms, &r) == PS_PASS;
	tap_ok(passed == 64 + 999, "datagrams: 3 per ms for 1 s at 1000/s burst 64: %u admitted "
	       "(64 + 999)", passed);
	struct persource_limits off = { 0, 0, 1, 0, 64, 64 };

	persource_set_limits(t, &off);
	tap_ok(!persource_dgram_metered(t) && persource_dgram(t, a, 1000, 7000, &r) == PS_PASS,
	       "datagrams: datagram_rate 0: not metered, everything passes");
	persource_destroy(t);
}

static void test_eviction(void)
{
	struct persource *t = table(16, 0, 0, 1, 0, 1, 64);
	struct persource_limits lim = { 1000, 0, 1, 0, 1, 64 };
	uint32_t busy[8], s;
	char src[32];
	int ok = 1;

	/* 8 sources hold a connection each; 8 more come and go */
	for (int i = 0; i < 8; i++) {
		snprintf(src, sizeof(src), "10.0.0.%d", i);
		ok &= open1(t, src, 100, &busy[i]) == PS_PASS;
	}
	for (int i = 0; i < 8; i++) {
		snprintf(src, sizeof(src), "10.0.1.%d", i);
		ok &= open1(t, src, 100 + (uint64_t)i, &s) == PS_PASS;
		persource_conn_close(t, s);
	}
	tap_ok(ok && persource_used(t) == 16 && persource_evictions(t) == 0,
	       "eviction: 16 sources fill 16 entries, no eviction");
	/* touch 10.0.1.0 again: 10.0.1.1 is now the coldest idle entry */
	ok &= open1(t, "10.0.1.0", 200, &s) == PS_PASS;
	persource_conn_close(t, s);
	ok &= open1(t, "10.0.2.0", 300, &s) == PS_PASS;
	persource_conn_close(t, s);
	tap_ok(ok && persource_evictions(t) == 1 && count(t, "10.0.2.0") == 0 &&
	       persource_used(t) == 16,
	       "eviction: a 17th source evicts one idle entry (counted), occupancy stays 16");
	/* 10.0.1.1 was evicted (its state forgotten), 10.0.1.0 was not:
	 * a fresh lookup of 10.0.1.1 evicts again, of 10.0.1.0 does not */
	ok = open1(t, "10.0.1.0", 400, &s) == PS_PASS;
	persource_conn_close(t, s);
	tap_ok(ok && persource_evictions(t) == 1, "eviction: the recently used entry was kept");
	ok = open1(t, "10.0.1.1", 400, &s) == PS_PASS;
	persource_conn_close(t, s);
	tap_ok(ok && persource_evictions(t) == 2, "eviction: the coldest one was the one evicted");
	/* 1000 more sources churn through: never a busy entry */
	for (int i = 0; i < 1000; i++) {
		snprintf(src, sizeof(src), "10.1.%d.%d", i / 256, i % 256);
		open1(t, src, 500 + (uint64_t)i, &s);
		persource_conn_close(t, s);
	}
	ok = 1;
	for (int i = 0; i < 8; i++) {
		snprintf(src, sizeof(src), "10.0.0.%d", i);
		ok &= count(t, src) == 1;
	}
	tap_ok(ok && persource_used(t) == 16 && persource_evictions(t) == 1002,
	       "eviction: 1000 sources later the 8 busy sources still count 1 each "
	       "(evictions %llu)", (unsigned long long)persource_evictions(t));
	/* every entry busy: without limits a new source is admitted untracked */
	for (int i = 0; i < 8; i++) {
		snprintf(src, sizeof(src), "10.2.0.%d", i);
		open1(t, src, 2000, &s);
	}
	tap_ok(open1(t, "10.3.0.1", 2000, &s) == PS_PASS && s == PERSOURCE_NONE,
	       "table full, no limit on: a new source is admitted, untracked");
	persource_conn_close(t, s);
	persource_set_limits(t, &lim);
	tap_ok(open1(t, "10.3.0.1", 2000, &s) == PS_TABLE_FULL && s == PERSOURCE_NONE,
	       "table full, a limit on: a new source is refused (PS_TABLE_FULL)");
	tap_ok(open1(t, "10.0.0.3", 2000, &s) == PS_PASS && count(t, "10.0.0.3") == 2,
	       "table full: a source already in it is still served and counted");
	persource_destroy(t);
}

static void test_ipv6(void)
{
	struct persource *t = table(64, 2, 0, 1, 0, 1, 64);
	uint32_t s;
	uint8_t a[16], k[16], want[16];
	int ok;

	ok = open1(t, "2001:db8:1:2::1", 0, &s) == PS_PASS &&
	     open1(t, "2001:db8:1:2:ffff::9", 0, &s) == PS_PASS &&
	     open1(t, "2001:db8:1:2:abcd::", 0, &s) == PS_CONNECTIONS &&
	     open1(t, "2001:db8:1:3::1", 0, &s) == PS_PASS;
	tap_ok(ok && count(t, "2001:db8:1:2::77") == 2,
	       "ipv6: two addresses of one /64 are one source (limit 2), the next /64 another");
	struct persource_limits l = { 2, 0, 1, 0, 1, 128 };

	persource_set_limits(t, &l);
	tap_ok(open1(t, "2001:db8:1:2::1", 0, &s) == PS_PASS &&
	       open1(t, "2001:db8:1:2::2", 0, &s) == PS_PASS,
	       "ipv6: prefix 128 by reload: each address is a source of its own");
	addr("2001:db8:abcd:ef12:3456::1", a);
	persource_key(a, 36, k);
	addr("2001:db8:a000::", want);
	tap_ok(memcmp(k, want, 16) == 0, "ipv6: a key masked to /36 (partial byte)");
	addr("192.0.2.77", a);
	persource_key(a, 8, k);
	tap_ok(memcmp(k, a, 16) == 0, "ipv4-mapped: never masked (a whole /32), whatever ipv6_prefix");
	/* v4-mapped sources are separate /32s even at prefix 1 */
	struct persource_limits l1 = { 1, 0, 1, 0, 1, 1 };

	persource_set_limits(t, &l1);
	tap_ok(open1(t, "192.0.2.1", 0, &s) == PS_PASS && open1(t, "192.0.2.2", 0, &s) == PS_PASS &&
	       open1(t, "192.0.2.1", 0, &s) == PS_CONNECTIONS,
	       "ipv4: each address its own source at ipv6_prefix 1, limit 1 each");
	persource_destroy(t);
}

static void test_adopt_and_log(void)
{
	struct persource *t = table(16, 1, 0, 1, 0, 1, 64);
	struct persource_refusal r;
	uint8_t a[16];
	uint32_t s;
	int logged = 0, ok;

	addr("192.0.2.50", a);
	ok = persource_conn_adopt(t, a, 0) != PERSOURCE_NONE &&
	     persource_conn_adopt(t, a, 0) != PERSOURCE_NONE;
	tap_ok(ok && persource_count(t, a) == 2, "adopt: counted over the limit (2 at limit 1)");
	for (int i = 0; i < 100; i++) {
		ok = persource_conn_open(t, a, 1000 + (uint64_t)i * 100, &s, &r) == PS_CONNECTIONS;
		logged += ok && r.log;
	}
	tap_ok(logged == 1, "log: 100 refusals within 10 s, 1 to log, got %d", logged);
	ok = persource_conn_open(t, a, 1000 + PERSOURCE_LOG_INTERVAL_MS, &s, &r) == PS_CONNECTIONS;
	tap_ok(ok && r.log && r.unlogged == 99 && r.limit == 1,
	       "log: a minute later one more, with the 99 not logged");
	tap_ok(persource_create(&t, 0) == -EINVAL && t == NULL, "create: size 0 refused");
	persource_destroy(NULL);
	tap_ok(persource_conn_open(NULL, a, 0, &s, &r) == PS_PASS && s == PERSOURCE_NONE &&
	       !persource_dgram_metered(NULL), "no table: everything passes, nothing counted");
}

/* A random run against a reference: counts per source never above the
 * limit, and equal to the model's; never more entries than the table. */
static void test_random(void)
{
	enum { SRC = 200, OPS = 200000, MAXC = 3 };
	struct persource *t = table(64, MAXC, 0, 1, 0, 1, 64);
	static uint32_t held[SRC][MAXC];
	unsigned nheld[SRC] = { 0 }, wrong = 0, full = 0;
	uint8_t a[16];

	srand(13);
	for (int op = 0; op < OPS; op++) {
		unsigned i = (unsigned)rand() % SRC;
		uint32_t s;
		struct persource_refusal r;

		memset(a, 0, 10);
		a[10] = a[11] = 0xff;
		a[12] = 10, a[13] = 9, a[14] = (uint8_t)(i >> 8), a[15] = (uint8_t)i;
		if (rand() % 2 && nheld[i]) {
			persource_conn_close(t, held[i][--nheld[i]]);
			continue;
		}
		enum persource_verdict v = persource_conn_open(t, a, (uint64_t)op, &s, &r);

		if (v == PS_PASS)
			held[i][nheld[i]++] = s;
		else if (v == PS_TABLE_FULL)
			full++;
		else if (v != PS_CONNECTIONS || nheld[i] != MAXC)
			wrong++;
		if (persource_count(t, a) != nheld[i] || persource_used(t) > 64)
			wrong++;
	}
	tap_ok(wrong == 0, "random: 200,000 opens and closes of 200 sources on 64 entries: counts "
	       "exact, never above %d, %u refused for a full table", MAXC, full);
	persource_destroy(t);
}

int main(void)
{
	test_connections();
	test_conn_rate();
	test_dgram();
	test_eviction();
	test_ipv6();
	test_adopt_and_log();
	test_random();
	return tap_done();
}
