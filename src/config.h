/* config.h - echod configuration: defaults, loading, validation, diff,
 * dump.
 *
 * The configuration is a flat struct (no pointers) so that it can be
 * copied by value and passed through a pipe: config_load() parses the file
 * in a short-lived child process, so that no file, however broken, can
 * crash, hang or exit() the daemon (libconfig 1.5 exit()s on an @include
 * of a directory).  Errors are reported as "FILE:LINE: message".
 *
 * The modules behind it:
 *   config_schema.c   the table of settings: parsing, defaults, diff
 *   config_types.c    the types of settings: ints, enums, addresses, lists
 *   config_dump.c     the configuration printed as an echod.conf (echod -T)
 *   config_parse.c    a file through the scan, libconfig and the table
 *   config_where.c    where a libconfig setting stands: FILE:LINE of its errors
 *   config_scan.c     the pre-scanner guarding libconfig 1.5, @include
 *   config_literal.c  libconfig 1.5's number literals (wrapped integers)
 *   config_load.c     config_parse_file() in a child process, through a pipe
 */
#ifndef ECHOD_CONFIG_H
#define ECHOD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define CONFIG_MAX_LISTEN      16      /* entries in "listen" */
#define CONFIG_MAX_CORES       64      /* entries in "core" */
#define CONFIG_MAX_LOOP_PORTS  32      /* entries in "udp.loop_ports" */
#define CONFIG_MAX_PREFIXES    16384   /* entries in "allow", in "deny" */
#define CONFIG_MAX_TRUSTED     256     /* entries in "proxy_protocol.trusted" */
#define CONFIG_PROXY_TIMEOUT_MAX 60    /* seconds */
#define CONFIG_ADDR_MAX        64      /* an address string, with NUL */
#define CONFIG_PATH_MAX        4096
#define CONFIG_MAX_ERRORS      32      /* errors kept per load */
#define CONFIG_ERROR_MAX       512     /* one error message, with NUL */
#define CONFIG_PEM_MAX         65536   /* a PEM file read by "metrics.tls_*", bytes */
#define CONFIG_MAX_BASIC_AUTH  64      /* entries in "metrics.basic_auth" */
#define CONFIG_USER_MAX        64      /* a basic auth user name, with NUL */
#define CONFIG_BCRYPT_LEN      60      /* a bcrypt hash: "$2y$NN$" + 53 characters */

/* Hard ranges: the values the settings table (config_schema.c) uses,
 * shared with the tests. */
#define CONFIG_BUFFER_COUNT_MIN     8
#define CONFIG_BUFFER_COUNT_MAX     32768
#define CONFIG_BUFFER_SIZE_MIN      512
#define CONFIG_BUFFER_SIZE_MAX      (1024 * 1024)
#define CONFIG_MAX_CONNECTIONS_MAX  1048576
#define CONFIG_IDLE_TIMEOUT_MAX     86400       /* seconds; 0 = never */
#define CONFIG_BUSY_POLL_US_MAX     100000      /* µs; 0 = off */
#define CONFIG_BATCH_WAIT_US_MAX    10000       /* µs; 0 = off */
#define CONFIG_SHUTDOWN_TIMEOUT_MAX 3600        /* seconds */
#define CONFIG_MAX_PENDING_MIN      1024        /* bytes */
#define CONFIG_MAX_PENDING_MAX      (64 * 1024 * 1024)
#define CONFIG_BACKLOG_MAX          65535
#define CONFIG_UDP_RCVBUF_MIN       65536       /* bytes; 0 = the socket's own */
#define CONFIG_UDP_RCVBUF_MAX       (1024 * 1024 * 1024)
#define CONFIG_PER_SOURCE_RATE_MAX  1000000     /* per second; 0 = off */
#define CONFIG_PER_SOURCE_TABLE_MIN 16          /* entries */
#define CONFIG_PER_SOURCE_TABLE_MAX 16777216

enum config_backend {
	CONFIG_BACKEND_AUTO = 0,
	CONFIG_BACKEND_IO_URING,
	CONFIG_BACKEND_EPOLL,
};

/* sd-daemon priorities, as in syslog.h: 3 err, 4 warning, 6 info, 7 debug */
struct config_addr {
	char text[CONFIG_ADDR_MAX];         /* as written, e.g. "::1" */
	struct sockaddr_storage sa;         /* parsed, with the port set */
	socklen_t salen;
};

