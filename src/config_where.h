/* config_where.h - where a libconfig setting stands in the files
 * (config_where.c): errors reported at it, for the settings table. */
#ifndef ECHOD_CONFIG_WHERE_H
#define ECHOD_CONFIG_WHERE_H

#include <libconfig.h>
#include <stdbool.h>

#include "config_scan.h"

/* Report "FILE:LINE: message" at setting s, its line mapped back through
 * the scan to the file that holds it. */
void where_error(struct scan *sc, const config_setting_t *s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Whether the value of s was already reported as an integer literal out of
 * range (libconfig holds a wrapped value there: not to be reported again). */
bool where_flagged(const struct scan *sc, const config_setting_t *s);

#endif
