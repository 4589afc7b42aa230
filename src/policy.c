/* policy.c - the allow and deny lists: prefixes as text, the compiled
 * lookup (sorted keys per prefix length, most specific first) and its
 * counted references; see policy.h */
#include "policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An address or a masked prefix as 128 bits, most significant first; an
 * IPv4 address in the top 32 bits of hi. */
struct key {
	uint64_t hi, lo;
};

/* The keys of one prefix length: keys[start .. start + count), sorted. */
struct run {
	uint32_t start, count;
	uint8_t len;
};

/* One family's prefixes. */
struct family {
	unsigned nruns;             /* prefix lengths present, longest first */
	struct run runs[129];
	struct key *keys;
	uint8_t *deny;              /* per key: 1 deny, 0 allow */
};

struct policy {
	_Atomic unsigned refs;
	bool has_allow;             /* no match: denied if there is an allow list */
	struct family v4, v6;
	struct policy *trusted;     /* proxy_protocol.trusted as an allow list, or NULL;
				       owned (no reference of its own) */
};

static const uint8_t mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static bool is_mapped(const uint8_t a[16])
{
	return memcmp(a, mapped_prefix, sizeof(mapped_prefix)) == 0;
}

/* ---- prefixes as text ---- */

/* Zero every bit of a (16 bytes) after the first len. */
static void mask_bytes(uint8_t a[16], unsigned len)
{
	for (unsigned i = 0; i < 16; i++) {
		unsigned bits = len > i * 8 ? len - i * 8 : 0;

		if (bits < 8)
			a[i] &= (uint8_t)(0xff00u >> bits);
	}
}

int policy_prefix_parse(const char *text, struct config_prefix *p, char *why,
			size_t why_size)
{
	char addr[POLICY_PREFIX_TEXT_MAX];
	const char *slash = strchr(text, '/');
	size_t alen = slash ? (size_t)(slash - text) : strlen(text);
	struct in_addr v4;
	unsigned max, len, off;
	uint8_t masked[16];

	memset(p, 0, sizeof(*p));
	if (alen >= sizeof(addr)) {
		snprintf(why, why_size, "is not an IPv4 or IPv6 prefix");
		return -EINVAL;
	}
	memcpy(addr, text, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, &v4) == 1) {
		memcpy(p->addr, mapped_prefix, sizeof(mapped_prefix));
		memcpy(p->addr + 12, &v4, 4);
		max = 32;
		off = 96;
	} else if (inet_pton(AF_INET6, addr, p->addr) == 1) {
		max = 128;
		off = 0;
	} else {
		snprintf(why, why_size, "is not an IPv4 or IPv6 prefix");
		return -EINVAL;
	}
	len = max;
	if (slash) {
		const char *d = slash + 1;

		if (!*d || strlen(d) > 3 || strspn(d, "0123456789") != strlen(d) ||
		    (len = (unsigned)atoi(d)) > max) {
			snprintf(why, why_size, "has a prefix length out of range 0..%u", max);
			return -EINVAL;
		}
	}
	/* ::ffff:a.b.c.d/N (N >= 96) is the IPv4 prefix a.b.c.d/(N - 96) */
	p->len = (uint8_t)(len + off);
	memcpy(masked, p->addr, 16);
	mask_bytes(masked, p->len);
	if (memcmp(masked, p->addr, 16)) {
		struct config_prefix want = *p;
		char shown[POLICY_PREFIX_TEXT_MAX];

		memcpy(want.addr, masked, 16);
		policy_prefix_format(&want, shown, sizeof(shown));
		snprintf(why, why_size, "has host bits set (the prefix is %s)", shown);
		return -EINVAL;
	}
	return 0;
}

void policy_prefix_format(const struct config_prefix *p, char *buf, size_t size)
{
	char text[INET6_ADDRSTRLEN];

	if (is_mapped(p->addr) && p->len >= 96) {
		inet_ntop(AF_INET, p->addr + 12, text, sizeof(text));
		snprintf(buf, size, "%s/%u", text, p->len - 96u);
	} else {
		inet_ntop(AF_INET6, p->addr, text, sizeof(text));
		snprintf(buf, size, "%s/%u", text, p->len);
	}
}

