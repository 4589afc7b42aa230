/* config_schema.c - the table of settings and what walks it: reading a
 * parsed file setting by setting, the defaults, the reload diff and what a
 * reload keeps.
 *
 * The table (schema_settings[] below) is the one place that says, for each
 * setting, its type (config_types.c), default, range, unit, whether a
 * reload applies it and where it lives in struct echod_config;
 * config_dump.c prints it with a configuration (echod -T), and
 * tests/functional/test_docs.py holds the documentation against that print.
 */
#include "autoconfig.h"

#include "config.h"
#include "config_where.h"
#include "config_scan.h"
#include "config_schema.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#define FIELD(f) .offset = offsetof(struct echod_config, f), \
	.size = sizeof(((struct echod_config *)0)->f)
#define COUNT(f) .count_offset = offsetof(struct echod_config, f)
#define PORT(f) .port_offset = offsetof(struct echod_config, f)

/* ------------------------------------------------------------------ */
/* the table */

static const struct schema_enum backends[] = {
	{ "auto", CONFIG_BACKEND_AUTO },
	{ "io_uring", CONFIG_BACKEND_IO_URING },
	{ "epoll", CONFIG_BACKEND_EPOLL },
	{ NULL, 0 },
};

static const struct schema_enum log_levels[] = {
	{ "error", LOG_ERR },
	{ "warning", LOG_WARNING },
	{ "notice", LOG_NOTICE },
	{ "info", LOG_INFO },
	{ "debug", LOG_DEBUG },
	{ NULL, 0 },
};

_Static_assert(sizeof(enum config_backend) == sizeof(int), "enum fields are int-sized");

