/* config_dump.c - config_dump(): a configuration printed as an echod.conf
 * (echod -T), every setting after two comment lines generated from the
 * settings table (config_schema.c): its description, then
 *   # default: D; range: R; reload: live|restart
 * so that the output documents itself; tests/functional/test_docs.py holds
 * the documentation against these lines.
 */
#include "autoconfig.h"

#include "config.h"
#include "config_scan.h"
#include "config_schema.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VALUE_TEXT_MAX (1024 * 1024)  /* a formatted value: 16384 prefixes fit */

static const char *group_description(const char *group, size_t len)
{
	size_t i;

	for (i = 0; i < schema_n_groups; i++)
		if (strlen(schema_groups[i].name) == len &&
		    !strncmp(schema_groups[i].name, group, len))
			return schema_groups[i].description;
	return NULL;
}

/* One setting: its comment lines and "name = value;", indented in a group. */
static void dump_setting(FILE *out, const struct schema_setting *st,
			 const struct echod_config *cfg, const struct echod_config *defaults,
			 const char *name, const char *indent, bool first, char *buf, char *def)
{
	st->type->format(st, defaults, def, VALUE_TEXT_MAX);
	fprintf(out, "%s%s# %s\n", first ? "" : "\n", indent, st->description);
	st->type->range(st, buf, VALUE_TEXT_MAX);
	fprintf(out, "%s# default: %s; range: %s; reload: %s\n", indent, def, buf,
		st->live ? "live" : "restart");
	st->type->format(st, cfg, buf, VALUE_TEXT_MAX);
	fprintf(out, "%s%s = %s;\n", indent, name, buf);
}

int config_dump(FILE *out, const struct echod_config *cfg)
{
	struct echod_config *defaults = malloc(sizeof(*defaults));
	char *buf = malloc(VALUE_TEXT_MAX), *def = malloc(VALUE_TEXT_MAX);
	char *path = malloc(SCAN_SHOWN_SIZE + CONFIG_PATH_MAX * 4);
	size_t group_len = 0, i;
	const char *group = NULL;
	bool first;
	int r = 0;

	if (!defaults || !buf || !def || !path) {
		r = -ENOMEM;
		goto out;
	}
	config_defaults(defaults);
	scan_printable(path, SCAN_SHOWN_SIZE + CONFIG_PATH_MAX * 4, cfg->path,
		       strnlen(cfg->path, CONFIG_PATH_MAX), CONFIG_PATH_MAX);
	fprintf(out, "# echod configuration%s%s, with every default filled in (echod -T).\n"
		"# Above each setting: what it is, then its default, its range and whether\n"
		"# a reload applies it (live) or it waits for a restart.\n",
		path[0] ? " from " : "", path);
	for (i = 0; i < schema_n_settings; i++) {
		const struct schema_setting *st = &schema_settings[i];
		const char *dot = strchr(st->name, '.');
		size_t len = dot ? (size_t)(dot - st->name) : 0;

		first = false;
		if (group && (len != group_len || strncmp(st->name, group, len))) {
			fprintf(out, "};\n");
			group = NULL;
		}
		if (dot && !group) {
			const char *why = group_description(st->name, len);

			group = st->name;
			group_len = len;
			fprintf(out, "\n");
			if (why)
				fprintf(out, "# %s\n", why);
			fprintf(out, "%.*s = {\n", (int)len, st->name);
			first = true;
		}
		dump_setting(out, st, cfg, defaults, dot ? dot + 1 : st->name,
			     dot ? "\t" : "", first, buf, def);
	}
	if (group)
		fprintf(out, "};\n");
	if (fflush(out) != 0 || ferror(out))
		r = errno ? -errno : -EIO;
out:
	free(defaults);
	free(buf);
	free(def);
	free(path);
	return r;
}
