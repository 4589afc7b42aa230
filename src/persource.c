/* persource.c - the per-source table: connection counts and token
 * buckets under one lock; see persource.h */
#include "persource.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#include "log.h"

#define MILLI 1000u                 /* tokens are kept in thousandths */
#define TOKENS_FULL UINT32_MAX      /* a bucket never drawn from: full, whatever its size */

struct ps_entry {
	uint8_t key[16];
	uint32_t hnext;             /* hash chain: next slot + 1, 0 = end */
	uint32_t prev, next;        /* idle list (no open connection), PERSOURCE_NONE at ends */
	uint32_t conns;             /* open TCP connections */
	uint32_t conn_tokens;       /* thousandths of a token, or TOKENS_FULL */
	uint32_t dgram_tokens;
	uint32_t unlogged;          /* refusals since log_ms not logged */
	uint64_t conn_ms;           /* last refill of each bucket */
	uint64_t dgram_ms;
	uint64_t log_ms;            /* last refusal logged; 0: never */
};

struct persource {
	pthread_mutex_t lock;
	struct persource_limits lim;
	uint64_t seed[2];           /* hash key: random at start-up */
	uint32_t size;              /* entries */
	uint32_t mask;              /* buckets - 1 (a power of two >= size) */
	uint32_t taken;             /* entries ever taken (the first taken free ones) */
	uint32_t idle_head, idle_tail;
	_Atomic uint32_t used;      /* entries in use (for the metrics) */
	_Atomic uint64_t evictions;
	_Atomic uint32_t dgram_rate; /* lim.datagram_rate, read without the lock */
	size_t maplen;
	uint32_t *bucket;           /* mask + 1 heads: slot + 1, 0 = empty */
	struct ps_entry *e;         /* size entries */
};

/* ---- keys and hashing ---- */

static bool is_v4(const uint8_t a[16])
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return memcmp(a, mapped, sizeof(mapped)) == 0;
}

void persource_key(const uint8_t a[16], unsigned ipv6_prefix, uint8_t key[16])
{
	memcpy(key, a, 16);
	if (is_v4(a) || ipv6_prefix >= 128)
		return;
	for (unsigned i = ipv6_prefix / 8; i < 16; i++)
		key[i] = i == ipv6_prefix / 8 ? key[i] & (uint8_t)(0xff00u >> (ipv6_prefix % 8)) : 0;
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

/* Keyed with a random seed: sources cannot be chosen to share a chain
 * without knowing it. */
static uint32_t hash(const struct persource *t, const uint8_t key[16])
{
	uint64_t hi, lo;

	memcpy(&hi, key, 8);
	memcpy(&lo, key + 8, 8);
	return (uint32_t)mix(mix(hi ^ t->seed[0]) ^ lo ^ t->seed[1]) & t->mask;
}

/* ---- the idle list ---- */

static void idle_remove(struct persource *t, uint32_t i)
{
	struct ps_entry *x = &t->e[i];

	if (x->prev == PERSOURCE_NONE)
		t->idle_head = x->next;
	else
		t->e[x->prev].next = x->next;
	if (x->next == PERSOURCE_NONE)
		t->idle_tail = x->prev;
	else
		t->e[x->next].prev = x->prev;
	x->prev = x->next = PERSOURCE_NONE;
}

static void idle_push(struct persource *t, uint32_t i)
{
	struct ps_entry *x = &t->e[i];

	x->next = PERSOURCE_NONE;
	x->prev = t->idle_tail;
	if (t->idle_tail == PERSOURCE_NONE)
		t->idle_head = i;
	else
		t->e[t->idle_tail].next = i;
	t->idle_tail = i;
}

/* ---- the table ---- */

int persource_create(struct persource **out, uint32_t size)
{
	struct persource *t;
	uint32_t buckets = 2;      /* even: the entries after the index stay 8-aligned */
	size_t len;
	void *mem;
	int err;

	*out = NULL;
	if (!size)
		return -EINVAL;
	while (buckets < size)
		buckets <<= 1;
	len = sizeof(*t) + (size_t)buckets * sizeof(uint32_t) + (size_t)size * sizeof(struct ps_entry);
	/* zero pages: the index is empty (0) and costs nothing until used */
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (mem == MAP_FAILED) {
		err = errno;
		log_errno(LOG_ERR, err, "mmap of the per-source table (%u entries, %zu bytes)",
			  size, len);
		return -err;
	}
	t = mem;
	t->maplen = len;
	t->size = size;
	t->mask = buckets - 1;
	t->bucket = (uint32_t *)(t + 1);
	t->e = (struct ps_entry *)(t->bucket + buckets);
	t->idle_head = t->idle_tail = PERSOURCE_NONE;
	if (getrandom(t->seed, sizeof(t->seed), GRND_NONBLOCK) != (ssize_t)sizeof(t->seed)) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);     /* better than a constant */
		t->seed[0] = mix((uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)t);
		t->seed[1] = mix((uint64_t)ts.tv_sec ^ t->seed[0]);
	}
	err = pthread_mutex_init(&t->lock, NULL);
	if (err) {
		log_errno(LOG_ERR, err, "pthread_mutex_init (per-source table)");
		munmap(mem, len);
		return -err;
	}
	t->lim.ipv6_prefix = 64;
	*out = t;
	return 0;
}

