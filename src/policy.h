/* policy.h - who may use echod: the allow and deny lists compiled into an
 * immutable lookup structure, and the source address every check uses.
 *
 * The rule: the most specific matching prefix decides; the same prefix in
 * both lists is a deny; with no allow list everyone not denied may use
 * echod, with one only the sources an allow prefix matches (and no more
 * specific deny prefix).  An IPv4-mapped IPv6 source (::ffff:a.b.c.d) is
 * judged as IPv4, against the IPv4 prefixes only; the allow list, if not
 * empty, applies to both families (an IPv4-only allow list denies every
 * IPv6 source).
 *
 * A struct policy is built once per configuration (the main thread, at
 * start and at each reload that changes the lists: the only allocation),
 * never changes, and is shared by the workers through counted references:
 * a worker holds one in its parameters, and the structure is freed by
 * whoever drops the last, once no worker can look at it.  A lookup is a
 * binary search per prefix length present, longest first: at most 33
 * (IPv4) or 129 (IPv6) searches, none of them allocating.
 */
#ifndef ECHOD_POLICY_H
#define ECHOD_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

#define POLICY_PREFIX_TEXT_MAX 64     /* "ffff:...:ffff/128" with NUL, and room */

struct policy;

/* Parse "10.0.0.0/8", "2001:db8::/32" or a bare address (/32, /128) into
 * p.  Returns 0, or -EINVAL with why (why_size bytes) saying what is wrong:
 * not a prefix, a length out of range, host bits set. */
int policy_prefix_parse(const char *text, struct config_prefix *p, char *why,
			size_t why_size);

/* A prefix as text ("10.0.0.0/8", "2001:db8::/32"); buf holds
 * POLICY_PREFIX_TEXT_MAX bytes. */
void policy_prefix_format(const struct config_prefix *p, char *buf, size_t size);

/* Compile the lists (either may be empty).  Returns 0 with *out NULL when
 * both are empty (everyone may use echod: policy_allows(NULL, ...) is
 * true), 0 with *out holding one reference, or -ENOMEM. */
int policy_build(struct policy **out, const struct config_prefix *allow, unsigned n_allow,
		 const struct config_prefix *deny, unsigned n_deny);

/* The lists of cfg compiled: allow and deny (as policy_build()), and the
 * proxies trusted to send a PROXY header (proxy_protocol.trusted), in one
 * structure and one reference.  0 with *out NULL when all three are
 * empty, 0 with *out holding one reference, or -ENOMEM. */
int policy_build_config(struct policy **out, const struct echod_config *cfg);

/* Whether peer a is one of p's trusted proxies (false when p is NULL or
 * it has no trusted list). */
bool policy_trusted(const struct policy *p, const uint8_t a[16]);

/* Take one more reference (p may be NULL). */
void policy_ref(struct policy *p);
/* Drop one; the last frees p (p may be NULL).  Any thread. */
void policy_unref(struct policy *p);

/* Whether source a (16 bytes, IPv4 as ::ffff:a.b.c.d) may use echod. */
bool policy_allows(const struct policy *p, const uint8_t a[16]);

/* A socket address as 16 bytes (IPv4 as ::ffff:a.b.c.d) and its port;
 * false if it is neither IPv4 nor IPv6. */
bool policy_source(const struct sockaddr *sa, socklen_t len, uint8_t a[16], uint16_t *port);

/* Source a as text: "192.0.2.1" or "[2001:db8::1]"; buf holds 48 bytes. */
void policy_source_text(const uint8_t a[16], char *buf, size_t size);

#endif