bool policy_source(const struct sockaddr *sa, socklen_t len, uint8_t a[16], uint16_t *port)
{
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		memcpy(a, mapped_prefix, sizeof(mapped_prefix));
		memcpy(a + 12, &sin->sin_addr, 4);
		*port = ntohs(sin->sin_port);
		return true;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		memcpy(a, &sin6->sin6_addr, 16);
		*port = ntohs(sin6->sin6_port);
		return true;
	}
	return false;
}

void policy_source_text(const uint8_t a[16], char *buf, size_t size)
{
	char text[INET6_ADDRSTRLEN];
	bool v4 = is_mapped(a);

	if (!inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? a + 12 : a, text, sizeof(text)))
		snprintf(text, sizeof(text), "?");
	snprintf(buf, size, v4 ? "%s" : "[%s]", text);
}

/* ---- keys ---- */

static uint64_t be64(const uint8_t *b)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

/* Address a (16 bytes) as a key of its family; *v4 says which. */
static struct key key_of(const uint8_t a[16], bool *v4)
{
	struct key k;

	*v4 = is_mapped(a);
	if (*v4) {
		k.hi = (uint64_t)(((uint32_t)a[12] << 24) | ((uint32_t)a[13] << 16) |
				  ((uint32_t)a[14] << 8) | a[15]) << 32;
		k.lo = 0;
	} else {
		k.hi = be64(a);
		k.lo = be64(a + 8);
	}
	return k;
}

static struct key key_mask(struct key k, unsigned len)
{
	if (len == 0)
		return (struct key){ 0, 0 };
	if (len < 64)
		return (struct key){ k.hi & ~(UINT64_MAX >> len), 0 };
	if (len == 64)
		return (struct key){ k.hi, 0 };
	if (len < 128)
		return (struct key){ k.hi, k.lo & ~(UINT64_MAX >> (len - 64)) };
	return k;
}

static int key_cmp(const struct key *a, const struct key *b)
{
	if (a->hi != b->hi)
		return a->hi < b->hi ? -1 : 1;
	if (a->lo != b->lo)
		return a->lo < b->lo ? -1 : 1;
	return 0;
}

/* ---- building ---- */

struct entry {
	struct key k;
	uint8_t len;                /* within the family: 0..32 or 0..128 */
	uint8_t deny;
};

/* Longest first, then by key, then deny first. */
static int entry_cmp(const void *x, const void *y)
{
	const struct entry *a = x, *b = y;
	int c;

	if (a->len != b->len)
		return a->len > b->len ? -1 : 1;
	c = key_cmp(&a->k, &b->k);
	if (c)
		return c;
	return (int)b->deny - (int)a->deny;
}

static void add_entries(struct entry *v4, unsigned *n4, struct entry *v6, unsigned *n6,
			const struct config_prefix *p, unsigned n, uint8_t deny)
{
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *a = p[i].addr;
		unsigned len = p[i].len;
		bool is4;

		if (is_mapped(a) && len >= 96) {
			struct key k = key_of(a, &is4);

			v4[(*n4)++] = (struct entry){ key_mask(k, len - 96), (uint8_t)(len - 96), deny };
		} else {        /* IPv6, also a prefix shorter than /96 over ::ffff:0:0/96 */
			struct key k = { be64(a), be64(a + 8) };

			v6[(*n6)++] = (struct entry){ key_mask(k, len), (uint8_t)len, deny };
		}
	}
}

/* Sort, merge duplicates (deny wins a tie), index by length; the keys go
 * to keys/deny from slot 0.  Returns the keys kept. */
