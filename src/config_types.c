/* config_types.c - the types of settings of the table (config_schema.c):
 * integers in a range, booleans, enums, an address, the listen list, the
 * core list and port lists.  Each reads its libconfig setting into struct
 * echod_config (errors "FILE:LINE: message" through config_where.c), sets
 * its default, compares two values (the reload diff; an address without
 * its port, a setting of its own) and formats value and range (echod -T). */
#include "autoconfig.h"

#include "config.h"
#include "config_where.h"
#include "config_scan.h"
#include "config_schema.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VALUE(cfg, st) ((char *)(cfg) + (st)->offset)
#define CVALUE(cfg, st) ((const char *)(cfg) + (st)->offset)

/* ---- helpers ---- */

/* Append to buf (size bytes, NUL-terminated) like printf. */
static void append(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t size, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;

	if (len + 1 >= size)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + len, size - len, fmt, ap);
	va_end(ap);
}

unsigned schema_count_of(const struct schema_setting *st, const struct echod_config *cfg)
{
	unsigned n;

	memcpy(&n, (const char *)cfg + st->count_offset, sizeof(n));
	return n < st->max_count ? n : st->max_count;
}

void schema_set_count(const struct schema_setting *st, struct echod_config *cfg, unsigned n)
{
	memcpy((char *)cfg + st->count_offset, &n, sizeof(n));
}

static uint16_t port_of(const struct schema_setting *st, const struct echod_config *cfg)
{
	uint16_t port;

	memcpy(&port, (const char *)cfg + st->port_offset, sizeof(port));
	return port;
}

const char *schema_type_name(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		return "an integer";
	case CONFIG_TYPE_FLOAT:
		return "a float";
	case CONFIG_TYPE_STRING:
		return "a string";
	case CONFIG_TYPE_BOOL:
		return "a boolean";
	case CONFIG_TYPE_GROUP:
		return "a group";
	case CONFIG_TYPE_ARRAY:
		return "an array";
	case CONFIG_TYPE_LIST:
		return "a list";
	}
	return "an unknown type";
}

static bool is_int(const config_setting_t *s)
{
	return config_setting_type(s) == CONFIG_TYPE_INT ||
	       config_setting_type(s) == CONFIG_TYPE_INT64;
}

static bool is_list(const config_setting_t *s)
{
	return config_setting_type(s) == CONFIG_TYPE_LIST ||
	       config_setting_type(s) == CONFIG_TYPE_ARRAY;
}

/* An integer setting in min..max.  Returns 0 and *out, or -EINVAL
 * (reported). */
static int get_int(struct scan *sc, const config_setting_t *s, const char *name,
		   long long min, long long max, long long *out)
{
	long long v;

	if (!is_int(s)) {
		where_error(sc, s, "%s: expected an integer, got %s", name, schema_type_name(s));
		return -EINVAL;
	}
	v = config_setting_get_int64(s);
	if (v < min || v > max) {
		if (!where_flagged(sc, s))
			where_error(sc, s, "%s: %lld is out of range %lld..%lld", name, v, min, max);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* A string setting; NULL (reported) if it is not one. */
static const char *get_string(struct scan *sc, const config_setting_t *s, const char *name)
{
	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		where_error(sc, s, "%s: expected a string, got %s", name, schema_type_name(s));
		return NULL;
	}
	return config_setting_get_string(s);
}

/* ---- addresses ---- */

/* Parse an IPv4 or IPv6 literal into a (zeroed) config_addr; port 0. */
static int addr_parse(struct config_addr *a, const char *text)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->sa;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->sa;

	memset(a, 0, sizeof(*a));
	if (strlen(text) >= sizeof(a->text))
		return -EINVAL;
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		a->salen = sizeof(*sin);
	} else if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		a->salen = sizeof(*sin6);
	} else {
		memset(a, 0, sizeof(*a));
		return -EINVAL;
	}
	strcpy(a->text, text);
	return 0;
}

static void addr_set_port(struct config_addr *a, uint16_t port)
{
	if (a->sa.ss_family == AF_INET)
		((struct sockaddr_in *)&a->sa)->sin_port = htons(port);
	else if (a->sa.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->sa)->sin6_port = htons(port);
}

static bool addr_equal(const struct config_addr *a, const struct config_addr *b)
{
	struct config_addr x = *a, y = *b;

	addr_set_port(&x, 0);
	addr_set_port(&y, 0);
	return x.salen == y.salen && memcmp(&x.sa, &y.sa, x.salen) == 0;
}

