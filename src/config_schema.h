/* config_schema.h - the table of settings (config_schema.c) and the types
 * of settings (config_types.c).
 *
 * Every setting is one entry: its name (dotted inside a group), type,
 * default, range or allowed values, unit, whether a reload applies it
 * (live) or it waits for a restart, a one-line description, its place in
 * struct echod_config and its CONFIG_CHANGED_* bit.  Parsing, range checks,
 * the defaults, the reload diff and the dump (config_dump.c) walk it:
 * adding a setting is one entry plus its use.
 */
#ifndef ECHOD_CONFIG_SCHEMA_H
#define ECHOD_CONFIG_SCHEMA_H

#include <libconfig.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "config_scan.h"

struct schema_setting;

/* What a type of setting does; a custom type only where a setting needs
 * one (enums, addresses, the listen list, the core list). */
struct schema_type {
	/* Read libconfig setting s into cfg; errors reported through sc. */
	void (*parse)(struct scan *sc, const config_setting_t *s,
		      const struct schema_setting *st, struct echod_config *cfg);
	/* Store the default value in cfg. */
	void (*set_default)(const struct schema_setting *st, struct echod_config *cfg);
	/* Whether a and b hold the same value. */
	bool (*equal)(const struct schema_setting *st, const struct echod_config *a,
		      const struct echod_config *b);
	/* The value as libconfig text ("7", "\"auto\"", "[0, 1]") into buf. */
	void (*format)(const struct schema_setting *st, const struct echod_config *cfg,
		       char *buf, size_t size);
	/* The range or the allowed values, with the unit, for people. */
	void (*range)(const struct schema_setting *st, char *buf, size_t size);
};

/* One allowed value of an enum setting. */
struct schema_enum {
	const char *name;
	int value;
};

struct schema_setting {
	const char *name;               /* "port", "metrics.port" */
	const struct schema_type *type;
	size_t offset, size;            /* the value in struct echod_config */
	size_t count_offset;            /* lists: their unsigned count */
	size_t port_offset;             /* addresses: the uint16_t port they take */
	long long min, max;             /* integers, and each entry of an integer list */
	bool zero_ok;                   /* integers: 0 is allowed too, below min ("leave it") */
	bool cpus;                      /* integer lists: CPUs of this machine, not ports */
	unsigned max_count;             /* lists: most entries */
	const struct schema_enum *values;       /* enums: NULL-terminated */
	const char *unit;               /* "bytes", "seconds", or NULL */
	long long def;                  /* default: integer, boolean, enum */
	const char *def_addr;           /* default: address(es), space-separated */
	const char *def_list;           /* default: integer lists, space-separated (NULL: []) */
	bool live;                      /* a reload applies it */
	unsigned changed;               /* its CONFIG_CHANGED_* bit */
	const char *description;        /* one line, no ';' */
};

/* A group of settings ("metrics" for "metrics.*"). */
struct schema_group {
	const char *name;
	const char *description;
};

/* The types (config_types.c). */
extern const struct schema_type schema_uint;        /* uint16_t or uint32_t, min..max */
extern const struct schema_type schema_bool;
extern const struct schema_type schema_enum;        /* an int-sized field, values[] */
extern const struct schema_type schema_addr;        /* struct config_addr */
extern const struct schema_type schema_addr_list;   /* config_addr[max_count], count */
extern const struct schema_type schema_core_list;   /* int[max_count], count; .cpus */
extern const struct schema_type schema_port_list;   /* uint16_t[max_count], count */
/* (config_prefix.c) */
extern const struct schema_type schema_prefix_list; /* config_prefix[max_count], count */
/* (config_tls.c) */
extern const struct schema_type schema_pem_file;    /* struct config_pem: path, file read */
extern const struct schema_type schema_basic_auth;  /* config_cred[max_count], count */

/* A list setting's count of entries (at most st->max_count), and setting it. */
unsigned schema_count_of(const struct schema_setting *st, const struct echod_config *cfg);
void schema_set_count(const struct schema_setting *st, struct echod_config *cfg, unsigned n);

/* "an integer", "a string", ... : the type of libconfig setting s. */
const char *schema_type_name(const config_setting_t *s);

/* The name of value v of an enum setting, or NULL. */
const char *schema_enum_name(const struct schema_setting *st, int v);

/* An address setting: set the port of its address(es) to the value of the
 * port setting it takes (st->port_offset); any other: nothing. */
void schema_set_ports(const struct schema_setting *st, struct echod_config *cfg);

extern const struct schema_setting schema_settings[];
extern const size_t schema_n_settings;
extern const struct schema_group schema_groups[];
extern const size_t schema_n_groups;

/* Walk the root setting of a parsed file: every setting it holds read into
 * cfg (which holds the defaults), every error reported through sc. */
void schema_validate(struct scan *sc, const config_setting_t *root,
		     struct echod_config *cfg);

/* After the walk: the metrics TLS settings together (both files or
 * neither, TLS in libmicrohttpd, the key matching the certificate);
 * config_tls.c. */
void schema_check_tls(struct scan *sc, const config_setting_t *root,
		      struct echod_config *cfg);

#endif