static unsigned compile(struct family *f, struct entry *e, unsigned n, struct key *keys,
			uint8_t *deny)
{
	unsigned kept = 0;

	qsort(e, n, sizeof(*e), entry_cmp);
	f->keys = keys;
	f->deny = deny;
	f->nruns = 0;
	for (unsigned i = 0; i < n; i++) {
		if (kept && e[i].len == e[i - 1].len && !key_cmp(&e[i].k, &e[i - 1].k))
			continue;       /* the first of equals is the deny, if any */
		if (!f->nruns || f->runs[f->nruns - 1].len != e[i].len)
			f->runs[f->nruns++] = (struct run){ kept, 0, e[i].len };
		keys[kept] = e[i].k;
		deny[kept] = e[i].deny;
		f->runs[f->nruns - 1].count++;
		kept++;
	}
	return kept;
}

int policy_build(struct policy **out, const struct config_prefix *allow, unsigned n_allow,
		 const struct config_prefix *deny, unsigned n_deny)
{
	unsigned n = n_allow + n_deny, n4 = 0, n6 = 0, k4;
	struct entry *e4, *e6;
	struct policy *p;
	struct key *keys;
	uint8_t *flags;

	*out = NULL;
	if (!n)
		return 0;
	e4 = malloc(2 * (size_t)n * sizeof(*e4));
	/* one block: the policy, then the keys, then their flags */
	p = calloc(1, sizeof(*p) + (size_t)n * (sizeof(*keys) + 1));
	if (!e4 || !p) {
		free(e4);
		free(p);
		return -ENOMEM;
	}
	e6 = e4 + n;
	add_entries(e4, &n4, e6, &n6, allow, n_allow, 0);
	add_entries(e4, &n4, e6, &n6, deny, n_deny, 1);
	keys = (struct key *)(p + 1);
	flags = (uint8_t *)(keys + n);
	k4 = compile(&p->v4, e4, n4, keys, flags);
	compile(&p->v6, e6, n6, keys + k4, flags + k4);
	free(e4);
	p->has_allow = n_allow > 0;
	atomic_init(&p->refs, 1);
	*out = p;
	return 0;
}

int policy_build_config(struct policy **out, const struct echod_config *cfg)
{
	struct policy *p, *t;
	int err;

	*out = NULL;
	err = policy_build(&t, cfg->proxy_protocol.trusted, cfg->proxy_protocol.n_trusted,
			   NULL, 0);
	if (err)
		return err;
	err = policy_build(&p, cfg->allow, cfg->n_allow, cfg->deny, cfg->n_deny);
	if (!err && !p && t) {
		/* no allow/deny lists but proxies: everyone may use echod */
		p = calloc(1, sizeof(*p));
		if (p)
			atomic_init(&p->refs, 1);
		else
			err = -ENOMEM;
	}
	if (err) {
		policy_unref(t);
		return err;
	}
	if (p)
		p->trusted = t;
	*out = p;
	return 0;
}

bool policy_trusted(const struct policy *p, const uint8_t a[16])
{
	return p && p->trusted && policy_allows(p->trusted, a);
}

void policy_ref(struct policy *p)
{
	if (p)
		atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

void policy_unref(struct policy *p)
{
	/* acq_rel: every use of p by the thread dropping a reference happens
	 * before the free */
	if (p && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) {
		policy_unref(p->trusted);
		free(p);
	}
}

/* ---- lookup ---- */

/* 1 deny, 0 allow, -1 no prefix matches. */
static int family_match(const struct family *f, struct key k)
{
	for (unsigned r = 0; r < f->nruns; r++) {
		const struct run *run = &f->runs[r];
		struct key m = key_mask(k, run->len);
		uint32_t lo = run->start, hi = run->start + run->count;

		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			int c = key_cmp(&f->keys[mid], &m);

			if (c == 0)
				return f->deny[mid];
			if (c < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
	}
	return -1;
}

bool policy_allows(const struct policy *p, const uint8_t a[16])
{
	bool v4;
	struct key k;
	int m;

	if (!p)
		return true;
	k = key_of(a, &v4);
	m = family_match(v4 ? &p->v4 : &p->v6, k);
	if (m < 0)
		return !p->has_allow;
	return m == 0;
}