static int get_addr(struct scan *sc, const config_setting_t *s, const char *name,
		    const char *str, struct config_addr *a)
{
	char shown[SCAN_SHOWN_SIZE];

	if (addr_parse(a, str) < 0) {
		where_error(sc, s, "%s: '%s' is not an IPv4 or IPv6 address", name,
			    SCAN_PRINTABLE(shown, str));
		return -EINVAL;
	}
	return 0;
}

/* The addresses of an address or address-list setting, and how many. */
static struct config_addr *addrs_of(const struct schema_setting *st,
				    const struct echod_config *cfg, unsigned *n)
{
	*n = st->count_offset ? schema_count_of(st, cfg) : 1;
	return (struct config_addr *)CVALUE(cfg, st);
}

/* ---- integers (uint16_t or uint32_t fields) ---- */

static long long uint_get(const struct schema_setting *st, const struct echod_config *cfg)
{
	uint16_t v16;
	uint32_t v32;

	if (st->size == sizeof(v16)) {
		memcpy(&v16, CVALUE(cfg, st), sizeof(v16));
		return v16;
	}
	memcpy(&v32, CVALUE(cfg, st), sizeof(v32));
	return v32;
}

static void uint_set(const struct schema_setting *st, struct echod_config *cfg, long long v)
{
	uint16_t v16 = (uint16_t)v;
	uint32_t v32 = (uint32_t)v;

	if (st->size == sizeof(v16))
		memcpy(VALUE(cfg, st), &v16, sizeof(v16));
	else
		memcpy(VALUE(cfg, st), &v32, sizeof(v32));
}

static void uint_parse(struct scan *sc, const config_setting_t *s,
		       const struct schema_setting *st, struct echod_config *cfg)
{
	long long v;

	if (get_int(sc, s, st->name, st->zero_ok ? 0 : st->min, st->max, &v) < 0)
		return;
	if (v && v < st->min) {
		where_error(sc, s, "%s: %lld is out of range 0 or %lld..%lld", st->name, v,
			    st->min, st->max);
		return;
	}
	uint_set(st, cfg, v);
}

static void uint_default(const struct schema_setting *st, struct echod_config *cfg)
{
	uint_set(st, cfg, st->def);
}

static bool uint_equal(const struct schema_setting *st, const struct echod_config *a,
		       const struct echod_config *b)
{
	return uint_get(st, a) == uint_get(st, b);
}

static void uint_format(const struct schema_setting *st, const struct echod_config *cfg,
			char *buf, size_t size)
{
	snprintf(buf, size, "%lld", uint_get(st, cfg));
}

static void uint_range(const struct schema_setting *st, char *buf, size_t size)
{
	snprintf(buf, size, "%s%lld..%lld%s%s", st->zero_ok ? "0 or " : "", st->min, st->max,
		 st->unit ? " " : "", st->unit ? st->unit : "");
}

const struct schema_type schema_uint = {
	uint_parse, uint_default, uint_equal, uint_format, uint_range,
};

/* ---- booleans ---- */

static void bool_parse(struct scan *sc, const config_setting_t *s,
		       const struct schema_setting *st, struct echod_config *cfg)
{
	bool v;

	if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
		where_error(sc, s, "%s: expected a boolean, got %s", st->name, schema_type_name(s));
		return;
	}
	v = config_setting_get_bool(s) != 0;
	memcpy(VALUE(cfg, st), &v, sizeof(v));
}

static void bool_default(const struct schema_setting *st, struct echod_config *cfg)
{
	bool v = st->def != 0;

	memcpy(VALUE(cfg, st), &v, sizeof(v));
}

static bool bool_get(const struct schema_setting *st, const struct echod_config *cfg)
{
	bool v;

	memcpy(&v, CVALUE(cfg, st), sizeof(v));
	return v;
}

static bool bool_equal(const struct schema_setting *st, const struct echod_config *a,
		       const struct echod_config *b)
{
	return bool_get(st, a) == bool_get(st, b);
}

static void bool_format(const struct schema_setting *st, const struct echod_config *cfg,
			char *buf, size_t size)
{
	snprintf(buf, size, "%s", bool_get(st, cfg) ? "true" : "false");
}

static void bool_range(const struct schema_setting *st, char *buf, size_t size)
{
	(void)st;
	snprintf(buf, size, "true or false");
}

const struct schema_type schema_bool = {
	bool_parse, bool_default, bool_equal, bool_format, bool_range,
};