/* A PEM file of "metrics.tls_certificate" or "metrics.tls_key": its path
 * as written ("" = none) and its content, read when the file is loaded
 * (every load and reload reads it again), NUL-terminated. */
struct config_pem {
	char path[CONFIG_PATH_MAX];
	uint32_t len;                       /* bytes of data, without the NUL */
	char data[CONFIG_PEM_MAX + 1];
};

/* An entry of "metrics.basic_auth": "USER:BCRYPT-HASH" (metrics_auth.h). */
struct config_cred {
	char user[CONFIG_USER_MAX];
	char hash[CONFIG_BCRYPT_LEN + 1];
};

/* A prefix of "allow" or "deny": 17 bytes, so that both lists at their
 * largest stay under 600 KB.  An IPv4 prefix a.b.c.d/N is stored as
 * ::ffff:a.b.c.d/(96 + N); host bits are zero. */
struct config_prefix {
	uint8_t addr[16];
	uint8_t len;                        /* 0..128 */
};

struct echod_config {
	char path[CONFIG_PATH_MAX];         /* file this was loaded from */
	enum config_backend backend;        /* "backend": default auto */
	uint16_t port;                      /* "port": default 7, 1..65535 */
	unsigned n_listen;                  /* "listen": default ["0.0.0.0","::"] */
	struct config_addr listen[CONFIG_MAX_LISTEN];
	uint32_t backlog;                   /* "backlog": default 4096, 1..65535 */
	uint32_t buffer_count;              /* "buffer_count": default 4096 */
	uint32_t buffer_size;               /* "buffer_size": default 4096 (bytes) */
	uint32_t max_pending;               /* "max_pending": backpressure cap per connection, default 65536 */
	unsigned n_cores;                   /* "core": int or list; 0 entries = not pinned */
	int cores[CONFIG_MAX_CORES];        /* each 0..CPU_SETSIZE-1, no duplicates */
	uint32_t max_connections;           /* "max_connections": default 65536, 1..1048576 */
	uint32_t idle_timeout;              /* "idle_timeout": seconds, default 300, 0 = never */
	uint32_t shutdown_timeout;          /* "shutdown_timeout": seconds, default 10 */
	uint32_t busy_poll_us;              /* "busy_poll_us": µs, default 0 = off */
	uint32_t batch_wait_us;             /* "batch_wait_us": µs, default 0 = off */
	int log_level;                      /* "log_level": "error","warning","notice","info","debug"; default info */
	struct {
		bool enabled;                   /* "metrics.enabled": default true */
		struct config_addr address;     /* "metrics.address": default "127.0.0.1" */
		uint16_t port;                  /* "metrics.port": default 9100 */
		/* TLS and basic auth (config_tls.c): live, the files read at every load */
		struct config_pem tls_certificate;  /* "metrics.tls_certificate": default "" */
		struct config_pem tls_key;          /* "metrics.tls_key": default "" */
		unsigned n_basic_auth;              /* "metrics.basic_auth": default [] */
		struct config_cred basic_auth[CONFIG_MAX_BASIC_AUTH];
	} metrics;
	struct {
		bool enabled;                   /* "udp.enabled": bind UDP sockets, default false */
		uint16_t port;                  /* "udp.port": default 7 */
		unsigned n_listen;              /* "udp.listen": default ["0.0.0.0","::"] */
		struct config_addr listen[CONFIG_MAX_LISTEN];
		bool gro;                       /* "udp.gro": UDP_GRO in, UDP_SEGMENT out; default true */
		bool coalesce;                  /* "udp.coalesce": runs of echoes in one UDP_SEGMENT send; default true */
		unsigned n_loop_ports;          /* "udp.loop_ports": source ports never answered */
		uint16_t loop_ports[CONFIG_MAX_LOOP_PORTS];
		uint32_t receive_buffer;        /* "udp.receive_buffer": SO_RCVBUF, 0 = leave it */
	} udp;
	struct {
		uint32_t max_connections;       /* "per_source.max_connections": open at once, 0 = off */
		uint32_t connection_rate;       /* "per_source.connection_rate": per second, 0 = off */
		uint32_t connection_burst;      /* "per_source.connection_burst": its bucket */
		uint32_t datagram_rate;         /* "per_source.datagram_rate": per second, 0 = off */
		uint32_t datagram_burst;        /* "per_source.datagram_burst": its bucket */
		uint32_t ipv6_prefix;           /* "per_source.ipv6_prefix": 1..128, default 64 */
		uint32_t table_size;            /* "per_source.table_size": entries, restart only */
	} per_source;
	struct {
		bool enabled;                   /* "proxy_protocol.enabled": TCP clients open
						   with a PROXY header, default false */
		uint32_t timeout;               /* "proxy_protocol.timeout": seconds, default 3 */
		unsigned n_trusted;             /* "proxy_protocol.trusted": who may send one */
		struct config_prefix trusted[CONFIG_MAX_TRUSTED];
	} proxy_protocol;
	/* last: large (the struct is on the heap wherever it is copied) */
	unsigned n_allow;                   /* "allow": prefixes, default [] (everyone) */
	struct config_prefix allow[CONFIG_MAX_PREFIXES];
	unsigned n_deny;                    /* "deny": prefixes, default [] */
	struct config_prefix deny[CONFIG_MAX_PREFIXES];
};

