/* config_where.c - where a libconfig setting stands in the files: its
 * line in the scanned text (config_scan.c) mapped back to FILE:LINE, for
 * the errors the settings table reports, and whether its value was already
 * flagged by the scan as an integer literal libconfig would wrap.
 */
#include "autoconfig.h"

#include "config.h"
#include "config_scan.h"
#include "config_where.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>

/* The file and line where setting s is. */
static void setting_where(const struct scan *ctx, const config_setting_t *s,
			  const char **file, unsigned *line)
{
	const config_setting_t *parent = config_setting_parent(s);
	unsigned cline = config_setting_source_line(s);

	if (config_setting_source_file(s)) {    /* not expected: no includes */
		*file = config_setting_source_file(s);
		*line = cline;
		return;
	}
	if (config_setting_type(s) == CONFIG_TYPE_STRING && parent &&
	    (config_setting_is_list(parent) || config_setting_is_array(parent)) &&
	    config_setting_index(s) == config_setting_length(parent) - 1)
		cline = scan_string_line(ctx, cline);
	scan_map_line(ctx, cline, file, line);
}

void where_error(struct scan *ctx, const config_setting_t *s, const char *fmt, ...)
{
	char msg[CONFIG_ERROR_MAX];
	const char *file;
	unsigned line;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	setting_where(ctx, s, &file, &line);
	scan_error_at(ctx->errs, file, line, msg);
}

/* Last expanded-text line that may hold the value of s. */
static unsigned value_end_line(const config_setting_t *s)
{
	const config_setting_t *parent = config_setting_parent(s);
	int idx;

	if (!parent)
		return UINT_MAX;
	idx = config_setting_index(s);
	if (idx >= 0 && idx + 1 < config_setting_length(parent)) {
		unsigned next = config_setting_source_line(
			config_setting_get_elem(parent, (unsigned)idx + 1));

		return next > config_setting_source_line(s) ? next - 1 :
			config_setting_source_line(s);
	}
	return value_end_line(parent);
}

bool where_flagged(const struct scan *ctx, const config_setting_t *s)
{
	return scan_flagged(ctx, config_setting_source_line(s), value_end_line(s));
}