const struct schema_setting schema_settings[] = {
	{ .name = "backend", .type = &schema_enum, FIELD(backend), .values = backends,
	  .def = CONFIG_BACKEND_AUTO, .live = true, .changed = CONFIG_CHANGED_BACKEND,
	  .description = "I/O backend: auto is io_uring if the kernel allows it, else epoll" },
	{ .name = "port", .type = &schema_uint, FIELD(port), .min = 1, .max = 65535, .def = 7,
	  .live = false, .changed = CONFIG_CHANGED_LISTEN,
	  .description = "TCP port of the echo service (7: RFC 862)" },
	{ .name = "listen", .type = &schema_addr_list, FIELD(listen), COUNT(n_listen), PORT(port),
	  .max_count = CONFIG_MAX_LISTEN, .def_addr = "0.0.0.0 ::",
	  .live = false, .changed = CONFIG_CHANGED_LISTEN,
	  .description = "Addresses to listen on, no duplicates" },
	{ .name = "backlog", .type = &schema_uint, FIELD(backlog), .min = 1, .max = CONFIG_BACKLOG_MAX,
	  .def = 4096, .live = false, .changed = CONFIG_CHANGED_LISTEN,
	  .description = "Length of the queue of connections not yet accepted" },
	{ .name = "buffer_count", .type = &schema_uint, FIELD(buffer_count),
	  .min = CONFIG_BUFFER_COUNT_MIN, .max = CONFIG_BUFFER_COUNT_MAX, .unit = "buffers",
	  .def = 4096, .live = true, .changed = CONFIG_CHANGED_BUFFERS,
	  .description = "Receive buffers of each event loop" },
	{ .name = "buffer_size", .type = &schema_uint, FIELD(buffer_size),
	  .min = CONFIG_BUFFER_SIZE_MIN, .max = CONFIG_BUFFER_SIZE_MAX, .unit = "bytes",
	  .def = 4096, .live = true, .changed = CONFIG_CHANGED_BUFFERS,
	  .description = "Size of one receive buffer" },
	{ .name = "max_pending", .type = &schema_uint, FIELD(max_pending),
	  .min = CONFIG_MAX_PENDING_MIN, .max = CONFIG_MAX_PENDING_MAX, .unit = "bytes",
	  .def = 65536, .live = true, .changed = CONFIG_CHANGED_LIMITS,
	  .description = "Unsent bytes of a connection above which it is not read (backpressure)" },
	{ .name = "core", .type = &schema_core_list, FIELD(cores), COUNT(n_cores),
	  .min = 0, .max = CPU_SETSIZE - 1, .max_count = CONFIG_MAX_CORES, .cpus = true,
	  .live = true, .changed = CONFIG_CHANGED_CORES,
	  .description = "CPUs below the machine's count, one event loop pinned to each ([]: one, not pinned)" },
	{ .name = "max_connections", .type = &schema_uint, FIELD(max_connections),
	  .min = 1, .max = CONFIG_MAX_CONNECTIONS_MAX, .def = 65536,
	  .live = true, .changed = CONFIG_CHANGED_LIMITS,
	  .description = "Most client connections open at once, exact across event loops" },
	{ .name = "idle_timeout", .type = &schema_uint, FIELD(idle_timeout),
	  .min = 0, .max = CONFIG_IDLE_TIMEOUT_MAX, .unit = "seconds", .def = 300,
	  .live = true, .changed = CONFIG_CHANGED_LIMITS,
	  .description = "A connection without traffic this long is closed (0: never)" },
	{ .name = "shutdown_timeout", .type = &schema_uint, FIELD(shutdown_timeout),
	  .min = 1, .max = CONFIG_SHUTDOWN_TIMEOUT_MAX, .unit = "seconds", .def = 10,
	  .live = true, .changed = CONFIG_CHANGED_LIMITS,
	  .description = "How long a stop waits for connections to drain" },
	{ .name = "busy_poll_us", .type = &schema_uint, FIELD(busy_poll_us),
	  .min = 0, .max = CONFIG_BUSY_POLL_US_MAX, .unit = "microseconds", .def = 0,
	  .live = true, .changed = CONFIG_CHANGED_LIMITS,
	  .description = "After an event, each event loop polls this long before it sleeps (0: never)" },
	{ .name = "batch_wait_us", .type = &schema_uint, FIELD(batch_wait_us),
	  .min = 0, .max = CONFIG_BATCH_WAIT_US_MAX, .unit = "microseconds", .def = 0,
	  .live = true, .changed = CONFIG_CHANGED_LIMITS,
	  .description = "Under load, each event loop waits up to this long for more events "
			 "before it handles them (0: never, io_uring on kernel 6.12)" },
	{ .name = "log_level", .type = &schema_enum, FIELD(log_level), .values = log_levels,
	  .def = LOG_INFO, .live = true, .changed = CONFIG_CHANGED_LOG_LEVEL,
	  .description = "Lowest priority logged" },
	{ .name = "allow", .type = &schema_prefix_list, FIELD(allow), COUNT(n_allow),
	  .max_count = CONFIG_MAX_PREFIXES, .live = true, .changed = CONFIG_CHANGED_POLICY,
	  .description = "Sources that may use echod ([]: every source not denied)" },
	{ .name = "deny", .type = &schema_prefix_list, FIELD(deny), COUNT(n_deny),
	  .max_count = CONFIG_MAX_PREFIXES, .live = true, .changed = CONFIG_CHANGED_POLICY,
	  .description = "Sources refused (the most specific prefix decides, a tie denies)" },
	{ .name = "metrics.enabled", .type = &schema_bool, FIELD(metrics.enabled), .def = true,
	  .live = true, .changed = CONFIG_CHANGED_METRICS,
	  .description = "Serve the metrics endpoint" },
	{ .name = "metrics.address", .type = &schema_addr, FIELD(metrics.address),
	  PORT(metrics.port), .def_addr = "127.0.0.1",
	  .live = true, .changed = CONFIG_CHANGED_METRICS,
	  .description = "Address of the metrics endpoint" },
	{ .name = "metrics.port", .type = &schema_uint, FIELD(metrics.port), .min = 1, .max = 65535,
	  .def = 9100, .live = true, .changed = CONFIG_CHANGED_METRICS,
	  .description = "TCP port of the metrics endpoint (9100 is also node_exporter's)" },
	{ .name = "metrics.tls_certificate", .type = &schema_pem_file,
	  FIELD(metrics.tls_certificate), .live = true, .changed = CONFIG_CHANGED_METRICS,
	  .description = "Serve HTTPS with this PEM certificate (chain), read again at every reload" },
	{ .name = "metrics.tls_key", .type = &schema_pem_file, FIELD(metrics.tls_key),
	  .live = true, .changed = CONFIG_CHANGED_METRICS,
	  .description = "The PEM private key of metrics.tls_certificate, unencrypted" },
	{ .name = "metrics.basic_auth", .type = &schema_basic_auth, FIELD(metrics.basic_auth),
	  COUNT(metrics.n_basic_auth), .max_count = CONFIG_MAX_BASIC_AUTH,
	  .live = true, .changed = CONFIG_CHANGED_METRICS,
	  .description = "Users allowed to scrape, as htpasswd -nBC 10 USER prints ([]: anyone)" },
	{ .name = "udp.enabled", .type = &schema_bool, FIELD(udp.enabled), .def = false,
	  .live = false, .changed = CONFIG_CHANGED_LISTEN,
	  .description = "Bind the UDP echo sockets (a socket-activated datagram socket is served anyway)" },
	{ .name = "udp.port", .type = &schema_uint, FIELD(udp.port), .min = 1, .max = 65535, .def = 7,
	  .live = false, .changed = CONFIG_CHANGED_LISTEN,
	  .description = "UDP port of the echo service (7: RFC 862)" },
	{ .name = "udp.listen", .type = &schema_addr_list, FIELD(udp.listen), COUNT(udp.n_listen),
	  PORT(udp.port), .max_count = CONFIG_MAX_LISTEN, .def_addr = "0.0.0.0 ::",
	  .live = false, .changed = CONFIG_CHANGED_LISTEN,
	  .description = "Addresses to bind the UDP sockets to, no duplicates" },
	{ .name = "udp.gro", .type = &schema_bool, FIELD(udp.gro), .def = true,
	  .live = true, .changed = CONFIG_CHANGED_UDP,
	  .description = "Receive coalesced datagrams (UDP_GRO) and echo them in one send (UDP_SEGMENT)" },
	{ .name = "udp.coalesce", .type = &schema_bool, FIELD(udp.coalesce), .def = true,
	  .live = true, .changed = CONFIG_CHANGED_UDP,
	  .description = "Echo consecutive same-size datagrams of one source in one send (UDP_SEGMENT)" },
	{ .name = "udp.loop_ports", .type = &schema_port_list, FIELD(udp.loop_ports),
	  COUNT(udp.n_loop_ports), .min = 1, .max = 65535, .max_count = CONFIG_MAX_LOOP_PORTS,
	  .def_list = "7 9 13 19 37", .live = true, .changed = CONFIG_CHANGED_UDP,
	  .description = "Source ports never answered: services that answer anything (loop protection)" },
	{ .name = "udp.receive_buffer", .type = &schema_uint, FIELD(udp.receive_buffer),
	  .min = CONFIG_UDP_RCVBUF_MIN, .max = CONFIG_UDP_RCVBUF_MAX, .zero_ok = true,
	  .unit = "bytes", .def = 4194304, .live = true, .changed = CONFIG_CHANGED_UDP,
	  .description = "Receive buffer of each UDP socket, SO_RCVBUF (0: leave the socket's own)" },
	{ .name = "per_source.max_connections", .type = &schema_uint,
	  FIELD(per_source.max_connections), .min = 1, .max = CONFIG_MAX_CONNECTIONS_MAX,
	  .zero_ok = true, .def = 0, .live = true, .changed = CONFIG_CHANGED_PER_SOURCE,
	  .description = "TCP connections one source may hold open at once, exact across event loops (0: no limit)" },
	{ .name = "per_source.connection_rate", .type = &schema_uint,
	  FIELD(per_source.connection_rate), .min = 1, .max = CONFIG_PER_SOURCE_RATE_MAX,
	  .zero_ok = true, .unit = "per second", .def = 0, .live = true,
	  .changed = CONFIG_CHANGED_PER_SOURCE,
	  .description = "New TCP connections per second one source may open, a token bucket (0: no limit)" },
	{ .name = "per_source.connection_burst", .type = &schema_uint,
	  FIELD(per_source.connection_burst), .min = 1, .max = CONFIG_PER_SOURCE_RATE_MAX,
	  .unit = "connections", .def = 10, .live = true, .changed = CONFIG_CHANGED_PER_SOURCE,
	  .description = "Size of the connection_rate bucket: connections a source may open at once after a pause" },
	{ .name = "per_source.datagram_rate", .type = &schema_uint,
	  FIELD(per_source.datagram_rate), .min = 1, .max = CONFIG_PER_SOURCE_RATE_MAX,
	  .zero_ok = true, .unit = "per second", .def = 0, .live = true,
	  .changed = CONFIG_CHANGED_PER_SOURCE,
	  .description = "UDP datagrams per second one source may have echoed, a token bucket (0: no limit)" },
	{ .name = "per_source.datagram_burst", .type = &schema_uint,
	  FIELD(per_source.datagram_burst), .min = 1, .max = CONFIG_PER_SOURCE_RATE_MAX,
	  .unit = "datagrams", .def = 64, .live = true, .changed = CONFIG_CHANGED_PER_SOURCE,
	  .description = "Size of the datagram_rate bucket: datagrams a source may send at once after a pause" },
	{ .name = "per_source.ipv6_prefix", .type = &schema_uint,
	  FIELD(per_source.ipv6_prefix), .min = 1, .max = 128, .unit = "bits", .def = 64,
	  .live = true, .changed = CONFIG_CHANGED_PER_SOURCE,
	  .description = "IPv6 sources in one prefix of this length are one source (IPv4: each address)" },
	{ .name = "per_source.table_size", .type = &schema_uint, FIELD(per_source.table_size),
	  .min = CONFIG_PER_SOURCE_TABLE_MIN, .max = CONFIG_PER_SOURCE_TABLE_MAX, .unit = "entries",
	  .def = 65536, .live = false, .changed = CONFIG_CHANGED_PER_SOURCE_TABLE,
	  .description = "Sources the per-source table holds, about 76 bytes each" },
	{ .name = "proxy_protocol.enabled", .type = &schema_bool, FIELD(proxy_protocol.enabled),
	  .def = false, .live = true, .changed = CONFIG_CHANGED_LIMITS,
	  .description = "Every TCP client must open with a PROXY protocol header (v1 or v2), from a trusted address" },
	{ .name = "proxy_protocol.trusted", .type = &schema_prefix_list,
	  FIELD(proxy_protocol.trusted), COUNT(proxy_protocol.n_trusted),
	  .max_count = CONFIG_MAX_TRUSTED, .live = true, .changed = CONFIG_CHANGED_POLICY,
	  .description = "The proxies (load balancers) that may send a PROXY header, any other peer is reset" },
	{ .name = "proxy_protocol.timeout", .type = &schema_uint, FIELD(proxy_protocol.timeout),
	  .min = 1, .max = CONFIG_PROXY_TIMEOUT_MAX, .unit = "seconds", .def = 3, .live = true,
	  .changed = CONFIG_CHANGED_LIMITS,
	  .description = "A connection whose whole PROXY header has not come this long after accept is reset" },
};
const size_t schema_n_settings = sizeof(schema_settings) / sizeof(schema_settings[0]);