void persource_destroy(struct persource *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	munmap(t, t->maplen);
}

void persource_set_limits(struct persource *t, const struct persource_limits *l)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	t->lim = *l;
	if (t->lim.ipv6_prefix < 1 || t->lim.ipv6_prefix > 128)
		t->lim.ipv6_prefix = 64;
	atomic_store_explicit(&t->dgram_rate, l->datagram_rate, memory_order_relaxed);
	pthread_mutex_unlock(&t->lock);
}

void persource_limits_from_config(struct persource_limits *l, const struct echod_config *cfg)
{
	l->max_connections = cfg->per_source.max_connections;
	l->connection_rate = cfg->per_source.connection_rate;
	l->connection_burst = cfg->per_source.connection_burst;
	l->datagram_rate = cfg->per_source.datagram_rate;
	l->datagram_burst = cfg->per_source.datagram_burst;
	l->ipv6_prefix = cfg->per_source.ipv6_prefix;
}

void persource_apply_config(struct persource *t, const struct echod_config *cfg)
{
	struct persource_limits l;

	persource_limits_from_config(&l, cfg);
	persource_set_limits(t, &l);
}

static bool any_limit(const struct persource *t)
{
	return t->lim.max_connections || t->lim.connection_rate || t->lim.datagram_rate;
}

/* The entry of key, or PERSOURCE_NONE. */
static uint32_t find(const struct persource *t, const uint8_t key[16], uint32_t h)
{
	for (uint32_t s = t->bucket[h]; s; s = t->e[s - 1].hnext)
		if (memcmp(t->e[s - 1].key, key, 16) == 0)
			return s - 1;
	return PERSOURCE_NONE;
}

static void unhash(struct persource *t, uint32_t i)
{
	uint32_t *p = &t->bucket[hash(t, t->e[i].key)];

	while (*p && *p != i + 1)
		p = &t->e[*p - 1].hnext;
	if (*p)
		*p = t->e[i].hnext;
}

/* The entry of a's source, taken if it has none (a never-used entry, else
 * the coldest idle one); PERSOURCE_NONE when every entry holds connections.
 * Under the lock.  A found idle entry moves to the idle list's tail. */
static uint32_t lookup(struct persource *t, const uint8_t a[16], uint64_t now_ms)
{
	uint8_t key[16];
	uint32_t h, i;
	struct ps_entry *x;

	persource_key(a, t->lim.ipv6_prefix, key);
	h = hash(t, key);
	i = find(t, key, h);
	if (i != PERSOURCE_NONE) {
		if (!t->e[i].conns && t->idle_tail != i) {
			idle_remove(t, i);
			idle_push(t, i);
		}
		return i;
	}
	if (t->taken < t->size) {
		i = t->taken++;
		atomic_store_explicit(&t->used, t->taken, memory_order_relaxed);
	} else if (t->idle_head != PERSOURCE_NONE) {
		i = t->idle_head;
		idle_remove(t, i);
		unhash(t, i);
		atomic_store_explicit(&t->evictions,
				      atomic_load_explicit(&t->evictions, memory_order_relaxed) + 1,
				      memory_order_relaxed);
	} else {
		return PERSOURCE_NONE;
	}
	x = &t->e[i];
	memcpy(x->key, key, 16);
	x->conns = 0;
	x->conn_tokens = x->dgram_tokens = TOKENS_FULL;
	x->conn_ms = x->dgram_ms = now_ms;
	x->log_ms = 0;
	x->unlogged = 0;
	x->hnext = t->bucket[h];
	t->bucket[h] = i + 1;
	idle_push(t, i);
	return i;
}

/* Take n tokens from a bucket of rate per second holding at most burst,
 * last refilled at *at: false (nothing taken) if it holds fewer. */
static bool bucket_take(uint32_t *tokens, uint64_t *at, uint64_t now_ms, uint32_t rate,
			uint32_t burst, unsigned n)
{
	uint64_t cap = (uint64_t)burst * MILLI, have = *tokens, want = (uint64_t)n * MILLI;

	if (have > cap)
		have = cap;             /* full, or the burst was lowered by a reload */
	if (now_ms > *at) {
		uint64_t dt = now_ms - *at;

		/* rate thousandths of a token per ms; dt capped: no overflow */
		have = dt > cap / rate ? cap : have + dt * rate;
		if (have > cap)
			have = cap;
		*at = now_ms;          /* a clock read earlier by another loop never goes back */
	}
	if (have < want) {
		*tokens = (uint32_t)have;
		return false;
	}
	*tokens = (uint32_t)(have - want);
	return true;
}

