/* config_literal.h - libconfig 1.5's number literals (config_literal.c). */
#ifndef ECHOD_CONFIG_LITERAL_H
#define ECHOD_CONFIG_LITERAL_H

#include <stdbool.h>
#include <stddef.h>

/* The number token at s (NUL-terminated text), as flex picks it: the
 * longest of float, integer, integer64, hex, hex64.  Returns its length
 * (0: not a number) and whether it is an integer, hex, 64-bit. */
size_t literal_number(const char *s, bool *is_int, bool *hex, bool *is64);

/* Whether libconfig 1.5 keeps the value of the integer literal s (n bytes,
 * as literal_number() found it) instead of wrapping it. */
bool literal_int_fits(const char *s, size_t n, bool hex, bool is64);

#endif