/* ---- enums: a string out of st->values, stored as an int-sized field ---- */

static int enum_get(const struct schema_setting *st, const struct echod_config *cfg)
{
	int v;

	memcpy(&v, CVALUE(cfg, st), sizeof(v));
	return v;
}

/* "a, b or c" (quoted: "\"a\", \"b\" or \"c\"") into buf. */
static void enum_list(const struct schema_setting *st, bool quoted, char *buf, size_t size)
{
	const char *q = quoted ? "\"" : "";
	size_t i;

	buf[0] = '\0';
	for (i = 0; st->values[i].name; i++)
		append(buf, size, "%s%s%s%s", i == 0 ? "" : st->values[i + 1].name ? ", " : " or ",
		       q, st->values[i].name, q);
}

static void enum_parse(struct scan *sc, const config_setting_t *s,
		       const struct schema_setting *st, struct echod_config *cfg)
{
	char shown[SCAN_SHOWN_SIZE], expected[256];
	const char *v = get_string(sc, s, st->name);
	size_t i;

	if (!v)
		return;
	for (i = 0; st->values[i].name; i++) {
		if (!strcmp(v, st->values[i].name)) {
			memcpy(VALUE(cfg, st), &st->values[i].value, sizeof(int));
			return;
		}
	}
	enum_list(st, false, expected, sizeof(expected));
	where_error(sc, s, "%s: unknown value '%s' (expected %s)", st->name,
		    SCAN_PRINTABLE(shown, v), expected);
}

static void enum_default(const struct schema_setting *st, struct echod_config *cfg)
{
	int v = (int)st->def;

	memcpy(VALUE(cfg, st), &v, sizeof(v));
}

static bool enum_equal(const struct schema_setting *st, const struct echod_config *a,
		       const struct echod_config *b)
{
	return enum_get(st, a) == enum_get(st, b);
}

const char *schema_enum_name(const struct schema_setting *st, int v)
{
	size_t i;

	for (i = 0; st->values[i].name; i++)
		if (st->values[i].value == v)
			return st->values[i].name;
	return NULL;
}

static void enum_format(const struct schema_setting *st, const struct echod_config *cfg,
			char *buf, size_t size)
{
	const char *name = schema_enum_name(st, enum_get(st, cfg));

	snprintf(buf, size, "\"%s\"", name ? name : "unknown");
}

static void enum_range(const struct schema_setting *st, char *buf, size_t size)
{
	enum_list(st, true, buf, size);
}

const struct schema_type schema_enum = {
	enum_parse, enum_default, enum_equal, enum_format, enum_range,
};

/* ---- one address, or a list of them ("listen") ---- */

static void addr_parse_setting(struct scan *sc, const config_setting_t *s,
			       const struct schema_setting *st, struct echod_config *cfg)
{
	const char *v = get_string(sc, s, st->name);
	struct config_addr a;

	if (v && get_addr(sc, s, st->name, v, &a) == 0)
		memcpy(VALUE(cfg, st), &a, sizeof(a));
}

/* The default: the space-separated addresses of st->def_addr. */
static void addr_default(const struct schema_setting *st, struct echod_config *cfg)
{
	struct config_addr *a = (struct config_addr *)VALUE(cfg, st);
	const char *p = st->def_addr;
	unsigned n = 0;

	memset(a, 0, st->size);
	while (*p && (n + 1) * sizeof(*a) <= st->size) {
		char text[CONFIG_ADDR_MAX];
		size_t len = strcspn(p, " ");

		snprintf(text, sizeof(text), "%.*s", (int)len, p);
		if (addr_parse(&a[n], text) == 0)
			n++;
		p += len;
		p += strspn(p, " ");
	}
	if (st->count_offset)
		schema_set_count(st, cfg, n);
}

static bool addr_equal_setting(const struct schema_setting *st, const struct echod_config *a,
			       const struct echod_config *b)
{
	unsigned na, nb, i;
	const struct config_addr *xa = addrs_of(st, a, &na), *xb = addrs_of(st, b, &nb);

	if (na != nb)
		return false;
	for (i = 0; i < na; i++)
		if (!addr_equal(&xa[i], &xb[i]))
			return false;
	return true;
}

static void addr_format(const struct schema_setting *st, const struct echod_config *cfg,
			char *buf, size_t size)
{
	unsigned n, i;
	const struct config_addr *a = addrs_of(st, cfg, &n);

	buf[0] = '\0';
	if (!st->count_offset) {
		append(buf, size, "\"%s\"", a->text);
		return;
	}
	append(buf, size, "[");
	for (i = 0; i < n; i++)
		append(buf, size, "%s\"%s\"", i ? ", " : "", a[i].text);
	append(buf, size, "]");
}