const struct schema_group schema_groups[] = {
	{ "metrics", "Prometheus metrics over HTTP at http://ADDRESS:PORT/metrics" },
	{ "udp", "The UDP echo service (RFC 862), datagram for datagram" },
	{ "per_source", "Limits per source address, exact across event loops" },
	{ "proxy_protocol", "The PROXY protocol (haproxy's v1 and v2) from trusted load balancers" },
};
const size_t schema_n_groups = sizeof(schema_groups) / sizeof(schema_groups[0]);

/* ------------------------------------------------------------------ */
/* walking the table */

static const struct schema_setting *lookup(const char *name)
{
	size_t i;

	for (i = 0; i < schema_n_settings; i++)
		if (!strcmp(schema_settings[i].name, name))
			return &schema_settings[i];
	return NULL;
}

/* Whether name is a group: some setting is named "name.something". */
static bool is_group(const char *name)
{
	size_t i, len = strlen(name);

	for (i = 0; i < schema_n_settings; i++)
		if (!strncmp(schema_settings[i].name, name, len) &&
		    schema_settings[i].name[len] == '.')
			return true;
	return false;
}

/* Set the port of every address to the port setting it takes. */
static void set_ports(struct echod_config *cfg)
{
	size_t i;

	for (i = 0; i < schema_n_settings; i++)
		schema_set_ports(&schema_settings[i], cfg);
}

