/* config_literal.c - libconfig 1.5's number literals, as its flex scanner
 * reads them: which token a number is (literal_number()), and whether
 * libconfig keeps the value of an integer literal (literal_int_fits()).
 * config_scan.c uses both to report, as an error, an integer that libconfig
 * would otherwise silently wrap.
 */
#include "autoconfig.h"

#include "config_literal.h"

#include <limits.h>
#include <stdint.h>

/* Whether an integer literal of libconfig 1.5 keeps its value.  Measured on
 * Debian 12 (libconfig 1.5-0.4):
 *   decimal without L: always an int; atoll() then a cast to int, so
 *     4294967297 reads as 1, 2147483648 as -2147483648, and past the int64
 *     range atoll saturates first (99999999999999999999 reads as -1);
 *   decimal with L/LL: int64, saturated (99999999999999999999L reads as
 *     9223372036854775807);
 *   hex without L: strtoul() cast to int: 0x100000001 reads as 1 and
 *     0x80000000..0xFFFFFFFF read as negative numbers;
 *   hex with L/LL: int64 from an unsigned 64-bit value: 0x8000000000000000L
 *     and above read as negative numbers.
 * So: a decimal must fit in int (int64 with L); a hex in 0..INT_MAX
 * (0..INT64_MAX with L). */
bool literal_int_fits(const char *s, size_t n, bool hex, bool is64)
{
	unsigned long long v = 0, limit;
	bool neg = false, over = false;
	size_t i = 0;

	if (!hex && (s[0] == '-' || s[0] == '+')) {
		neg = s[0] == '-';
		i = 1;
	}
	if (hex)
		i = 2;
	limit = is64 ? (unsigned long long)INT64_MAX : (unsigned long long)INT_MAX;
	if (neg)
		limit++;
	for (; i < n && s[i] != 'L'; i++) {
		unsigned d;
		unsigned base = hex ? 16 : 10;

		if (s[i] >= '0' && s[i] <= '9')
			d = (unsigned)(s[i] - '0');
		else if (s[i] >= 'a' && s[i] <= 'f')
			d = (unsigned)(s[i] - 'a' + 10);
		else
			d = (unsigned)(s[i] - 'A' + 10);
		if (v > (limit - d) / base) {
			over = true;
			break;
		}
		v = v * base + d;
	}
	return !over && v <= limit;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_xdigit(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Length of an exponent "[eE][-+]?[0-9]+" at s, or 0. */
static size_t exponent_len(const char *s)
{
	size_t i = 1;

	if (s[0] != 'e' && s[0] != 'E')
		return 0;
	if (s[i] == '-' || s[i] == '+')
		i++;
	if (!is_digit(s[i]))
		return 0;
	while (is_digit(s[i]))
		i++;
	return i;
}

/* A number token at s (NUL-terminated text), as flex picks it: the longest
 * of float, integer, integer64, hex, hex64.  Returns its length (0: not a
 * number) and whether it is an integer, hex, 64-bit. */
size_t literal_number(const char *s, bool *is_int, bool *hex, bool *is64)
{
	size_t j = 0, d0, nd, best = 0, k;

	*is_int = *hex = *is64 = false;
	if (s[j] == '-' || s[j] == '+')
		j++;
	d0 = j;
	while (is_digit(s[j]))
		j++;
	nd = j - d0;
	/* float: sign digits* '.' digits* exponent? */
	if (s[j] == '.') {
		k = j + 1;
		while (is_digit(s[k]))
			k++;
		k += exponent_len(s + k);
		best = k;
	}
	/* float: sign digits+ ('.' digits*)? exponent */
	if (nd) {
		size_t e;

		k = j;
		if (s[k] == '.') {
			k++;
			while (is_digit(s[k]))
				k++;
		}
		e = exponent_len(s + k);
		if (e && k + e > best)
			best = k + e;
	}
	/* integer, integer64 */
	if (nd) {
		k = j;
		if (s[k] == 'L')
			k += s[k + 1] == 'L' ? 2 : 1;
		if (k > best) {
			best = k;
			*is_int = true;
			*is64 = k > j;
		}
	}
	/* hex, hex64 (no sign) */
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && is_xdigit(s[2])) {
		size_t h = 2;

		while (is_xdigit(s[h]))
			h++;
		k = h;
		if (s[k] == 'L')
			k += s[k + 1] == 'L' ? 2 : 1;
		if (k > best) {
			best = k;
			*is_int = true;
			*hex = true;
			*is64 = k > h;
		}
	}
	return best;
}
