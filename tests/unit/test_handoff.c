/* test_handoff.c - the fd-store names of connections (src/handoff.c):
 * "conn.ID.FLAGS" round trips without a source, "conn.ID.FLAGS.SRC" with
 * one (IPv4-mapped and IPv6), within FDNAME's 255 characters; malformed
 * sources are ignored (the peer address then counts), other names are
 * not connections. */
#include "handoff.h"

#include <string.h>

#include "tap.h"

int main(void)
{
	struct conn_export e = { .fd = 5, .flags = CONN_EOF | CONN_DRAIN };
	char name[HANDOFF_NAME_MAX];
	unsigned id, flags;
	uint8_t src[16];
	bool known;

	handoff_conn_name(name, sizeof(name), 7, &e);
	tap_ok(strcmp(name, "conn.7.9") == 0, "no source: conn.ID.FLAGS (%s)", name);
	tap_ok(handoff_parse_conn_name(name, &id, &flags, src, &known) && id == 7 && flags == 9 &&
	       !known, "no source: parsed back, source unknown");

	static const uint8_t v4[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 33 };
	e.src_known = true;
	memcpy(e.src, v4, 16);
	handoff_conn_name(name, sizeof(name), 4294967295u, &e);
	tap_ok(strcmp(name, "conn.4294967295.9.00000000000000000000ffffc0000221") == 0 &&
	       strlen(name) < 255, "a source: conn.ID.FLAGS.SRC, 32 hex digits (%s)", name);
	memset(src, 0, sizeof(src));
	tap_ok(handoff_parse_conn_name(name, &id, &flags, src, &known) && known &&
	       memcmp(src, v4, 16) == 0 && id == 4294967295u, "a source: parsed back exactly");

	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0xff, 0xee, 0, 0, 0, 0, 0, 0,
					0xab, 0xcd, 0xef, 0x01 };
	memcpy(e.src, v6, 16);
	handoff_conn_name(name, 40, 1, &e);
	tap_ok(strcmp(name, "conn.1.9") == 0, "a buffer too short for the source: none, "
	       "never part of one (%s)", name);
	handoff_conn_name(name, sizeof(name), 1, &e);
	tap_ok(handoff_parse_conn_name(name, &id, &flags, src, &known) && known &&
	       memcmp(src, v6, 16) == 0, "an IPv6 source round trips (%s)", name);

	tap_ok(handoff_parse_conn_name("conn.3.0.0123", &id, &flags, src, &known) && !known &&
	       id == 3, "a source of the wrong length: ignored (the peer address counts)");
	tap_ok(handoff_parse_conn_name("conn.3.0.00000000000000000000ffffc000022g", &id, &flags,
				       src, &known) && !known, "a source not hex: ignored");
	tap_ok(!handoff_parse_conn_name("data.3", &id, &flags, src, &known) &&
	       !handoff_parse_conn_name("echo", &id, &flags, src, &known) &&
	       !handoff_parse_conn_name("conn.x.1", &id, &flags, src, &known),
	       "other names are not connections");
	return tap_done();
}