/* Every setting of a group (prefix: "" or "metrics."). */
static void validate_group(struct scan *sc, const config_setting_t *group,
			   const char *prefix, struct echod_config *cfg)
{
	unsigned count = (unsigned)config_setting_length(group), i;

	for (i = 0; i < count; i++) {
		const config_setting_t *s = config_setting_get_elem(group, i);
		const struct schema_setting *st;
		char name[CONFIG_ERROR_MAX];

		snprintf(name, sizeof(name), "%s%s", prefix, config_setting_name(s));
		st = lookup(name);
		if (st) {
			st->type->parse(sc, s, st, cfg);
		} else if (is_group(name)) {
			if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
				where_error(sc, s, "%s: expected a group, got %s", name,
					    schema_type_name(s));
			} else {
				strcat(name, ".");
				validate_group(sc, s, name, cfg);
			}
		} else {
			where_error(sc, s, "unknown setting '%s'", name);
		}
	}
}

void schema_validate(struct scan *sc, const config_setting_t *root, struct echod_config *cfg)
{
	validate_group(sc, root, "", cfg);
	schema_check_tls(sc, root, cfg);
	set_ports(cfg);
}

void config_defaults(struct echod_config *cfg)
{
	size_t i;

	memset(cfg, 0, sizeof(*cfg));
	for (i = 0; i < schema_n_settings; i++)
		schema_settings[i].type->set_default(&schema_settings[i], cfg);
	set_ports(cfg);
}

