/* test_config.c - unit tests of src/config.c (TAP).
 *
 * Configuration files are generated at run time into a mkdtemp() directory,
 * one subdirectory per case, so that the tables below hold both the input
 * and the exact expected messages.  In a message "$F" stands for the case's
 * main.conf and "$D" for the case directory.  Every good and bad case is
 * also run through config_load() (the forked parser), which must give the
 * same result.
 *
 * Environment: ECHOD_SRCDIR (the source tree, for etc/echod.conf).
 */
#include "autoconfig.h"

#include "config.h"
#include "config_schema.h"
#include "fdutil.h"
#include "tap.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* the config_load() child hook (see config.c) */

void config_test_child_hook(void);
void config_test_child_hook(void)
{
	const char *h = getenv("ECHOD_TEST_CHILD_HOOK");

	if (!h)
		return;
	if (!strcmp(h, "hang"))
		for (;;)
			pause();
	if (!strcmp(h, "crash"))
		raise(SIGSEGV);
	if (!strcmp(h, "exit"))
		exit(2);        /* what libconfig/flex do on a fatal error */
}

/* ------------------------------------------------------------------ */
/* helpers */

static char tmpdir[512];
static long ncpus;

static void die(const char *what)
{
	printf("Bail out! %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Replace $D by dir and $F by dir/main.conf. */
static void subst(char *out, size_t size, const char *in, const char *dir)
{
	size_t o = 0;

	while (*in && o + 1 < size) {
		if (in[0] == '$' && (in[1] == 'D' || in[1] == 'F')) {
			int n = snprintf(out + o, size - o, "%s%s", dir,
					 in[1] == 'F' ? "/main.conf" : "");

			o += n > 0 ? (size_t)n : 0;
			if (o >= size)
				o = size - 1;
			in += 2;
		} else {
			out[o++] = *in++;
		}
	}
	out[o] = '\0';
}

static void write_file(const char *path, const char *text, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		die(path);
	if (len && write(fd, text, len) != (ssize_t)len)
		die(path);
	close(fd);
}

struct file {
	const char *name;       /* relative to the case directory */
	const char *text;       /* NULL: a directory */
};

#define MAX_EXTRA 12

/* Make a fresh case directory with main.conf (unless text is NULL) and
 * extra files; returns the directory in dir. */
static void make_case(char *dir, size_t size, const char *text,
		      const struct file *extra)
{
	static unsigned n;
	char path[PATH_MAX], body[8192];
	unsigned i;

	snprintf(dir, size, "%s/c%03u", tmpdir, n++);
	if (mkdir(dir, 0755) < 0)
		die(dir);
	for (i = 0; extra && i < MAX_EXTRA && extra[i].name; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, extra[i].name);
		if (!extra[i].text) {
			if (mkdir(path, 0755) < 0)
				die(path);
			continue;
		}
		subst(body, sizeof(body), extra[i].text, dir);
		write_file(path, body, strlen(body));
	}
	if (text) {
		snprintf(path, sizeof(path), "%s/main.conf", dir);
		subst(body, sizeof(body), text, dir);
		write_file(path, body, strlen(body));
	}
}

static bool addr_eq(const struct config_addr *a, const struct config_addr *b)
{
	return !strcmp(a->text, b->text) && a->salen == b->salen &&
	       memcmp(&a->sa, &b->sa, a->salen) == 0;
}

/* Field by field; says which field differs. */
static bool cfg_equal(const struct echod_config *a, const struct echod_config *b)
{
	unsigned i;

#define SAME(f) do { if (a->f != b->f) { tap_diag("  %s differs: %lld vs %lld", #f, \
		(long long)a->f, (long long)b->f); return false; } } while (0)
	SAME(backend);
	SAME(port);
	SAME(n_listen);
	for (i = 0; i < a->n_listen && i < CONFIG_MAX_LISTEN; i++) {
		if (!addr_eq(&a->listen[i], &b->listen[i])) {
			tap_diag("  listen[%u] differs: '%s' vs '%s'", i,
				 a->listen[i].text, b->listen[i].text);
			return false;
		}
	}
	SAME(backlog);
	SAME(buffer_count);
	SAME(buffer_size);
	SAME(max_pending);
	SAME(n_cores);
	for (i = 0; i < a->n_cores && i < CONFIG_MAX_CORES; i++)
		SAME(cores[i]);
	SAME(max_connections);
	SAME(idle_timeout);
	SAME(shutdown_timeout);
	SAME(busy_poll_us);
	SAME(log_level);
	SAME(metrics.enabled);
	SAME(metrics.port);
	if (!addr_eq(&a->metrics.address, &b->metrics.address)) {
		tap_diag("  metrics.address differs: '%s' vs '%s'",
			 a->metrics.address.text, b->metrics.address.text);
		return false;
	}
	if (strcmp(a->path, b->path)) {
		tap_diag("  path differs: '%s' vs '%s'", a->path, b->path);
		return false;
	}
#undef SAME
	return config_diff(a, b) == 0;
}

static bool errs_equal(const struct config_errors *a, const struct config_errors *b)
{
	unsigned i;

	if (a->n != b->n)
		return false;
	for (i = 0; i < a->n && i < CONFIG_MAX_ERRORS; i++)
		if (strcmp(a->msg[i], b->msg[i]))
			return false;
	return true;
}

static void dump_errs(const struct config_errors *e)
{
	unsigned i;

	tap_diag("  %u error(s):", e->n);
	for (i = 0; i < e->n && i < CONFIG_MAX_ERRORS; i++)
		tap_diag("    %s", e->msg[i]);
}

/* Check errs against the expected messages (with $D/$F); one TAP line. */
static void check_errors(const char *name, const char *dir, int r, int want_r,
			 const struct config_errors *errs, const char *const *want)
{
	char exp[CONFIG_ERROR_MAX * 2];
	unsigned n = 0, i;
	bool ok = r == want_r;

	while (want[n])
		n++;
	if (errs->n != n)
		ok = false;
	for (i = 0; ok && i < n && i < CONFIG_MAX_ERRORS; i++) {
		subst(exp, sizeof(exp), want[i], dir);
		if (strcmp(errs->msg[i], exp)) {
			tap_diag("  message %u: got      '%s'", i, errs->msg[i]);
			tap_diag("  message %u: expected '%s'", i, exp);
			ok = false;
		}
	}
	tap_ok(ok, "%s: %d error(s), exact messages", name, n);
	if (!ok) {
		tap_diag("  returned %d (expected %d)", r, want_r);
		dump_errs(errs);
	}
}