static void addr_range(const struct schema_setting *st, char *buf, size_t size)
{
	if (st->count_offset)
		snprintf(buf, size, "an IPv4 or IPv6 literal, or a list of 1..%u", st->max_count);
	else
		snprintf(buf, size, "an IPv4 or IPv6 literal");
}

const struct schema_type schema_addr = {
	addr_parse_setting, addr_default, addr_equal_setting, addr_format, addr_range,
};

static void addr_list_parse(struct scan *sc, const config_setting_t *s,
			    const struct schema_setting *st, struct echod_config *cfg)
{
	char shown[SCAN_SHOWN_SIZE];
	struct config_addr addrs[CONFIG_MAX_LISTEN];
	unsigned n = 0, count, i, k;
	bool ok = true;

	if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		if (get_addr(sc, s, st->name, config_setting_get_string(s), &addrs[0]) < 0)
			return;
		memset(VALUE(cfg, st), 0, st->size);
		memcpy(VALUE(cfg, st), &addrs[0], sizeof(addrs[0]));
		schema_set_count(st, cfg, 1);
		return;
	}
	if (!is_list(s)) {
		where_error(sc, s, "%s: expected a string or a list of strings, got %s", st->name,
			    schema_type_name(s));
		return;
	}
	count = (unsigned)config_setting_length(s);
	if (count == 0) {
		where_error(sc, s, "%s: empty list (at least one address is required)", st->name);
		return;
	}
	if (count > st->max_count || count > CONFIG_MAX_LISTEN) {
		where_error(sc, s, "%s: too many addresses (%u, at most %u)", st->name, count,
			    st->max_count);
		return;
	}
	for (i = 0; i < count; i++) {
		const config_setting_t *e = config_setting_get_elem(s, i);

		if (config_setting_type(e) != CONFIG_TYPE_STRING) {
			where_error(sc, e, "%s[%u]: expected a string, got %s", st->name, i,
				    schema_type_name(e));
			ok = false;
			continue;
		}
		if (get_addr(sc, e, st->name, config_setting_get_string(e), &addrs[n]) < 0) {
			ok = false;
			continue;
		}
		for (k = 0; k < n; k++)
			if (addr_equal(&addrs[k], &addrs[n]))
				break;
		if (k < n) {
			where_error(sc, e, "%s: duplicate address '%s'", st->name,
				    SCAN_PRINTABLE(shown, addrs[n].text));
			ok = false;
			continue;
		}
		n++;
	}
	if (ok) {
		memset(VALUE(cfg, st), 0, st->size);
		memcpy(VALUE(cfg, st), addrs, n * sizeof(addrs[0]));
		schema_set_count(st, cfg, n);
	}
}

const struct schema_type schema_addr_list = {
	addr_list_parse, addr_default, addr_equal_setting, addr_format, addr_range,
};

/* ------------------------------------------------------------------ */
/* integer lists: an integer or a list of them, with a count; the core
 * list (int cores[], .cpus: each a CPU of this machine) and port lists
 * (uint16_t ports[]) */

#define INTS_WIDTH(st) ((st)->size / (st)->max_count)   /* sizeof(int) or sizeof(uint16_t) */

union ints_value { uint16_t v16; int v; };

static long long ints_get(const struct schema_setting *st, const struct echod_config *cfg,
			  unsigned i)
{
	union ints_value u;

	memcpy(&u, CVALUE(cfg, st) + i * INTS_WIDTH(st), INTS_WIDTH(st));
	return INTS_WIDTH(st) == sizeof(u.v16) ? u.v16 : u.v;
}

/* Store n values (zero the rest) and the count. */
static void ints_store(const struct schema_setting *st, struct echod_config *cfg,
		       const long long *vals, unsigned n)
{
	memset(VALUE(cfg, st), 0, st->size);
	for (unsigned i = 0; i < n; i++) {
		union ints_value u = { .v = (int)vals[i] };

		if (INTS_WIDTH(st) == sizeof(u.v16))
			u.v16 = (uint16_t)vals[i];
		memcpy(VALUE(cfg, st) + i * INTS_WIDTH(st), &u, INTS_WIDTH(st));
	}
	schema_set_count(st, cfg, n);
}