unsigned config_diff(const struct echod_config *a, const struct echod_config *b)
{
	unsigned d = 0;
	size_t i;

	for (i = 0; i < schema_n_settings; i++)
		if (!schema_settings[i].type->equal(&schema_settings[i], a, b))
			d |= schema_settings[i].changed;
	return d;
}

unsigned config_restart_mask(void)
{
	unsigned m = 0;
	size_t i;

	for (i = 0; i < schema_n_settings; i++)
		if (!schema_settings[i].live)
			m |= schema_settings[i].changed;
	return m;
}

void config_restart_names(const struct echod_config *a, const struct echod_config *b,
			  char *buf, size_t size)
{
	size_t i, len = 0;

	if (!size)
		return;
	buf[0] = '\0';
	for (i = 0; i < schema_n_settings && len + 1 < size; i++) {
		int n;

		if (schema_settings[i].live ||
		    schema_settings[i].type->equal(&schema_settings[i], a, b))
			continue;
		n = snprintf(buf + len, size - len, "%s%s", len ? "/" : "",
			     schema_settings[i].name);
		if (n < 0)
			break;
		len += (size_t)n;
	}
}

void config_keep_restart(struct echod_config *next, const struct echod_config *running)
{
	size_t i;

	for (i = 0; i < schema_n_settings; i++) {
		const struct schema_setting *st = &schema_settings[i];

		if (st->live)
			continue;
		memcpy((char *)next + st->offset, (const char *)running + st->offset, st->size);
		if (st->count_offset)
			memcpy((char *)next + st->count_offset,
			       (const char *)running + st->count_offset, sizeof(unsigned));
	}
}

const char *config_backend_name(enum config_backend b)
{
	const char *name = schema_enum_name(lookup("backend"), (int)b);

	return name ? name : "unknown";
}

const char *config_log_level_name(int level)
{
	return schema_enum_name(lookup("log_level"), level);
}