/* config_load() must give what config_parse_file() gave. */
static void check_load_same(const char *name, const char *path, int r,
			    const struct echod_config *cfg,
			    const struct config_errors *errs)
{
	static struct echod_config c2;   /* ~570 KB each: not on the stack */
	struct config_errors e2;
	int r2;

	memset(&c2, 0, sizeof(c2));
	r2 = config_load(path, &c2, &e2);
	tap_ok(r2 == r && errs_equal(errs, &e2) && (r != 0 || cfg_equal(cfg, &c2)),
	       "%s: config_load() gives the same result", name);
	if (r2 != r || !errs_equal(errs, &e2)) {
		tap_diag("  config_load returned %d, config_parse_file %d", r2, r);
		dump_errs(&e2);
	}
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_fds(void)
{
	return fdu_count();
}

static void set_addr(struct config_addr *a, const char *text, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	snprintf(a->text, sizeof(a->text), "%s", text);
	if (strchr(text, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->sa;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		if (inet_pton(AF_INET6, text, &s6->sin6_addr) != 1)
			abort();
		a->salen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&a->sa;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		if (inet_pton(AF_INET, text, &s4->sin_addr) != 1)
			abort();
		a->salen = sizeof(*s4);
	}
}

/* ------------------------------------------------------------------ */
/* good files: text, and what differs from the defaults */

static void x_none(struct echod_config *c)
{
	(void)c;
}

static void x_all(struct echod_config *c)
{
	c->backend = CONFIG_BACKEND_EPOLL;
	c->port = 7007;
	c->n_listen = 3;
	set_addr(&c->listen[0], "127.0.0.1", 7007);
	set_addr(&c->listen[1], "::1", 7007);
	set_addr(&c->listen[2], "192.0.2.1", 7007);
	c->backlog = 128;
	c->buffer_count = 8;
	c->buffer_size = 512;
	c->max_pending = 1024;
	c->n_cores = 1;
	c->cores[0] = 0;
	c->max_connections = 1;
	c->idle_timeout = 0;
	c->shutdown_timeout = 1;
	c->log_level = LOG_DEBUG;
	c->metrics.enabled = false;
	c->metrics.port = 9200;
	set_addr(&c->metrics.address, "::1", 9200);
}

static void x_max(struct echod_config *c)
{
	c->backend = CONFIG_BACKEND_IO_URING;
	c->port = 65535;
	set_addr(&c->listen[0], "0.0.0.0", 65535);
	set_addr(&c->listen[1], "::", 65535);
	c->backlog = CONFIG_BACKLOG_MAX;
	c->buffer_count = CONFIG_BUFFER_COUNT_MAX;
	c->buffer_size = CONFIG_BUFFER_SIZE_MAX;
	c->max_pending = CONFIG_MAX_PENDING_MAX;
	c->max_connections = CONFIG_MAX_CONNECTIONS_MAX;
	c->idle_timeout = CONFIG_IDLE_TIMEOUT_MAX;
	c->shutdown_timeout = CONFIG_SHUTDOWN_TIMEOUT_MAX;
	c->busy_poll_us = CONFIG_BUSY_POLL_US_MAX;
	c->log_level = LOG_ERR;
	c->metrics.port = 65535;
	set_addr(&c->metrics.address, "127.0.0.1", 65535);
}

static void x_listen_one(struct echod_config *c)
{
	memset(c->listen, 0, sizeof(c->listen));
	c->n_listen = 1;
	set_addr(&c->listen[0], "::1", 7);
}

static void x_listen_after_port(struct echod_config *c)
{
	memset(c->listen, 0, sizeof(c->listen));
	c->n_listen = 2;
	c->port = 1234;
	set_addr(&c->listen[0], "10.1.2.3", 1234);
	set_addr(&c->listen[1], "fe80::1", 1234);
}

static void x_core0(struct echod_config *c)
{
	c->n_cores = 1;
	c->cores[0] = 0;
}

static void x_hex(struct echod_config *c)
{
	c->buffer_size = 0x1000 * 2;
	c->max_pending = 1048576;
	c->backlog = 100;
	c->max_connections = 1000000;
}

static void x_include(struct echod_config *c)
{
	c->port = 8;
	set_addr(&c->listen[0], "0.0.0.0", 8);
	set_addr(&c->listen[1], "::", 8);
	c->backlog = 5;
	c->log_level = LOG_WARNING;
	c->idle_timeout = 60;
}

static void x_logs_notice(struct echod_config *c)
{
	c->log_level = LOG_NOTICE;
	c->backend = CONFIG_BACKEND_AUTO;
}

static void x_metrics_part(struct echod_config *c)
{
	c->metrics.port = 9101;
	set_addr(&c->metrics.address, "127.0.0.1", 9101);
}

static void x_backlog5(struct echod_config *c)
{
	c->backlog = 5;
	c->log_level = LOG_WARNING;
}

static void x_idle(struct echod_config *c)
{
	c->idle_timeout = 42;
}

static void set_prefix(struct config_prefix *p, const char *addr, unsigned len)
{
	memset(p, 0, sizeof(*p));
	if (inet_pton(AF_INET, addr, p->addr + 12) == 1) {
		p->addr[10] = p->addr[11] = 0xff;
		len += 96;
	} else {
		inet_pton(AF_INET6, addr, p->addr);
	}
	p->len = (uint8_t)len;
}

static void x_lists(struct echod_config *c)
{
	c->n_allow = 3;
	set_prefix(&c->allow[0], "10.0.0.0", 8);
	set_prefix(&c->allow[1], "2001:db8::", 32);
	set_prefix(&c->allow[2], "192.0.2.1", 32);
	c->n_deny = 2;
	set_prefix(&c->deny[0], "::1", 128);
	set_prefix(&c->deny[1], "10.1.0.0", 16);
}

struct good_case {
	const char *name;
	const char *text;
	struct file extra[MAX_EXTRA];
	void (*expect)(struct echod_config *);
};

static const struct good_case good[] = {
	{ "empty file", "", {{0}}, x_none },
	{ "allow and deny: a list, a string; a bare address is /32 or /128",
	  "allow = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.1\"];\n"
	  "deny = [\"::1\", \"::ffff:10.1.0.0/112\"];\n", {{0}}, x_lists },
	{ "comments and blank lines only",
	  "# hash\n// slashes\n/* block\n   comment */\n\n   \n", {{0}}, x_none },
	{ "every setting",
	  "backend = \"epoll\";\n"
	  "port = 7007;\n"
	  "listen = [\"127.0.0.1\", \"::1\", \"192.0.2.1\"];\n"
	  "backlog = 128;\n"
	  "buffer_count = 8;\n"
	  "buffer_size = 512;\n"
	  "max_pending = 1024;\n"
	  "core = 0;\n"
	  "max_connections = 1;\n"
	  "idle_timeout = 0;\n"
	  "shutdown_timeout = 1;\n"
	  "log_level = \"debug\";\n"
	  "metrics = { enabled = false; address = \"::1\"; port = 9200; };\n",
	  {{0}}, x_all },
	{ "every maximum, colons, no semicolons, list syntax",
	  "backend: \"io_uring\"\nport: 65535\nbacklog = 65535\n"
	  "buffer_count = 32768\nbuffer_size = 1048576\nmax_pending = 67108864\n"
	  "max_connections = 1048576\nidle_timeout = 86400\n"
	  "shutdown_timeout = 3600\nlog_level = \"error\"\nbusy_poll_us = 100000\n"
	  "listen = (\"0.0.0.0\", \"::\")\n"
	  "metrics: { port = 65535 }\n",
	  {{0}}, x_max },
	{ "listen as a single string", "listen = \"::1\";\n", {{0}}, x_listen_one },
	{ "listen before port gets the port",
	  "listen = [\"10.1.2.3\", \"fe80::1\"];\nport = 1234;\n", {{0}},
	  x_listen_after_port },
	{ "core as an int", "core = 0;\n", {{0}}, x_core0 },
	{ "core as a list", "core = [0];\n", {{0}}, x_core0 },
	{ "core as a () list", "core = ( 0 );\n", {{0}}, x_core0 },
	{ "core as an empty list", "core = [];\n", {{0}}, x_none },
	{ "hex, L suffixes, + sign, leading zeros",
	  "buffer_size = 0x2000;\nmax_pending = 1048576L;\nbacklog = +0100;\n"
	  "max_connections = 0xF4240LL;\n", {{0}}, x_hex },
	{ "integers in strings, comments and names are not literals",
	  "log_level = \"notice\"; # 4294967297\n"
	  "// 0x100000001\n/* 99999999999999999999\n 4294967297 */\n"
	  "backend = \"auto\"; # \"4294967297\n", {{0}}, x_logs_notice },
	{ "metrics partly set", "metrics = {\n  port = 9101;\n};\n", {{0}},
	  x_metrics_part },
	{ "@include of a good file that sets values",
	  "port = 8;\n@include \"inc.conf\"\nidle_timeout = 60;\n",
	  {{ "inc.conf", "backlog = 5;\nlog_level = \"warning\";\n" }}, x_include },
	{ "@include relative to the including file, absolute, then the rest of the line",
	  "@include \"sub/a.conf\" backlog = 5;\n",
	  {{ "sub", NULL }, { "sub/a.conf", "  @include\t\"b.conf\"\n" },
	   { "sub/b.conf", "@include \"$D/c.conf\"\n" },
	   { "c.conf", "log_level = \"warning\"" }}, x_backlog5 },
	{ "@include of an empty file",
	  "@include \"empty.conf\"\nidle_timeout = 42;\n",
	  {{ "empty.conf", "" }}, x_idle },
	{ "@include nested 10 deep",
	  "@include \"i1.conf\"\n",
	  {{ "i1.conf", "@include \"i2.conf\"\n" }, { "i2.conf", "@include \"i3.conf\"\n" },
	   { "i3.conf", "@include \"i4.conf\"\n" }, { "i4.conf", "@include \"i5.conf\"\n" },
	   { "i5.conf", "@include \"i6.conf\"\n" }, { "i6.conf", "@include \"i7.conf\"\n" },
	   { "i7.conf", "@include \"i8.conf\"\n" }, { "i8.conf", "@include \"i9.conf\"\n" },
	   { "i9.conf", "@include \"i10.conf\"\n" }, { "i10.conf", "idle_timeout = 42;\n" }},
	  x_idle },
	{ "an @include that is not at the start of a line is text",
	  "idle_timeout = 42; # @include \"nope\"\n/*\n@include \"nope\"\n*/\n", {{0}},
	  x_idle },
};

/* ------------------------------------------------------------------ */
/* bad files */

struct bad_case {
	const char *name;
	const char *text;
	struct file extra[MAX_EXTRA];
	int ret;                        /* 0: -EINVAL */
	const char *errors[40];
};

static const struct bad_case bad[] = {
	{ "wrong types, every setting",
	  "backend = 1;\n"
	  "port = \"7\";\n"
	  "listen = 1;\n"
	  "backlog = true;\n"
	  "buffer_count = \"x\";\n"
	  "buffer_size = [1];\n"
	  "max_pending = 1.5;\n"
	  "core = \"0\";\n"
	  "max_connections = { };\n"
	  "idle_timeout = (1);\n"
	  "shutdown_timeout = 1e3;\n"
	  "log_level = 6;\n"
	  "metrics = {\n"
	  "  enabled = 1;\n"
	  "  address = 127;\n"
	  "  port = \"9100\";\n"
	  "};\n",
	  {{0}}, 0,
	  { "$F:1: backend: expected a string, got an integer",
	    "$F:2: port: expected an integer, got a string",
	    "$F:3: listen: expected a string or a list of strings, got an integer",
	    "$F:4: backlog: expected an integer, got a boolean",
	    "$F:5: buffer_count: expected an integer, got a string",
	    "$F:6: buffer_size: expected an integer, got an array",
	    "$F:7: max_pending: expected an integer, got a float",
	    "$F:8: core: expected an integer or a list of integers, got a string",
	    "$F:9: max_connections: expected an integer, got a group",
	    "$F:10: idle_timeout: expected an integer, got a list",
	    "$F:11: shutdown_timeout: expected an integer, got a float",
	    "$F:12: log_level: expected a string, got an integer",
	    "$F:14: metrics.enabled: expected a boolean, got an integer",
	    "$F:15: metrics.address: expected a string, got an integer",
	    "$F:16: metrics.port: expected an integer, got a string",
	    NULL } },
	{ "wrong element types", "listen = (\"::1\", 2);\ncore = (0, \"1\", 2.0);\n"
	  "metrics = 1;\ndeny = 5;\n", {{0}}, 0,
	  { "$F:1: listen[1]: expected a string, got an integer",
	    "$F:2: core[1]: expected an integer, got a string",
	    "$F:2: core[2]: expected an integer, got a float",
	    "$F:3: metrics: expected a group, got an integer",
	    "$F:4: deny: expected a string or a list of strings, got an integer",
	    NULL } },
	{ "bad prefixes",
	  "allow = (\"10.0.0.1/8\", \"10.0.0.0/33\", \"host.example\", 7, \"2001:db8::1/32\");\n"
	  "deny = (\"::/129\", \"10.0.0.0/\", \"1.2.3/8\");\n"
	  "udp = { };\nallow6 = 1;\n", {{0}}, 0,
	  { "$F:1: allow: '10.0.0.1/8' has host bits set (the prefix is 10.0.0.0/8)",
	    "$F:1: allow: '10.0.0.0/33' has a prefix length out of range 0..32",
	    "$F:1: allow: 'host.example' is not an IPv4 or IPv6 prefix",
	    "$F:1: allow[3]: expected a string, got an integer",
	    "$F:1: allow: '2001:db8::1/32' has host bits set (the prefix is 2001:db8::/32)",
	    "$F:2: deny: '::/129' has a prefix length out of range 0..128",
	    "$F:2: deny: '10.0.0.0/' has a prefix length out of range 0..32",
	    "$F:2: deny: '1.2.3/8' is not an IPv4 or IPv6 prefix",
	    "$F:4: unknown setting 'allow6'",
	    NULL } },
	{ "below range, every integer setting",
	  "port = 0;\nbacklog = 0;\nbuffer_count = 7;\nbuffer_size = 511;\n"
	  "max_pending = 1023;\ncore = -1;\nmax_connections = 0;\n"
	  "idle_timeout = -1;\nshutdown_timeout = 0;\nmetrics = { port = 0; };\n",
	  {{0}}, 0,
	  { "$F:1: port: 0 is out of range 1..65535",
	    "$F:2: backlog: 0 is out of range 1..65535",
	    "$F:3: buffer_count: 7 is out of range 8..32768",
	    "$F:4: buffer_size: 511 is out of range 512..1048576",
	    "$F:5: max_pending: 1023 is out of range 1024..67108864",
	    "$F:6: core: -1 is out of range 0..1023",
	    "$F:7: max_connections: 0 is out of range 1..1048576",
	    "$F:8: idle_timeout: -1 is out of range 0..86400",
	    "$F:9: shutdown_timeout: 0 is out of range 1..3600",
	    "$F:10: metrics.port: 0 is out of range 1..65535",
	    NULL } },
	{ "above range, every integer setting",
	  "port = 65536;\nbacklog = 65536;\nbuffer_count = 32769;\n"
	  "buffer_size = 1048577;\nmax_pending = 67108865;\ncore = [1024];\n"
	  "max_connections = 1048577;\nidle_timeout = 86401;\n"
	  "shutdown_timeout = 3601;\nmetrics = { port = 65536; };\nbusy_poll_us = 100001;\n",
	  {{0}}, 0,
	  { "$F:1: port: 65536 is out of range 1..65535",
	    "$F:2: backlog: 65536 is out of range 1..65535",
	    "$F:3: buffer_count: 32769 is out of range 8..32768",
	    "$F:4: buffer_size: 1048577 is out of range 512..1048576",
	    "$F:5: max_pending: 67108865 is out of range 1024..67108864",
	    "$F:6: core: 1024 is out of range 0..1023",
	    "$F:7: max_connections: 1048577 is out of range 1..1048576",
	    "$F:8: idle_timeout: 86401 is out of range 0..86400",
	    "$F:9: shutdown_timeout: 3601 is out of range 1..3600",
	    "$F:10: metrics.port: 65536 is out of range 1..65535",
	    "$F:11: busy_poll_us: 100001 is out of range 0..100000",
	    NULL } },
	{ "-1 for unsigned settings",
	  "port = -1;\nbuffer_size = -1;\nmax_pending = -1L;\nmax_connections = -2147483648;\n",
	  {{0}}, 0,
	  { "$F:1: port: -1 is out of range 1..65535",
	    "$F:2: buffer_size: -1 is out of range 512..1048576",
	    "$F:3: max_pending: -1 is out of range 1024..67108864",
	    "$F:4: max_connections: -2147483648 is out of range 1..1048576",
	    NULL } },
	{ "4294967297 (libconfig reads 1)", "port = 4294967297;\n", {{0}}, 0,
	  { "$F:1: integer 4294967297 out of range", NULL } },
	{ "0x100000001 (libconfig reads 1)", "port = 0x100000001;\n", {{0}}, 0,
	  { "$F:1: integer 0x100000001 out of range", NULL } },
	{ "99999999999999999999 (libconfig reads -1)",
	  "idle_timeout = 99999999999999999999;\n", {{0}}, 0,
	  { "$F:1: integer 99999999999999999999 out of range", NULL } },
	{ "int and int64 boundaries",
	  "a = 2147483647;\nb = 2147483648;\nc = -2147483648;\nd = -2147483649;\n"
	  "e = 0x7FFFFFFF;\nf = 0x80000000;\ng = 0xFFFFFFFF;\n"
	  "h = 9223372036854775807L;\ni = 9223372036854775808L;\n"
	  "j = -9223372036854775808L;\nk = -9223372036854775809L;\n"
	  "l = 0x7FFFFFFFFFFFFFFFL;\nm = 0x8000000000000000L;\n"
	  "n = 99999999999999999999L;\no = 0x00000000000000000001;\n",
	  {{0}}, 0,
	  { "$F:2: integer 2147483648 out of range",
	    "$F:4: integer -2147483649 out of range",
	    "$F:6: integer 0x80000000 out of range",
	    "$F:7: integer 0xFFFFFFFF out of range",
	    "$F:9: integer 9223372036854775808L out of range",
	    "$F:11: integer -9223372036854775809L out of range",
	    "$F:13: integer 0x8000000000000000L out of range",
	    "$F:14: integer 99999999999999999999L out of range",
	    "$F:1: unknown setting 'a'",
	    "$F:2: unknown setting 'b'",
	    "$F:3: unknown setting 'c'",
	    "$F:4: unknown setting 'd'",
	    "$F:5: unknown setting 'e'",
	    "$F:6: unknown setting 'f'",
	    "$F:7: unknown setting 'g'",
	    "$F:8: unknown setting 'h'",
	    "$F:9: unknown setting 'i'",
	    "$F:10: unknown setting 'j'",
	    "$F:11: unknown setting 'k'",
	    "$F:12: unknown setting 'l'",
	    "$F:13: unknown setting 'm'",
	    "$F:14: unknown setting 'n'",
	    "$F:15: unknown setting 'o'",
	    NULL } },
	{ "a 64-bit value that fits is range checked, not wrapped",
	  "port = 4294967297L;\nbacklog = 0x100000001L;\n", {{0}}, 0,
	  { "$F:1: port: 4294967297 is out of range 1..65535",
	    "$F:2: backlog: 4294967297 is out of range 1..65535",
	    NULL } },
	{ "wrapped values in lists and on the next line are not reported twice",
	  "core = [0, 4294967296];\nport =\n  0x100000007;\nbacklog = 0;\n", {{0}}, 0,
	  { "$F:1: integer 4294967296 out of range",
	    "$F:3: integer 0x100000007 out of range",
	    "$F:4: backlog: 0 is out of range 1..65535",
	    NULL } },
	{ "unknown setting, top level", "port = 7;\nprot = 7;\n", {{0}}, 0,
	  { "$F:2: unknown setting 'prot'", NULL } },
	{ "unknown setting in metrics", "metrics = {\n  enabled = true;\n  prot = 1;\n};\n",
	  {{0}}, 0, { "$F:3: unknown setting 'metrics.prot'", NULL } },
	{ "unknown backend and log level",
	  "backend = \"kqueue\";\nlog_level = \"verbose\";\nbackend2 = \"x\";\n", {{0}}, 0,
	  { "$F:1: backend: unknown value 'kqueue' (expected auto, io_uring or epoll)",
	    "$F:2: log_level: unknown value 'verbose' (expected error, warning, notice, info or debug)",
	    "$F:3: unknown setting 'backend2'",
	    NULL } },
	{ "bad addresses",
	  "listen = \"1.2.3\";\nmetrics = { address = \"localhost\"; };\n", {{0}}, 0,
	  { "$F:1: listen: '1.2.3' is not an IPv4 or IPv6 address",
	    "$F:2: metrics.address: 'localhost' is not an IPv4 or IPv6 address",
	    NULL } },
	{ "bad address in a list, unprintable characters escaped",
	  "listen = [\n  \"::1\",\n  \"[::1]\",\n  \"1.2.3.4\\n\"\n];\n", {{0}}, 0,
	  { "$F:3: listen: '[::1]' is not an IPv4 or IPv6 address",
	    "$F:4: listen: '1.2.3.4\\x0a' is not an IPv4 or IPv6 address",
	    NULL } },
	{ "duplicate listen address",
	  "listen = [\n  \"::1\",\n  \"127.0.0.1\",\n  \"0:0::1\"\n];\n", {{0}}, 0,
	  { "$F:4: listen: duplicate address '0:0::1'", NULL } },
	{ "empty listen list", "listen = [];\n", {{0}}, 0,
	  { "$F:1: listen: empty list (at least one address is required)", NULL } },
	{ "too many listen addresses",
	  "listen = [\"127.0.0.1\", \"127.0.0.2\", \"127.0.0.3\", \"127.0.0.4\", \"127.0.0.5\",\n"
	  "  \"127.0.0.6\", \"127.0.0.7\", \"127.0.0.8\", \"127.0.0.9\", \"127.0.0.10\",\n"
	  "  \"127.0.0.11\", \"127.0.0.12\", \"127.0.0.13\", \"127.0.0.14\", \"127.0.0.15\",\n"
	  "  \"127.0.0.16\", \"127.0.0.17\"];\n", {{0}}, 0,
	  { "$F:1: listen: too many addresses (17, at most 16)", NULL } },
	{ "duplicate core", "core = [0, 0];\n", {{0}}, 0,
	  { "$F:1: core: duplicate core 0", NULL } },
	{ "too many cores",
	  "core = [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,"
	  "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0];\n",
	  {{0}}, 0, { "$F:1: core: too many cores (65, at most 64)", NULL } },
	{ "syntax error", "port = 7;\n\nbacklog = = 5;\n", {{0}}, 0,
	  { "$F:3: syntax error", NULL } },
	{ "duplicate setting (libconfig)", "port = 7;\nport = 8;\n", {{0}}, 0,
	  { "$F:2: duplicate setting name", NULL } },
	{ "a wrapping integer and a syntax error both reported",
	  "port = 4294967297;\nbacklog = ;\n", {{0}}, 0,
	  { "$F:1: integer 4294967297 out of range", "$F:2: syntax error", NULL } },
	{ "@include of a directory", "port = 7;\n@include \"sub\"\n",
	  {{ "sub", NULL }}, 0,
	  { "$F:2: @include \"sub\": is a directory", NULL } },
	{ "@include \"\" (the directory itself)", "@include \"\"\n", {{0}}, 0,
	  { "$F:1: @include \"\": is a directory", NULL } },
	{ "@include of a missing file", "\n  @include \"nope.conf\"\n", {{0}}, 0,
	  { "$F:2: @include \"nope.conf\": No such file or directory", NULL } },
	{ "@include of itself", "@include \"main.conf\"\n", {{0}}, 0,
	  { "$F:1: @include \"main.conf\": include cycle", NULL } },
	{ "@include cycle through two files", "port = 7;\n@include \"a.conf\"\n",
	  {{ "a.conf", "\n\n@include \"main.conf\"\n" }}, 0,
	  { "$D/a.conf:3: @include \"main.conf\": include cycle", NULL } },
	{ "@include nested 11 deep",
	  "@include \"i1.conf\"\n",
	  {{ "i1.conf", "@include \"i2.conf\"\n" }, { "i2.conf", "@include \"i3.conf\"\n" },
	   { "i3.conf", "@include \"i4.conf\"\n" }, { "i4.conf", "@include \"i5.conf\"\n" },
	   { "i5.conf", "@include \"i6.conf\"\n" }, { "i6.conf", "@include \"i7.conf\"\n" },
	   { "i7.conf", "@include \"i8.conf\"\n" }, { "i8.conf", "@include \"i9.conf\"\n" },
	   { "i9.conf", "@include \"i10.conf\"\n" }, { "i10.conf", "x = 1;\n@include \"i11.conf\"\n" },
	   { "i11.conf", "idle_timeout = 42;\n" }}, 0,
	  { "$D/i10.conf:2: @include \"i11.conf\": nested too deeply (more than 10 levels)",
	    NULL } },
	{ "@include with an unterminated name", "@include \"a.conf\n", {{0}}, 0,
	  { "$F:1: @include: unterminated file name", NULL } },
	{ "errors inside an included file have its name and lines",
	  "backend = \"auto\";\n@include \"inc.conf\"\nbacklog = 0;\n",
	  {{ "inc.conf", "\nport = 0;\nmax_pending = 4294967297;\n" }}, 0,
	  { "$D/inc.conf:3: integer 4294967297 out of range",
	    "$D/inc.conf:2: port: 0 is out of range 1..65535",
	    "$F:3: backlog: 0 is out of range 1..65535",
	    NULL } },
	{ "syntax error inside an included file",
	  "port = 7;\n@include \"inc.conf\"\n",
	  {{ "inc.conf", "backlog = 5;\nbuffer_size = ;\n" }}, 0,
	  { "$D/inc.conf:2: syntax error", NULL } },
	{ "the rest of an @include line is not an @include",
	  "@include \"a.conf\" @include \"a.conf\"\n",
	  {{ "a.conf", "idle_timeout = 1;\n" }}, 0,
	  { "$F:1: syntax error", NULL } },
	{ "unterminated comment", "port = 7;\n/* comment\nport = 8;\n", {{0}}, 0,
	  { "$F:2: unterminated comment", NULL } },
	{ "unterminated string", "port = 7;\nbackend = \"auto;\n\n", {{0}}, 0,
	  { "$F:2: unterminated string", NULL } },
	{ "many errors, all counted, first 32 kept",
	  "a1=1;\na2=1;\na3=1;\na4=1;\na5=1;\na6=1;\na7=1;\na8=1;\na9=1;\na10=1;\n"
	  "a11=1;\na12=1;\na13=1;\na14=1;\na15=1;\na16=1;\na17=1;\na18=1;\na19=1;\na20=1;\n"
	  "a21=1;\na22=1;\na23=1;\na24=1;\na25=1;\na26=1;\na27=1;\na28=1;\na29=1;\na30=1;\n"
	  "a31=1;\na32=1;\na33=1;\na34=1;\n", {{0}}, 0,
	  { "$F:1: unknown setting 'a1'", "$F:2: unknown setting 'a2'",
	    "$F:3: unknown setting 'a3'", "$F:4: unknown setting 'a4'",
	    "$F:5: unknown setting 'a5'", "$F:6: unknown setting 'a6'",
	    "$F:7: unknown setting 'a7'", "$F:8: unknown setting 'a8'",
	    "$F:9: unknown setting 'a9'", "$F:10: unknown setting 'a10'",
	    "$F:11: unknown setting 'a11'", "$F:12: unknown setting 'a12'",
	    "$F:13: unknown setting 'a13'", "$F:14: unknown setting 'a14'",
	    "$F:15: unknown setting 'a15'", "$F:16: unknown setting 'a16'",
	    "$F:17: unknown setting 'a17'", "$F:18: unknown setting 'a18'",
	    "$F:19: unknown setting 'a19'", "$F:20: unknown setting 'a20'",
	    "$F:21: unknown setting 'a21'", "$F:22: unknown setting 'a22'",
	    "$F:23: unknown setting 'a23'", "$F:24: unknown setting 'a24'",
	    "$F:25: unknown setting 'a25'", "$F:26: unknown setting 'a26'",
	    "$F:27: unknown setting 'a27'", "$F:28: unknown setting 'a28'",
	    "$F:29: unknown setting 'a29'", "$F:30: unknown setting 'a30'",
	    "$F:31: unknown setting 'a31'", "$F:32: unknown setting 'a32'",
	    "x", "x", NULL } },       /* 34 counted; the last two are not kept */
	{ "missing file", NULL, {{0}}, -ENOENT,
	  { "$F: open: No such file or directory", NULL } },
};

/* ------------------------------------------------------------------ */

static void run_good(const struct good_case *g)
{
	static struct echod_config want, got;   /* ~570 KB each: not on the stack */
	struct config_errors errs;
	char dir[1024], path[1100];
	int r;

	make_case(dir, sizeof(dir), g->text, g->extra);
	snprintf(path, sizeof(path), "%s/main.conf", dir);
	config_defaults(&want);
	g->expect(&want);
	snprintf(want.path, sizeof(want.path), "%s", path);
	memset(&got, 0, sizeof(got));
	r = config_parse_file(path, &got, &errs);
	tap_ok(r == 0 && errs.n == 0 && cfg_equal(&want, &got), "good: %s", g->name);
	if (r != 0)
		dump_errs(&errs);
	check_load_same(g->name, path, r, &got, &errs);
}

static void run_bad(const struct bad_case *b)
{
	static struct echod_config cfg;   /* ~570 KB each: not on the stack */
	struct config_errors errs;
	char dir[1024], path[1100];
	const char *want[41];
	unsigned i;
	int r;

	make_case(dir, sizeof(dir), b->text, b->extra);
	snprintf(path, sizeof(path), "%s/main.conf", dir);
	memset(&cfg, 0xA5, sizeof(cfg));
	r = config_parse_file(path, &cfg, &errs);
	for (i = 0; i < 40 && b->errors[i]; i++)
		want[i] = b->errors[i];
	want[i] = NULL;
	if (i > CONFIG_MAX_ERRORS) {    /* only CONFIG_MAX_ERRORS kept */
		tap_ok(errs.n == i, "bad: %s: %u errors counted (got %u)", b->name, i, errs.n);
		errs.n = CONFIG_MAX_ERRORS;
		want[CONFIG_MAX_ERRORS] = NULL;
	}
	check_errors(b->name, dir, r, b->ret ? b->ret : -EINVAL, &errs, want);
	tap_ok(((unsigned char *)&cfg)[0] == 0xA5 && ((unsigned char *)&cfg)[sizeof(cfg) - 1] == 0xA5,
	       "bad: %s: cfg not written", b->name);
	if (i > CONFIG_MAX_ERRORS)
		errs.n = i;
	check_load_same(b->name, path, r, &cfg, &errs);
}

/* Cases that need more than a text file. */
static void test_special_files(void)
{
	static struct echod_config cfg;   /* ~570 KB each: not on the stack */
	struct config_errors errs;
	char dir[1024], path[1100], *big;
	const char *want[3] = { NULL, NULL, NULL };
	long long t0;
	size_t size;
	int r;

	/* 2 MiB: refused; exactly 1 MiB: accepted */
	make_case(dir, sizeof(dir), NULL, NULL);
	snprintf(path, sizeof(path), "%s/main.conf", dir);
	size = 2 * 1024 * 1024;
	big = malloc(size);
	if (!big)
		die("malloc");
	memset(big, '#', size);
	for (size_t i = 79; i < size; i += 80)
		big[i] = '\n';
	write_file(path, big, size);
	r = config_parse_file(path, &cfg, &errs);
	want[0] = "$F: file too large (2097152 bytes, at most 1048576)";
	check_errors("a 2 MiB file", dir, r, -EINVAL, &errs, want);
	check_load_same("a 2 MiB file", path, r, &cfg, &errs);
	big[1024 * 1024 - 1] = '\n';
	write_file(path, big, 1024 * 1024);
	r = config_parse_file(path, &cfg, &errs);
	tap_ok(r == 0 && errs.n == 0 && cfg.port == 7, "a file of exactly 1 MiB is accepted");
	free(big);

	/* a directory as the configuration path */
	make_case(dir, sizeof(dir), NULL, NULL);
	r = config_parse_file(dir, &cfg, &errs);
	want[0] = "$D: is a directory";
	check_errors("a directory as the config path", dir, r, -EINVAL, &errs, want);
	check_load_same("a directory as the config path", dir, r, &cfg, &errs);

	/* a FIFO nobody writes: refused at once, by both */
	make_case(dir, sizeof(dir), NULL, NULL);
	snprintf(path, sizeof(path), "%s/main.conf", dir);
	if (mkfifo(path, 0600) < 0)
		die("mkfifo");
	t0 = now_ms();
	r = config_parse_file(path, &cfg, &errs);
	want[0] = "$F: not a regular file";
	check_errors("a FIFO as the config path", dir, r, -EINVAL, &errs, want);
	r = config_load(path, &cfg, &errs);
	check_errors("a FIFO as the config path, config_load()", dir, r, -EINVAL, &errs, want);
	tap_ok(now_ms() - t0 < 2000, "a FIFO does not block (%lld ms)", now_ms() - t0);

	/* @include of a FIFO */
	make_case(dir, sizeof(dir), "@include \"fifo\"\n", NULL);
	snprintf(path, sizeof(path), "%s/fifo", dir);
	if (mkfifo(path, 0600) < 0)
		die("mkfifo");
	snprintf(path, sizeof(path), "%s/main.conf", dir);
	t0 = now_ms();
	r = config_parse_file(path, &cfg, &errs);
	want[0] = "$F:1: @include \"fifo\": not a regular file";
	check_errors("@include of a FIFO", dir, r, -EINVAL, &errs, want);
	tap_ok(now_ms() - t0 < 2000, "@include of a FIFO does not block");

	/* a NUL byte */
	make_case(dir, sizeof(dir), NULL, NULL);
	snprintf(path, sizeof(path), "%s/main.conf", dir);
	write_file(path, "port = 7;\nport\0 = 8;\n", 21);
	r = config_parse_file(path, &cfg, &errs);
	want[0] = "$F:2: NUL byte in file";
	check_errors("a NUL byte", dir, r, -EINVAL, &errs, want);

	/* unreadable (meaningless as root, who reads anything) */
	if (geteuid() == 0) {
		tap_ok(1, "unreadable file # SKIP running as root");
	} else {
		make_case(dir, sizeof(dir), "port = 7;\n", NULL);
		snprintf(path, sizeof(path), "%s/main.conf", dir);
		chmod(path, 0);
		r = config_parse_file(path, &cfg, &errs);
		want[0] = "$F: open: Permission denied";
		check_errors("unreadable file", dir, r, -EACCES, &errs, want);
	}

	/* a core beyond this machine's CPUs */
	if (ncpus < 1 || ncpus > 1023) {
		tap_ok(1, "core beyond the CPUs # SKIP %ld CPUs", ncpus);
	} else {
		char text[64], msg[128];

		snprintf(text, sizeof(text), "core = [0, %ld];\n", ncpus);
		make_case(dir, sizeof(dir), text, NULL);
		snprintf(path, sizeof(path), "%s/main.conf", dir);
		snprintf(msg, sizeof(msg), "$F:1: core %ld does not exist (this machine has %ld CPU%s)",
			 ncpus, ncpus, ncpus == 1 ? "" : "s");
		want[0] = msg;
		r = config_parse_file(path, &cfg, &errs);
		check_errors("core beyond the CPUs", dir, r, -EINVAL, &errs, want);
		check_load_same("core beyond the CPUs", path, r, &cfg, &errs);
	}
	/* several cores when there are */
	if (ncpus >= 2) {
		make_case(dir, sizeof(dir), "core = [1, 0];\n", NULL);
		snprintf(path, sizeof(path), "%s/main.conf", dir);
		r = config_parse_file(path, &cfg, &errs);
		tap_ok(r == 0 && cfg.n_cores == 2 && cfg.cores[0] == 1 && cfg.cores[1] == 0,
		       "core = [1, 0]");
	} else {
		tap_ok(1, "core = [1, 0] # SKIP one CPU");
	}

	/* path too long */
	{
		char *lp = malloc(CONFIG_PATH_MAX + 10);

		if (!lp)
			die("malloc");
		memset(lp, 'a', CONFIG_PATH_MAX + 9);
		lp[0] = '/';
		lp[CONFIG_PATH_MAX + 9] = '\0';
		r = config_parse_file(lp, &cfg, &errs);
		tap_ok(r == -ENAMETOOLONG && errs.n == 1 &&
		       !strncmp(errs.msg[0], "...aaa", 6) &&
		       !strcmp(errs.msg[0] + 3 + 200, ": path too long"),
		       "path too long: \"...<last 200 characters>: path too long\"");
		if (errs.n && r != -ENAMETOOLONG)
			tap_diag("  %d %s", r, errs.msg[0]);
		free(lp);
	}
}

/* The bundled configuration is the defaults, spelled out. */
static void test_bundled(void)
{
	const char *src = getenv("ECHOD_SRCDIR");
	static struct echod_config want, got;   /* ~570 KB each: not on the stack */
	struct config_errors errs;
	char path[PATH_MAX];
	int r;

	if (!src)
		src = ".";
	snprintf(path, sizeof(path), "%s/etc/echod.conf", src);
	config_defaults(&want);
	snprintf(want.path, sizeof(want.path), "%s", path);
	r = config_parse_file(path, &got, &errs);
	tap_ok(r == 0 && cfg_equal(&want, &got), "etc/echod.conf parses to the defaults");
	if (r)
		dump_errs(&errs);
	check_load_same("etc/echod.conf", path, r, &got, &errs);
}

static void test_defaults(void)
{
	static struct echod_config c;   /* ~570 KB each: not on the stack */
	const struct sockaddr_in *s4;
	const struct sockaddr_in6 *s6;

	config_defaults(&c);
	s4 = (const struct sockaddr_in *)&c.listen[0].sa;
	s6 = (const struct sockaddr_in6 *)&c.listen[1].sa;
	tap_ok(c.backend == CONFIG_BACKEND_AUTO && c.port == 7 && c.n_listen == 2 &&
	       c.backlog == 4096 && c.buffer_count == 4096 && c.buffer_size == 4096 &&
	       c.max_pending == 65536 && c.n_cores == 0 && c.max_connections == 65536 &&
	       c.idle_timeout == 300 && c.shutdown_timeout == 10 && c.log_level == LOG_INFO &&
	       c.metrics.enabled && c.metrics.port == 9100 && c.path[0] == '\0',
	       "config_defaults: values");
	tap_ok(!strcmp(c.listen[0].text, "0.0.0.0") && s4->sin_family == AF_INET &&
	       s4->sin_port == htons(7) && s4->sin_addr.s_addr == htonl(INADDR_ANY) &&
	       c.listen[0].salen == sizeof(*s4) &&
	       !strcmp(c.listen[1].text, "::") && s6->sin6_family == AF_INET6 &&
	       s6->sin6_port == htons(7) && c.listen[1].salen == sizeof(*s6),
	       "config_defaults: listen 0.0.0.0:7 and [::]:7");
	s4 = (const struct sockaddr_in *)&c.metrics.address.sa;
	tap_ok(!strcmp(c.metrics.address.text, "127.0.0.1") && s4->sin_family == AF_INET &&
	       s4->sin_port == htons(9100) && s4->sin_addr.s_addr == htonl(INADDR_LOOPBACK),
	       "config_defaults: metrics 127.0.0.1:9100");
}

static void test_names(void)
{
	tap_ok(!strcmp(config_backend_name(CONFIG_BACKEND_AUTO), "auto") &&
	       !strcmp(config_backend_name(CONFIG_BACKEND_IO_URING), "io_uring") &&
	       !strcmp(config_backend_name(CONFIG_BACKEND_EPOLL), "epoll"),
	       "config_backend_name");
	tap_ok(!strcmp(config_log_level_name(LOG_ERR), "error") &&
	       !strcmp(config_log_level_name(LOG_WARNING), "warning") &&
	       !strcmp(config_log_level_name(LOG_NOTICE), "notice") &&
	       !strcmp(config_log_level_name(LOG_INFO), "info") &&
	       !strcmp(config_log_level_name(LOG_DEBUG), "debug") &&
	       config_log_level_name(LOG_CRIT) == NULL && config_log_level_name(42) == NULL,
	       "config_log_level_name");
}

static void test_config_error(void)
{
	static struct config_errors e;
	char longarg[CONFIG_ERROR_MAX * 2];
	int i;

	memset(&e, 0, sizeof(e));
	for (i = 0; i < 40; i++)
		config_error(&e, "error %d", i);
	tap_ok(e.n == 40 && !strcmp(e.msg[0], "error 0") &&
	       !strcmp(e.msg[CONFIG_MAX_ERRORS - 1], "error 31"),
	       "config_error counts all, keeps the first %d", CONFIG_MAX_ERRORS);
	memset(&e, 0, sizeof(e));
	memset(longarg, 'x', sizeof(longarg) - 1);
	longarg[sizeof(longarg) - 1] = '\0';
	config_error(&e, "%s", longarg);
	tap_ok(e.n == 1 && strlen(e.msg[0]) == CONFIG_ERROR_MAX - 1,
	       "config_error truncates a long message");
}

/* Whether a and b are in the same group ("metrics.x", "metrics.y"). */
static bool same_group(const char *a, const char *b)
{
	const char *da = strchr(a, '.'), *db = strchr(b, '.');

	return da && db && da - a == db - b && !strncmp(a, b, (size_t)(da - a));
}

/* The table of settings holds together: unique names, at most one group
 * level with each group contiguous, a CONFIG_CHANGED_* bit that is either
 * all live or all restart (control.c relies on it), descriptions that the
 * "# default: ...; range: ..." line of echod -T can follow. */
static void test_table(void)
{
	char names[256];
	unsigned live = 0, restart = 0;
	size_t i, j;
	bool ok = true;

	for (i = 0; i < schema_n_settings; i++) {
		const struct schema_setting *st = &schema_settings[i];
		const char *dot = strchr(st->name, '.');

		if (!st->changed || (st->changed & (st->changed - 1)) || !st->description[0] ||
		    strchr(st->description, ';') || (dot && strchr(dot + 1, '.')) ||
		    (st->type == &schema_uint &&
		     (st->def < (st->zero_ok ? 0 : st->min) || st->def > st->max))) {
			tap_diag("  setting %s is malformed", st->name);
			ok = false;
		}
		for (j = 0; j < i; j++) {
			if (!strcmp(st->name, schema_settings[j].name))
				ok = false;
			/* entering a group (the one before is not in it): none earlier is */
			if (dot && !same_group(st->name, schema_settings[i - 1].name) &&
			    same_group(st->name, schema_settings[j].name))
				ok = false;
		}
		*(st->live ? &live : &restart) |= st->changed;
	}
	tap_ok(ok && schema_n_settings == 39, "the table: %zu well-formed settings",
	       schema_n_settings);
	tap_ok(!(live & restart), "the table: each change bit is all live or all restart");
	tap_ok(config_restart_mask() == (CONFIG_CHANGED_LISTEN | CONFIG_CHANGED_PER_SOURCE_TABLE),
	       "config_restart_mask: the listeners and per_source.table_size (got %#x)",
	       config_restart_mask());
	{
		static struct echod_config a, b;   /* ~570 KB each: not on the stack */

		config_defaults(&a);
		b = a;
		config_restart_names(&a, &b, names, sizeof(names));
		tap_ok(!strcmp(names, ""), "config_restart_names: none when nothing differs ('%s')",
		       names);
		b.port = 8;
		b.udp.port = 9;
		b.max_connections = 5;          /* live: never named */
		config_restart_names(&a, &b, names, sizeof(names));
		tap_ok(!strcmp(names, "port/udp.port"),
		       "config_restart_names: the restart settings that differ ('%s')", names);
		b.backlog = 1;
		b.udp.enabled = !a.udp.enabled;
		config_restart_names(&a, &b, names, sizeof(names));
		tap_ok(!strcmp(names, "port/backlog/udp.enabled/udp.port"),
		       "config_restart_names: in table order ('%s')", names);
		config_restart_names(&a, &b, names, 8);
		tap_ok(strlen(names) < 8, "config_restart_names: cut to the buffer ('%s')", names);
	}
}

/* config_keep_restart: the restart settings of the running configuration,
 * every other one of the new. */
static void test_keep_restart(void)
{
	static struct echod_config run, next, want;   /* ~570 KB each: not on the stack */

	config_defaults(&run);
	config_defaults(&next);
	next.port = 8;
	next.backlog = 5;
	next.n_listen = 1;
	next.idle_timeout = 7;
	next.metrics.port = 9999;
	config_keep_restart(&next, &run);
	want = run;
	want.idle_timeout = 7;
	want.metrics.port = 9999;
	tap_ok(config_diff(&next, &want) == 0 && next.port == 7 && next.n_listen == 2,
	       "config_keep_restart: port, listen, backlog kept; the rest new");
}

static void test_diff(void)
{
	static struct echod_config a, b;   /* ~570 KB each: not on the stack */

	config_defaults(&a);
	b = a;
	tap_ok(config_diff(&a, &b) == 0, "config_diff: same -> 0");
#define DIFF(what, change, bit) do { b = a; change; \
	tap_ok(config_diff(&a, &b) == (bit), "config_diff: %s -> %#x (got %#x)", \
	       what, (unsigned)(bit), config_diff(&a, &b)); } while (0)
	DIFF("backend", b.backend = CONFIG_BACKEND_EPOLL, CONFIG_CHANGED_BACKEND);
	DIFF("port", b.port = 8, CONFIG_CHANGED_LISTEN);
	DIFF("backlog", b.backlog = 1, CONFIG_CHANGED_LISTEN);
	DIFF("listen count", b.n_listen = 1, CONFIG_CHANGED_LISTEN);
	DIFF("listen order",
	     (b.listen[0] = a.listen[1], b.listen[1] = a.listen[0]), CONFIG_CHANGED_LISTEN);
	DIFF("listen text only ('::' vs '::0')", strcpy(b.listen[1].text, "::0"), 0);
	DIFF("buffer_count", b.buffer_count = 8, CONFIG_CHANGED_BUFFERS);
	DIFF("buffer_size", b.buffer_size = 512, CONFIG_CHANGED_BUFFERS);
	DIFF("cores added", (b.n_cores = 1, b.cores[0] = 0), CONFIG_CHANGED_CORES);
	a.n_cores = 2;
	a.cores[0] = 0;
	a.cores[1] = 1;
	DIFF("cores order", (b.cores[0] = 1, b.cores[1] = 0), CONFIG_CHANGED_CORES);
	DIFF("max_connections", b.max_connections = 1, CONFIG_CHANGED_LIMITS);
	DIFF("idle_timeout", b.idle_timeout = 1, CONFIG_CHANGED_LIMITS);
	DIFF("shutdown_timeout", b.shutdown_timeout = 1, CONFIG_CHANGED_LIMITS);
	DIFF("max_pending", b.max_pending = 1024, CONFIG_CHANGED_LIMITS);
	DIFF("log_level", b.log_level = LOG_DEBUG, CONFIG_CHANGED_LOG_LEVEL);
	DIFF("metrics.enabled", b.metrics.enabled = false, CONFIG_CHANGED_METRICS);
	DIFF("metrics.port", b.metrics.port = 1, CONFIG_CHANGED_METRICS);
	DIFF("metrics.address", set_addr(&b.metrics.address, "::1", 9100), CONFIG_CHANGED_METRICS);
	DIFF("path only", strcpy(b.path, "/elsewhere"), 0);
	DIFF("port and log level",
	     (b.port = 9, b.log_level = LOG_ERR), CONFIG_CHANGED_LISTEN | CONFIG_CHANGED_LOG_LEVEL);
#undef DIFF
}

/* config_load() when the parser crashes, exits or hangs. */
static void test_load_failures(void)
{
	static struct echod_config cfg;   /* ~570 KB each: not on the stack */
	struct config_errors errs;
	char dir[1024], path[1100];
	const char *want[2] = { NULL, NULL };
	int fds0, r, st;
	long long t0, dt;

	make_case(dir, sizeof(dir), "port = 8;\n", NULL);
	snprintf(path, sizeof(path), "%s/main.conf", dir);
	fds0 = count_fds();

	r = config_load(path, &cfg, &errs);
	tap_ok(r == 0 && cfg.port == 8 && !strcmp(cfg.path, path), "config_load: good file");

	setenv("ECHOD_TEST_CHILD_HOOK", "crash", 1);
	r = config_load(path, &cfg, &errs);
	want[0] = "$F: configuration parser crashed (signal 11)";
	check_errors("config_load: parser crashes", dir, r, -EINVAL, &errs, want);

	setenv("ECHOD_TEST_CHILD_HOOK", "exit", 1);
	r = config_load(path, &cfg, &errs);
	want[0] = "$F: configuration parser exited with status 2";
	check_errors("config_load: parser calls exit(2)", dir, r, -EINVAL, &errs, want);

	setenv("ECHOD_TEST_CHILD_HOOK", "hang", 1);
	setenv("ECHOD_CONFIG_PARSE_TIMEOUT_MS", "300", 1);
	t0 = now_ms();
	r = config_load(path, &cfg, &errs);
	dt = now_ms() - t0;
	want[0] = "$F: configuration parser timed out";
	check_errors("config_load: parser hangs", dir, r, -EINVAL, &errs, want);
	tap_ok(dt >= 300 && dt < 3000, "config_load: timed out after %lld ms (300 ms asked)", dt);
	unsetenv("ECHOD_TEST_CHILD_HOOK");
	unsetenv("ECHOD_CONFIG_PARSE_TIMEOUT_MS");

	errno = 0;
	tap_ok(waitpid(-1, &st, WNOHANG) == -1 && errno == ECHILD,
	       "config_load: no child left behind");
	tap_ok(count_fds() == fds0, "config_load: no file descriptor leaked (%d -> %d)",
	       fds0, count_fds());

	r = config_load(path, &cfg, NULL);
	tap_ok(r == 0 && cfg.port == 8, "config_load: errs may be NULL");
	make_case(dir, sizeof(dir), "port = 0;\n", NULL);
	snprintf(path, sizeof(path), "%s/main.conf", dir);
	r = config_parse_file(path, &cfg, NULL);
	tap_ok(r == -EINVAL, "config_parse_file: errs NULL still fails a bad file");
}

int main(void)
{
	size_t i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	ncpus = sysconf(_SC_NPROCESSORS_CONF);
	snprintf(tmpdir, sizeof(tmpdir), "%s/echod-test-config-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir))
		die("mkdtemp");

	test_defaults();
	test_names();
	test_config_error();
	test_diff();
	test_table();
	test_keep_restart();
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		run_good(&good[i]);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		run_bad(&bad[i]);
	test_special_files();
	test_bundled();
	test_load_failures();

	if (!getenv("ECHOD_TEST_KEEP")) {
		char cmd[PATH_MAX + 32];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			tap_diag("could not remove %s", tmpdir);
	} else {
		tap_diag("kept %s", tmpdir);
	}
	return tap_done();
}