static int ints_check(struct scan *sc, const config_setting_t *e,
		      const struct schema_setting *st, long ncpus, long long *vals, unsigned n)
{
	const char *item = st->cpus ? "core" : "port";
	long long v;
	unsigned k;

	if (get_int(sc, e, st->name, st->min, st->max, &v) < 0)
		return -EINVAL;
	if (st->cpus && ncpus > 0 && v >= ncpus) {
		if (!where_flagged(sc, e))
			where_error(sc, e, "%s %lld does not exist (this machine has %ld CPU%s)",
				    st->name, v, ncpus, ncpus == 1 ? "" : "s");
		return -EINVAL;
	}
	for (k = 0; k < n; k++) {
		if (vals[k] == v) {
			if (!where_flagged(sc, e))
				where_error(sc, e, "%s: duplicate %s %lld", st->name, item, v);
			return -EINVAL;
		}
	}
	vals[n] = v;
	return 0;
}

static void ints_parse(struct scan *sc, const config_setting_t *s,
		       const struct schema_setting *st, struct echod_config *cfg)
{
	long ncpus = st->cpus ? sysconf(_SC_NPROCESSORS_CONF) : 0;
	long long vals[CONFIG_MAX_CORES];
	unsigned n = 0, count, i;
	bool ok = true;

	if (is_int(s)) {
		if (ints_check(sc, s, st, ncpus, vals, 0) < 0)
			return;
		n = 1;
	} else if (!is_list(s)) {
		where_error(sc, s, "%s: expected an integer or a list of integers, got %s",
			    st->name, schema_type_name(s));
		return;
	} else {
		count = (unsigned)config_setting_length(s);
		if (count > st->max_count || count > CONFIG_MAX_CORES) {
			where_error(sc, s, "%s: too many %ss (%u, at most %u)", st->name,
				    st->cpus ? "core" : "port", count, st->max_count);
			return;
		}
		for (i = 0; i < count; i++) {
			const config_setting_t *e = config_setting_get_elem(s, i);

			if (!is_int(e)) {
				where_error(sc, e, "%s[%u]: expected an integer, got %s", st->name,
					    i, schema_type_name(e));
				ok = false;
				continue;
			}
			if (ints_check(sc, e, st, ncpus, vals, n) < 0) {
				ok = false;
				continue;
			}
			n++;
		}
	}
	if (ok)
		ints_store(st, cfg, vals, n);
}

/* The default: the space-separated integers of st->def_list, or none. */
static void ints_default(const struct schema_setting *st, struct echod_config *cfg)
{
	long long vals[CONFIG_MAX_CORES];
	const char *p = st->def_list ? st->def_list : "";
	unsigned n = 0;
	char *end;

	while (*p && n < st->max_count && n < CONFIG_MAX_CORES) {
		vals[n++] = strtoll(p, &end, 10);
		p = end + strspn(end, " ");
	}
	ints_store(st, cfg, vals, n);
}

static bool ints_equal(const struct schema_setting *st, const struct echod_config *a,
		       const struct echod_config *b)
{
	unsigned na = schema_count_of(st, a), nb = schema_count_of(st, b);

	return na == nb && memcmp(CVALUE(a, st), CVALUE(b, st), na * INTS_WIDTH(st)) == 0;
}

static void ints_format(const struct schema_setting *st, const struct echod_config *cfg,
			char *buf, size_t size)
{
	unsigned n = schema_count_of(st, cfg), i;

	snprintf(buf, size, "[");
	for (i = 0; i < n; i++)
		append(buf, size, "%s%lld", i ? ", " : "", ints_get(st, cfg, i));
	append(buf, size, "]");
}

static void ints_range(const struct schema_setting *st, char *buf, size_t size)
{
	snprintf(buf, size, "a %s %lld..%lld, or a list of at most %u",
		 st->cpus ? "CPU number" : "port", st->min, st->max, st->max_count);
}

const struct schema_type schema_core_list = {
	ints_parse, ints_default, ints_equal, ints_format, ints_range,
};
const struct schema_type schema_port_list = {   /* the same, ports: not .cpus */
	ints_parse, ints_default, ints_equal, ints_format, ints_range,
};

void schema_set_ports(const struct schema_setting *st, struct echod_config *cfg)
{
	struct config_addr *a;
	unsigned n, k;

	if (!st->port_offset)
		return;
	a = addrs_of(st, cfg, &n);
	for (k = 0; k < n; k++)
		addr_set_port(&a[k], port_of(st, cfg));
}