/* Fill r for a refusal of entry i's source (or of no entry). */
static void refusal(struct persource *t, uint32_t i, uint64_t now_ms, uint32_t limit,
		    uint32_t burst, struct persource_refusal *r)
{
	r->log = false;
	r->limit = limit;
	r->burst = burst;
	r->unlogged = 0;
	if (i == PERSOURCE_NONE)
		return;
	struct ps_entry *x = &t->e[i];

	if (!x->log_ms || now_ms - x->log_ms >= PERSOURCE_LOG_INTERVAL_MS) {
		r->log = true;
		r->unlogged = x->unlogged;
		x->unlogged = 0;
		x->log_ms = now_ms ? now_ms : 1;
	} else {
		x->unlogged++;
	}
}

enum persource_verdict persource_conn_open(struct persource *t, const uint8_t a[16],
					   uint64_t now_ms, uint32_t *slot,
					   struct persource_refusal *r)
{
	enum persource_verdict v = PS_PASS;
	const struct persource_limits *l;
	struct ps_entry *x;
	uint32_t i;

	*slot = PERSOURCE_NONE;
	if (!t)
		return PS_PASS;
	pthread_mutex_lock(&t->lock);
	l = &t->lim;
	i = lookup(t, a, now_ms);
	if (i == PERSOURCE_NONE) {
		/* every entry holds connections: refused only if a limit needs the entry */
		if (any_limit(t)) {
			v = PS_TABLE_FULL;
			refusal(t, i, now_ms, t->size, 0, r);
		}
		goto out;
	}
	x = &t->e[i];
	if (l->max_connections && x->conns >= l->max_connections) {
		v = PS_CONNECTIONS;
		refusal(t, i, now_ms, l->max_connections, 0, r);
	} else if (l->connection_rate &&
		   !bucket_take(&x->conn_tokens, &x->conn_ms, now_ms, l->connection_rate,
				l->connection_burst, 1)) {
		v = PS_RATE;
		refusal(t, i, now_ms, l->connection_rate, l->connection_burst, r);
	} else {
		if (!x->conns++)
			idle_remove(t, i);
		*slot = i;
	}
out:
	pthread_mutex_unlock(&t->lock);
	return v;
}

uint32_t persource_conn_adopt(struct persource *t, const uint8_t a[16], uint64_t now_ms)
{
	uint32_t i;

	if (!t)
		return PERSOURCE_NONE;
	pthread_mutex_lock(&t->lock);
	i = lookup(t, a, now_ms);
	if (i != PERSOURCE_NONE && !t->e[i].conns++)
		idle_remove(t, i);
	pthread_mutex_unlock(&t->lock);
	return i;
}

void persource_conn_close(struct persource *t, uint32_t slot)
{
	if (!t || slot == PERSOURCE_NONE || slot >= t->size)
		return;
	pthread_mutex_lock(&t->lock);
	if (t->e[slot].conns && !--t->e[slot].conns)
		idle_push(t, slot);
	pthread_mutex_unlock(&t->lock);
}

bool persource_dgram_metered(const struct persource *t)
{
	return t && atomic_load_explicit(&t->dgram_rate, memory_order_relaxed);
}

enum persource_verdict persource_dgram(struct persource *t, const uint8_t a[16], unsigned n,
				       uint64_t now_ms, struct persource_refusal *r)
{
	enum persource_verdict v = PS_PASS;
	const struct persource_limits *l;
	uint32_t i;

	if (!t)
		return PS_PASS;
	pthread_mutex_lock(&t->lock);
	l = &t->lim;
	if (!l->datagram_rate)
		goto out;
	i = lookup(t, a, now_ms);
	if (i == PERSOURCE_NONE) {
		v = PS_TABLE_FULL;
		refusal(t, i, now_ms, t->size, 0, r);
	} else if (!bucket_take(&t->e[i].dgram_tokens, &t->e[i].dgram_ms, now_ms,
				l->datagram_rate, l->datagram_burst, n)) {
		v = PS_RATE;
		refusal(t, i, now_ms, l->datagram_rate, l->datagram_burst, r);
	}
out:
	pthread_mutex_unlock(&t->lock);
	return v;
}

uint32_t persource_used(const struct persource *t)
{
	return t ? atomic_load_explicit(&t->used, memory_order_relaxed) : 0;
}

uint32_t persource_size(const struct persource *t)
{
	return t ? t->size : 0;
}

uint64_t persource_evictions(const struct persource *t)
{
	return t ? atomic_load_explicit(&t->evictions, memory_order_relaxed) : 0;
}

uint32_t persource_count(struct persource *t, const uint8_t a[16])
{
	uint8_t key[16];
	uint32_t i, n = 0;

	if (!t)
		return 0;
	pthread_mutex_lock(&t->lock);
	persource_key(a, t->lim.ipv6_prefix, key);
	i = find(t, key, hash(t, key));
	if (i != PERSOURCE_NONE)
		n = t->e[i].conns;
	pthread_mutex_unlock(&t->lock);
	return n;
}
