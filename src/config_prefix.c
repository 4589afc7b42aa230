/* config_prefix.c - the prefix-list type of setting ("allow", "deny"): a
 * prefix or a list of them in CIDR ("10.0.0.0/8", "2001:db8::/32", a bare
 * address for /32 or /128), read into struct config_prefix[max_count]
 * with its count, errors "FILE:LINE: message" (not a prefix, a length out
 * of range, host bits set, too many); duplicates are allowed (the same
 * prefix in both lists is a deny: policy.h). */
#include "autoconfig.h"

#include "config.h"
#include "config_scan.h"
#include "config_schema.h"
#include "config_where.h"
#include "policy.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIXES(cfg, st) ((struct config_prefix *)((char *)(cfg) + (st)->offset))
#define CPREFIXES(cfg, st) ((const struct config_prefix *)((const char *)(cfg) + (st)->offset))

/* One element: 0 and *p, or -1 (reported). */
static int one_prefix(struct scan *sc, const config_setting_t *e, const struct schema_setting *st,
		      unsigned i, bool in_list, struct config_prefix *p)
{
	char shown[SCAN_SHOWN_SIZE], why[128];
	const char *text;

	if (config_setting_type(e) != CONFIG_TYPE_STRING) {
		if (in_list)
			where_error(sc, e, "%s[%u]: expected a string, got %s", st->name, i,
				    schema_type_name(e));
		else
			where_error(sc, e, "%s: expected a string or a list of strings, got %s",
				    st->name, schema_type_name(e));
		return -1;
	}
	text = config_setting_get_string(e);
	if (policy_prefix_parse(text, p, why, sizeof(why)) < 0) {
		where_error(sc, e, "%s: '%s' %s", st->name, SCAN_PRINTABLE(shown, text), why);
		return -1;
	}
	return 0;
}

static void prefix_parse(struct scan *sc, const config_setting_t *s,
			 const struct schema_setting *st, struct echod_config *cfg)
{
	struct config_prefix *out = PREFIXES(cfg, st), *tmp;
	unsigned count, n = 0;
	bool ok = true;

	if (config_setting_type(s) != CONFIG_TYPE_LIST && config_setting_type(s) != CONFIG_TYPE_ARRAY) {
		struct config_prefix p;

		if (one_prefix(sc, s, st, 0, false, &p) == 0) {
			out[0] = p;
			schema_set_count(st, cfg, 1);
		}
		return;
	}
	count = (unsigned)config_setting_length(s);
	if (count > st->max_count) {
		where_error(sc, s, "%s: too many prefixes (%u, at most %u)", st->name, count,
			    st->max_count);
		return;
	}
	/* into a scratch copy: a list with an error leaves the value alone */
	tmp = malloc((count ? count : 1) * sizeof(*tmp));
	if (!tmp) {
		where_error(sc, s, "%s: out of memory", st->name);
		return;
	}
	for (unsigned i = 0; i < count; i++) {
		if (one_prefix(sc, config_setting_get_elem(s, i), st, i, true, &tmp[n]) < 0)
			ok = false;
		else
			n++;
	}
	if (ok) {
		memcpy(out, tmp, n * sizeof(*tmp));
		schema_set_count(st, cfg, n);
	}
	free(tmp);
}

static void prefix_default(const struct schema_setting *st, struct echod_config *cfg)
{
	schema_set_count(st, cfg, 0);     /* [] (the entries are zeroed with the struct) */
}

static bool prefix_equal(const struct schema_setting *st, const struct echod_config *a,
			 const struct echod_config *b)
{
	unsigned na = schema_count_of(st, a), nb = schema_count_of(st, b);

	return na == nb && !memcmp(CPREFIXES(a, st), CPREFIXES(b, st),
				   na * sizeof(struct config_prefix));
}

static void prefix_format(const struct schema_setting *st, const struct echod_config *cfg,
			  char *buf, size_t size)
{
	const struct config_prefix *p = CPREFIXES(cfg, st);
	unsigned n = schema_count_of(st, cfg);
	size_t len = 1;

	snprintf(buf, size, "[");
	for (unsigned i = 0; i < n && len < size; i++) {
		char text[POLICY_PREFIX_TEXT_MAX];
		int w;

		policy_prefix_format(&p[i], text, sizeof(text));
		w = snprintf(buf + len, size - len, "%s\"%s\"", i ? ", " : "", text);
		if (w < 0)
			return;
		len += (size_t)w;
	}
	if (len < size)
		snprintf(buf + len, size - len, "]");
}

static void prefix_range(const struct schema_setting *st, char *buf, size_t size)
{
	snprintf(buf, size, "IPv4 or IPv6 prefixes in CIDR, a list of at most %u", st->max_count);
}

const struct schema_type schema_prefix_list = {
	prefix_parse, prefix_default, prefix_equal, prefix_format, prefix_range,
};