struct config_errors {
	unsigned n;                         /* errors found (may exceed what is kept) */
	char msg[CONFIG_MAX_ERRORS][CONFIG_ERROR_MAX];
};

/* Fill cfg with the built-in defaults (path left empty). */
void config_defaults(struct echod_config *cfg);

/* Parse and validate FILE in this process.  Returns 0 and fills cfg, or
 * -EINVAL with every error found in errs (each "FILE:LINE: message", or
 * "FILE: message" where no line applies), or another -errno. cfg is
 * written only on success. */
int config_parse_file(const char *path, struct echod_config *cfg,
		      struct config_errors *errs);

/* As config_parse_file(), but in a child process with a time and memory
 * limit: a parser crash, exit or hang becomes an error in errs. */
int config_load(const char *path, struct echod_config *cfg,
		struct config_errors *errs);

/* Append an error; printf-like. */
void config_error(struct config_errors *errs, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Name of a backend value ("auto", "io_uring", "epoll"). */
const char *config_backend_name(enum config_backend b);

/* Name of a log level (sd-daemon priority) or NULL. */
const char *config_log_level_name(int level);

/* Bit set of CONFIG_CHANGED_* naming what differs between a and b. */
#define CONFIG_CHANGED_BACKEND      (1u << 0)
#define CONFIG_CHANGED_LISTEN       (1u << 1)  /* the sockets: port, listen, backlog,
						  udp.enabled, udp.port, udp.listen */
#define CONFIG_CHANGED_BUFFERS      (1u << 2)  /* buffer_count, buffer_size */
#define CONFIG_CHANGED_CORES        (1u << 3)
#define CONFIG_CHANGED_LIMITS       (1u << 4)  /* max_connections, idle/shutdown timeouts, max_pending,
						  proxy_protocol.enabled and .timeout */
#define CONFIG_CHANGED_LOG_LEVEL    (1u << 5)
#define CONFIG_CHANGED_METRICS      (1u << 6)
#define CONFIG_CHANGED_UDP          (1u << 7)  /* udp.gro, udp.coalesce, udp.loop_ports,
						  udp.receive_buffer */
#define CONFIG_CHANGED_POLICY       (1u << 8)  /* allow, deny, proxy_protocol.trusted */
#define CONFIG_CHANGED_PER_SOURCE   (1u << 9)  /* per_source.*, but table_size */
#define CONFIG_CHANGED_PER_SOURCE_TABLE (1u << 10)  /* per_source.table_size */
unsigned config_diff(const struct echod_config *a, const struct echod_config *b);

/* The CONFIG_CHANGED_* bits of the settings a reload does not apply (they
 * take effect at the next restart). */
unsigned config_restart_mask(void);

/* The names of the settings that only a restart applies and that differ
 * between a and b, "/"-separated ("port/udp.listen"); "" if none. */
void config_restart_names(const struct echod_config *a, const struct echod_config *b,
			  char *buf, size_t size);

/* Copy into next, from running, every setting a reload does not apply. */
void config_keep_restart(struct echod_config *next, const struct echod_config *running);

/* Print cfg to out as an echod.conf that loads back to the same
 * configuration, each setting after two comment lines: its description,
 * then "# default: D; range: R; reload: live|restart".  Returns 0 or
 * -errno (out of memory, a write error). */
int config_dump(FILE *out, const struct echod_config *cfg);

#endif
