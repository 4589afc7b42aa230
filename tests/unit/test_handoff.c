/* test_handoff.c - the fd-store names of connections (src/handoff.c):
 * "conn.ID.FLAGS" round trips without a source, "conn.ID.FLAGS.SRC" with
 * one (IPv4-mapped and IPv6), and ".sSTART" and ".bBYTES" (the start and
 * bytes echoed the histograms need), all within FDNAME's 255 characters;
 * names of an echod without those parts parse as before; malformed parts
 * are ignored (the peer address then counts; a start not known counts
 * from the import), other names are not connections. */
#include "handoff.h"

#include <stdint.h>
#include <string.h>

#include "tap.h"

int main(void)
{
	struct conn_export e = { .fd = 5, .flags = CONN_EOF | CONN_DRAIN };
	struct conn_export p;
	char name[HANDOFF_NAME_MAX];
	unsigned id;

	handoff_conn_name(name, sizeof(name), 7, &e);
	tap_ok(strcmp(name, "conn.7.9") == 0, "no source: conn.ID.FLAGS (%s)", name);
	tap_ok(handoff_parse_conn_name(name, &id, &p) && id == 7 && p.flags == 9 &&
	       !p.src_known && !p.start_us && !p.sent,
	       "no source: parsed back, source, start and bytes unknown");

	static const uint8_t v4[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 33 };
	e.src_known = true;
	memcpy(e.src, v4, 16);
	handoff_conn_name(name, sizeof(name), 4294967295u, &e);
	tap_ok(strcmp(name, "conn.4294967295.9.00000000000000000000ffffc0000221") == 0 &&
	       strlen(name) < 255, "a source: conn.ID.FLAGS.SRC, 32 hex digits (%s)", name);
	memset(&p, 0, sizeof(p));
	tap_ok(handoff_parse_conn_name(name, &id, &p) && p.src_known &&
	       memcmp(p.src, v4, 16) == 0 && id == 4294967295u, "a source: parsed back exactly");

	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0xff, 0xee, 0, 0, 0, 0, 0, 0,
					0xab, 0xcd, 0xef, 0x01 };
	memcpy(e.src, v6, 16);
	handoff_conn_name(name, 40, 1, &e);
	tap_ok(strcmp(name, "conn.1.9") == 0, "a buffer too short for the source: none, "
	       "never part of one (%s)", name);
	handoff_conn_name(name, sizeof(name), 1, &e);
	tap_ok(handoff_parse_conn_name(name, &id, &p) && p.src_known &&
	       memcmp(p.src, v6, 16) == 0, "an IPv6 source round trips (%s)", name);

	/* start and bytes: the largest of everything within HANDOFF_NAME_MAX */
	e.start_us = UINT64_MAX;
	e.sent = UINT64_MAX;
	e.flags = CONN_EXPORTED_FLAGS;
	handoff_conn_name(name, sizeof(name), 4294967295u, &e);
	tap_ok(strlen(name) == 96 && strlen(name) < HANDOFF_NAME_MAX &&
	       strstr(name, ".s18446744073709551615.b18446744073709551615"),
	       "source, start and bytes, all at their largest: %zu characters (%s)",
	       strlen(name), name);
	memset(&p, 0, sizeof(p));
	tap_ok(handoff_parse_conn_name(name, &id, &p) && p.src_known &&
	       memcmp(p.src, v6, 16) == 0 && p.start_us == UINT64_MAX && p.sent == UINT64_MAX &&
	       p.flags == CONN_EXPORTED_FLAGS, "... parsed back exactly");
	e.src_known = false;
	e.start_us = 123456789012;
	e.sent = 1100;
	handoff_conn_name(name, sizeof(name), 2, &e);
	tap_ok(strcmp(name, "conn.2.523.s123456789012.b1100") == 0 &&
	       handoff_parse_conn_name(name, &id, &p) && !p.src_known &&
	       p.start_us == 123456789012 && p.sent == 1100,
	       "start and bytes without a source round trip (%s)", name);
	e.sent = 0;
	handoff_conn_name(name, sizeof(name), 2, &e);
	tap_ok(strcmp(name, "conn.2.523.s123456789012") == 0 &&
	       handoff_parse_conn_name(name, &id, &p) && p.start_us == 123456789012 && !p.sent,
	       "nothing echoed yet: no .b part (%s)", name);
	handoff_conn_name(name, 20, 2, &e);
	tap_ok(strcmp(name, "conn.2.523") == 0, "a buffer too short for the start: none, "
	       "never part of one (%s)", name);

	tap_ok(handoff_parse_conn_name("conn.3.0.0123", &id, &p) && !p.src_known &&
	       id == 3, "a source of the wrong length: ignored (the peer address counts)");
	tap_ok(handoff_parse_conn_name("conn.3.0.00000000000000000000ffffc000022g", &id, &p) &&
	       !p.src_known, "a source not hex: ignored");
	tap_ok(handoff_parse_conn_name("conn.3.0.s12x.b18446744073709551616", &id, &p) &&
	       !p.start_us && !p.sent, "a start not all digits, bytes over 64 bits: ignored");
	tap_ok(handoff_parse_conn_name("conn.3.0.s.b.q7.b5.s9", &id, &p) && p.start_us == 9 &&
	       p.sent == 5, "empty and unknown parts ignored, the others read");
	tap_ok(handoff_parse_conn_name("conn.3.0.00000000000000000000ffffc0000221.s77", &id, &p) &&
	       p.src_known && memcmp(p.src, v4, 16) == 0 && p.start_us == 77 && !p.sent,
	       "a source then a start");
	tap_ok(!handoff_parse_conn_name("data.3", &id, &p) &&
	       !handoff_parse_conn_name("echo", &id, &p) &&
	       !handoff_parse_conn_name("conn.x.1", &id, &p),
	       "other names are not connections");
	return tap_done();
}
