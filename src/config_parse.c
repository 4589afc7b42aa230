/* config_parse.c - config_parse_file(): a configuration file through the
 * scan (config_scan.c), libconfig and the settings table (config_schema.c).
 *
 * libconfig parses the scanned text with config_read_string(), so it never
 * opens a file itself: what was checked is what is parsed (no race with an
 * editor replacing a file by a directory).  Its include directory is set
 * to "/dev/null" as a backstop: should an @include ever reach it, it
 * cannot open anything.  Every error is reported as "FILE:LINE: message",
 * the line mapped back through the scan.  An empty file is valid and gives
 * the defaults.
 */
#include "autoconfig.h"

#include "config.h"
#include "config_scan.h"
#include "config_schema.h"

#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void config_error(struct config_errors *errs, const char *fmt, ...)
{
	va_list ap;

	if (!errs)
		return;
	if (errs->n < CONFIG_MAX_ERRORS) {
		va_start(ap, fmt);
		vsnprintf(errs->msg[errs->n], CONFIG_ERROR_MAX, fmt, ap);
		va_end(ap);
	}
	if (errs->n < UINT_MAX)
		errs->n++;
}

int config_parse_file(const char *path, struct echod_config *cfg,
		      struct config_errors *errs)
{
	struct config_errors *scratch = NULL;
	struct echod_config *out = NULL;   /* some 560 KB: on the heap */
	struct scan sc;
	config_t lc;
	int r;

	if (errs)
		errs->n = 0;
	if (!path || !cfg)
		return -EINVAL;
	if (!errs) {    /* errors are still counted */
		errs = scratch = calloc(1, sizeof(*scratch));
		if (!errs)
			return -ENOMEM;
	}
	r = scan_config(&sc, path, errs);
	if (r < 0)
		goto out;
	out = malloc(sizeof(*out));
	if (!out) {
		config_error(errs, "%s: %s", path, strerror(ENOMEM));
		r = -ENOMEM;
		goto out;
	}
	config_defaults(out);
	config_init(&lc);
	config_set_include_dir(&lc, "/dev/null");
	if (!config_read_string(&lc, sc.text ? sc.text : "")) {
		unsigned line = 0;
		const char *file;

		if (config_error_file(&lc)) {
			file = config_error_file(&lc);
			line = (unsigned)config_error_line(&lc);
		} else {
			scan_map_line(&sc, (unsigned)config_error_line(&lc), &file, &line);
		}
		scan_error_at(errs, file, line ? line : 1,
			      config_error_text(&lc) ? config_error_text(&lc) : "parse error");
		config_destroy(&lc);
		r = -EINVAL;
		goto out;
	}
	schema_validate(&sc, config_root_setting(&lc), out);
	config_destroy(&lc);
	if (errs->n) {
		r = -EINVAL;
		goto out;
	}
	strcpy(out->path, path);
	*cfg = *out;
	r = 0;
out:
	free(out);
	scan_free(&sc);
	free(scratch);
	return r;
}
