/* config.c - see config.h
 *
 * Loading a file goes in three steps:
 *
 * 1. A pre-parser (prescan_text) reads the file and, recursively, every
 *    file it @includes, with its own small lexer that follows libconfig
 *    1.5's scanner (strings, comments, names, numbers, "@include" at the
 *    start of a line).  It refuses what libconfig handles badly: a file that
 *    is not a regular file, is larger than 1 MiB or holds a NUL byte; an
 *    @include of a directory (libconfig exit()s), of a missing file, deeper
 *    than 10 levels or in a cycle; an unterminated comment (libconfig
 *    silently ignores the rest of the file) or string; and an integer literal
 *    that libconfig would silently wrap (see int_literal_fits()).  It expands the
 *    @include directives itself into one text, with a table mapping each line
 *    of that text back to its file and line.  Include paths are relative to
 *    the directory of the file that holds the @include (absolute paths work).
 *
 * 2. libconfig parses that text with config_read_string(), so it never opens
 *    a file itself: what was checked is what is parsed (no race with an editor
 *    replacing a file by a directory).  Its include directory is set to
 *    "/dev/null" as a backstop: should an @include ever reach it, it cannot
 *    open anything.
 *
 * 3. The settings are validated and every error is reported as
 *    "FILE:LINE: message".
 *
 * An empty file is valid and gives the defaults.
 *
 * config_load() runs all of this in a forked child (CPU time limited to 3 s,
 * address space to what the daemon has mapped + 256 MiB, no core dump), so
 * that a parser crash, exit() or hang cannot take the daemon down.  The
 * deadline (5 s) can be changed with the environment variable
 * ECHOD_CONFIG_PARSE_TIMEOUT_MS (1..600000), for tests.  The caller must not
 * reap children it does not know (waitpid(-1, ...)) while config_load() runs.
 */
#include "autoconfig.h"

#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define FILE_SIZE_MAX        (1024 * 1024)      /* one file */
#define TOTAL_SIZE_MAX       (4 * 1024 * 1024)  /* a file with its includes */
#define INCLUDE_DEPTH_MAX    10                 /* as libconfig 1.5 */
#define INCLUDE_FILES_MAX    64
#define FLAGGED_MAX          64
#define LITERAL_SHOW_MAX     64                 /* chars of a literal in a message */

#define PARSE_TIMEOUT_MS     5000
#define PARSE_TIMEOUT_ENV    "ECHOD_CONFIG_PARSE_TIMEOUT_MS"
#define CHILD_AS_EXTRA       (256UL * 1024 * 1024)
#define CHILD_CPU_SECONDS    3

/* Test hook: the unit test defines it to make the config_load() child crash,
 * exit or hang.  Nothing else does, so it is NULL in the daemon. */
void config_test_child_hook(void) __attribute__((weak));

/* ------------------------------------------------------------------ */
/* small helpers */

void config_error(struct config_errors *errs, const char *fmt, ...)
{
	va_list ap;

	if (!errs)
		return;
	if (errs->n < CONFIG_MAX_ERRORS) {
		va_start(ap, fmt);
		vsnprintf(errs->msg[errs->n], CONFIG_ERROR_MAX, fmt, ap);
		va_end(ap);
	}
	if (errs->n < UINT_MAX)
		errs->n++;
}

const char *config_backend_name(enum config_backend b)
{
	switch (b) {
	case CONFIG_BACKEND_AUTO:
		return "auto";
	case CONFIG_BACKEND_IO_URING:
		return "io_uring";
	case CONFIG_BACKEND_EPOLL:
		return "epoll";
	}
	return "unknown";
}


static const struct {
	const char *name;
	int level;
} log_levels[] = {
	{ "error", LOG_ERR },
	{ "warning", LOG_WARNING },
	{ "notice", LOG_NOTICE },
	{ "info", LOG_INFO },
	{ "debug", LOG_DEBUG },
};

const char *config_log_level_name(int level)
{
	size_t i;

	for (i = 0; i < sizeof(log_levels) / sizeof(log_levels[0]); i++)
		if (log_levels[i].level == level)
			return log_levels[i].name;
	return NULL;
}

/* Parse an IPv4 or IPv6 literal into a (zeroed) config_addr; port 0. */
static int addr_parse(struct config_addr *a, const char *text)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->sa;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->sa;

	memset(a, 0, sizeof(*a));
	if (strlen(text) >= sizeof(a->text))
		return -EINVAL;
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		a->salen = sizeof(*sin);
	} else if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		a->salen = sizeof(*sin6);
	} else {
		memset(a, 0, sizeof(*a));
		return -EINVAL;
	}
	strcpy(a->text, text);
	return 0;
}

static void addr_set_port(struct config_addr *a, uint16_t port)
{
	if (a->sa.ss_family == AF_INET)
		((struct sockaddr_in *)&a->sa)->sin_port = htons(port);
	else if (a->sa.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->sa)->sin6_port = htons(port);
}

static bool addr_equal(const struct config_addr *a, const struct config_addr *b)
{
	return a->salen == b->salen && memcmp(&a->sa, &b->sa, a->salen) == 0;
}

void config_defaults(struct echod_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->backend = CONFIG_BACKEND_AUTO;
	cfg->port = 7;
	cfg->n_listen = 2;
	addr_parse(&cfg->listen[0], "0.0.0.0");
	addr_parse(&cfg->listen[1], "::");
	addr_set_port(&cfg->listen[0], cfg->port);
	addr_set_port(&cfg->listen[1], cfg->port);
	cfg->backlog = 4096;
	cfg->buffer_count = 4096;
	cfg->buffer_size = 4096;
	cfg->max_pending = 65536;
	cfg->n_cores = 0;
	cfg->max_connections = 65536;
	cfg->idle_timeout = 300;
	cfg->shutdown_timeout = 10;
	cfg->log_level = LOG_INFO;
	cfg->metrics.enabled = true;
	cfg->metrics.port = 9100;
	addr_parse(&cfg->metrics.address, "127.0.0.1");
	addr_set_port(&cfg->metrics.address, cfg->metrics.port);
}

unsigned config_diff(const struct echod_config *a, const struct echod_config *b)
{
	unsigned d = 0, i;

	if (a->backend != b->backend)
		d |= CONFIG_CHANGED_BACKEND;
	if (a->port != b->port || a->backlog != b->backlog ||
	    a->n_listen != b->n_listen)
		d |= CONFIG_CHANGED_LISTEN;
	for (i = 0; i < a->n_listen && i < b->n_listen && i < CONFIG_MAX_LISTEN; i++)
		if (!addr_equal(&a->listen[i], &b->listen[i]))
			d |= CONFIG_CHANGED_LISTEN;
	if (a->buffer_count != b->buffer_count || a->buffer_size != b->buffer_size)
		d |= CONFIG_CHANGED_BUFFERS;
	if (a->n_cores != b->n_cores)
		d |= CONFIG_CHANGED_CORES;
	for (i = 0; i < a->n_cores && i < b->n_cores && i < CONFIG_MAX_CORES; i++)
		if (a->cores[i] != b->cores[i])
			d |= CONFIG_CHANGED_CORES;
	if (a->max_connections != b->max_connections ||
	    a->idle_timeout != b->idle_timeout ||
	    a->shutdown_timeout != b->shutdown_timeout ||
	    a->max_pending != b->max_pending)
		d |= CONFIG_CHANGED_LIMITS;
	if (a->log_level != b->log_level)
		d |= CONFIG_CHANGED_LOG_LEVEL;
	if (a->metrics.enabled != b->metrics.enabled ||
	    a->metrics.port != b->metrics.port ||
	    !addr_equal(&a->metrics.address, &b->metrics.address))
		d |= CONFIG_CHANGED_METRICS;
	return d;
}

/* Copy s into buf for a message: printable ASCII kept, anything else as
 * \xHH, cut after max characters with "...". */
static const char *printable(char *buf, size_t size, const char *s, size_t len,
			     size_t max)
{
	size_t i, o = 0;

	for (i = 0; i < len && o + 8 < size; i++) {
		unsigned char c = (unsigned char)s[i];

		if (i == max) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (c >= 0x20 && c < 0x7f && c != '\\') {
			buf[o++] = (char)c;
		} else {
			snprintf(buf + o, size - o, "\\x%02x", c);
			o += 4;
		}
	}
	buf[o] = '\0';
	return buf;
}

#define PRINTABLE(buf, s) printable((buf), sizeof(buf), (s), strlen(s), LITERAL_SHOW_MAX)

/* ------------------------------------------------------------------ */
/* parse context */

struct segment {
	unsigned cline;         /* first line in the expanded text */
	unsigned file;          /* index in ctx->files */
	unsigned fline;         /* its line in that file */
};

struct open_file {
	dev_t dev;
	ino_t ino;
};

struct parse_ctx {
	struct config_errors *errs;
	char *files[INCLUDE_FILES_MAX + 1];     /* names as shown in errors */
	unsigned n_files;
	struct open_file stack[INCLUDE_DEPTH_MAX + 1];
	bool fatal;             /* do not hand the text to libconfig */
	/* the expanded text */
	char *text;
	size_t len, cap;
	unsigned cline;         /* line of the end of text, from 1 */
	struct segment *segs;
	size_t n_segs, cap_segs;
	size_t total;           /* bytes read, all files */
	/* expanded-text lines holding an integer literal reported as out of
	 * range: libconfig's wrapped value there is not reported again */
	unsigned flagged[FLAGGED_MAX];
	unsigned n_flagged;
	bool flagged_overflow;
	/* libconfig gives a string list element the line of the token after
	 * it: for the last element of a list that is the closing bracket,
	 * maybe lines below.  Pairs (bracket line, string line) put it back. */
	struct line_fix {
		unsigned bracket, string;
	} *fixes;
	size_t n_fixes, cap_fixes;
};

/* A file name for a message: a long one loses its head, so that the
 * message keeps its line number and text. */
#define FILE_SHOW_MAX 200
static const char *file_shown(const char *name)
{
	size_t len = strlen(name);

	return len > FILE_SHOW_MAX ? name + len - FILE_SHOW_MAX : NULL;
}

static void error_at(struct config_errors *errs, const char *file, unsigned line,
		     const char *msg)
{
	const char *tail = file_shown(file);

	if (line)
		config_error(errs, "%s%s:%u: %s", tail ? "..." : "", tail ? tail : file,
			     line, msg);
	else
		config_error(errs, "%s%s: %s", tail ? "..." : "", tail ? tail : file, msg);
}

static void ctx_error(struct parse_ctx *ctx, unsigned file, unsigned line,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void ctx_error(struct parse_ctx *ctx, unsigned file, unsigned line,
		      const char *fmt, ...)
{
	char msg[CONFIG_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	error_at(ctx->errs, ctx->files[file], line, msg);
}

static int text_append(struct parse_ctx *ctx, const char *s, size_t n)
{
	size_t i;

	if (ctx->len + n + 1 > ctx->cap) {
		size_t cap = ctx->cap ? ctx->cap : 4096;
		char *p;

		while (cap < ctx->len + n + 1)
			cap *= 2;
		p = realloc(ctx->text, cap);
		if (!p)
			return -ENOMEM;
		ctx->text = p;
		ctx->cap = cap;
	}
	memcpy(ctx->text + ctx->len, s, n);
	ctx->len += n;
	ctx->text[ctx->len] = '\0';
	for (i = 0; i < n; i++)
		if (s[i] == '\n')
			ctx->cline++;
	return 0;
}

static int segment_add(struct parse_ctx *ctx, unsigned file, unsigned fline)
{
	if (ctx->n_segs == ctx->cap_segs) {
		size_t cap = ctx->cap_segs ? ctx->cap_segs * 2 : 16;
		struct segment *p = realloc(ctx->segs, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		ctx->segs = p;
		ctx->cap_segs = cap;
	}
	ctx->segs[ctx->n_segs].cline = ctx->cline;
	ctx->segs[ctx->n_segs].file = file;
	ctx->segs[ctx->n_segs].fline = fline;
	ctx->n_segs++;
	return 0;
}

/* Map a line of the expanded text to a file and a line. */
static void map_line(const struct parse_ctx *ctx, unsigned cline,
		     unsigned *file, unsigned *line)
{
	size_t lo = 0, hi = ctx->n_segs;

	*file = 0;
	*line = cline;
	if (!ctx->n_segs)
		return;
	while (hi - lo > 1) {   /* last segment with cline <= cline */
		size_t mid = lo + (hi - lo) / 2;

		if (ctx->segs[mid].cline <= cline)
			lo = mid;
		else
			hi = mid;
	}
	*file = ctx->segs[lo].file;
	if (cline >= ctx->segs[lo].cline)
		*line = ctx->segs[lo].fline + (cline - ctx->segs[lo].cline);
	else
		*line = ctx->segs[lo].fline;
}

static void ctx_free(struct parse_ctx *ctx)
{
	unsigned i;

	for (i = 0; i < ctx->n_files; i++)
		free(ctx->files[i]);
	free(ctx->text);
	free(ctx->segs);
	free(ctx->fixes);
}

static int fix_add(struct parse_ctx *ctx, unsigned bracket, unsigned string)
{
	if (ctx->n_fixes == ctx->cap_fixes) {
		size_t cap = ctx->cap_fixes ? ctx->cap_fixes * 2 : 8;
		struct line_fix *p = realloc(ctx->fixes, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		ctx->fixes = p;
		ctx->cap_fixes = cap;
	}
	ctx->fixes[ctx->n_fixes].bracket = bracket;
	ctx->fixes[ctx->n_fixes].string = string;
	ctx->n_fixes++;
	return 0;
}

/* ------------------------------------------------------------------ */
/* pre-parser */

/* Open and read a whole configuration file.  On error returns -errno and
 * sets *why to a description, or to NULL and *op to the failed call. */
static int read_file(const char *path, char **buf, size_t *len,
		     struct open_file *id, const char **why, const char **op,
		     long long *size)
{
	struct stat st;
	char *p = NULL;
	size_t got = 0, cap;
	int fd, err;

	*why = NULL;
	*op = "open";
	/* O_NONBLOCK: opening a FIFO must not wait for a writer */
	fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*op = "fstat";
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto fail;
	}
	*op = "read";
	if (S_ISDIR(st.st_mode)) {
		*why = "is a directory";
		err = -EISDIR;
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		*why = "not a regular file";
		err = -EINVAL;
		goto fail;
	}
	*size = (long long)st.st_size;
	if (st.st_size > FILE_SIZE_MAX) {
		*why = "file too large";
		err = -EFBIG;
		goto fail;
	}
	cap = (size_t)st.st_size + 1;   /* + 1: see the end of the file */
	p = malloc(cap + 1);
	if (!p) {
		err = -ENOMEM;
		goto fail;
	}
	for (;;) {      /* the file may have changed since fstat */
		ssize_t n;

		if (got == cap) {
			char *q;

			cap = cap * 2 > FILE_SIZE_MAX + 1 ? FILE_SIZE_MAX + 1 : cap * 2;
			q = realloc(p, cap + 1);
			if (!q) {
				err = -ENOMEM;
				goto fail;
			}
			p = q;
		}
		n = read(fd, p + got, cap - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			goto fail;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > FILE_SIZE_MAX) {
			*why = "file too large";
			*size = (long long)got;
			err = -EFBIG;
			goto fail;
		}
	}
	close(fd);
	p[got] = '\0';
	*buf = p;
	*len = got;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	return 0;
fail:
	free(p);
	close(fd);
	return err;
}

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
static bool int_literal_fits(const char *s, size_t n, bool hex, bool is64)
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

static bool is_name_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '*';
}

static bool is_name_char(char c)
{
	return is_name_start(c) || is_digit(c) || c == '-' || c == '_';
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
static size_t number_token(const char *s, bool *is_int, bool *hex, bool *is64)
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

static void flag_line(struct parse_ctx *ctx, unsigned cline)
{
	if (ctx->n_flagged < FLAGGED_MAX)
		ctx->flagged[ctx->n_flagged++] = cline;
	else
		ctx->flagged_overflow = true;
}

static int prescan_text(struct parse_ctx *ctx, unsigned file, const char *buf,
			size_t len, unsigned depth);

/* Resolve, check, read and expand one @include (the directive is on line
 * `line` of file `file`). */
static int do_include(struct parse_ctx *ctx, unsigned file, unsigned line,
		      const char *raw, unsigned depth)
{
	char shown[LITERAL_SHOW_MAX * 4 + 8], *path, *buf = NULL;
	const char *parent = ctx->files[file], *slash, *why, *op;
	struct open_file id;
	long long size = 0;
	size_t len = 0, dlen;
	unsigned i, idx;
	int r;

	PRINTABLE(shown, raw);
	if (depth + 1 > INCLUDE_DEPTH_MAX) {
		ctx_error(ctx, file, line, "@include \"%s\": nested too deeply (more than %d levels)",
			  shown, INCLUDE_DEPTH_MAX);
		ctx->fatal = true;
		return 0;
	}
	if (ctx->n_files >= INCLUDE_FILES_MAX + 1) {
		ctx_error(ctx, file, line, "@include \"%s\": too many included files (at most %d)",
			  shown, INCLUDE_FILES_MAX);
		ctx->fatal = true;
		return 0;
	}
	/* relative to the directory of the including file */
	slash = strrchr(parent, '/');
	dlen = raw[0] != '/' && slash ? (size_t)(slash - parent) + 1 : 0;
	if (dlen + strlen(raw) >= CONFIG_PATH_MAX) {
		ctx_error(ctx, file, line, "@include \"%s\": path too long", shown);
		ctx->fatal = true;
		return 0;
	}
	path = malloc(dlen + strlen(raw) + 1);
	if (!path)
		return -ENOMEM;
	memcpy(path, parent, dlen);
	strcpy(path + dlen, raw);

	r = read_file(path, &buf, &len, &id, &why, &op, &size);
	if (r == -ENOMEM) {
		free(path);
		return r;
	}
	if (r < 0) {
		if (r == -EFBIG)
			ctx_error(ctx, file, line, "@include \"%s\": file too large (%lld bytes, at most %d)",
				  shown, size, FILE_SIZE_MAX);
		else if (why)
			ctx_error(ctx, file, line, "@include \"%s\": %s", shown, why);
		else if (strcmp(op, "open"))
			ctx_error(ctx, file, line, "@include \"%s\": %s: %s", shown, op,
				  strerror(-r));
		else
			ctx_error(ctx, file, line, "@include \"%s\": %s", shown, strerror(-r));
		ctx->fatal = true;
		free(path);
		return 0;
	}
	for (i = 0; i <= depth; i++) {
		if (ctx->stack[i].dev == id.dev && ctx->stack[i].ino == id.ino) {
			ctx_error(ctx, file, line, "@include \"%s\": include cycle", shown);
			ctx->fatal = true;
			free(path);
			free(buf);
			return 0;
		}
	}
	ctx->total += len;
	if (ctx->total > TOTAL_SIZE_MAX) {
		ctx_error(ctx, file, line,
			  "@include \"%s\": configuration too large (more than %d bytes with its includes)",
			  shown, TOTAL_SIZE_MAX);
		ctx->fatal = true;
		free(path);
		free(buf);
		return 0;
	}
	idx = ctx->n_files++;
	ctx->files[idx] = path;
	ctx->stack[depth + 1] = id;
	r = prescan_text(ctx, idx, buf, len, depth + 1);
	free(buf);
	return r;
}

/* Scan one file's text as libconfig 1.5's lexer would; report integer
 * literals that would wrap, expand @include directives, append the text to
 * ctx->text.  Returns 0 or -ENOMEM; other problems are errors in ctx. */
static int prescan_text(struct parse_ctx *ctx, unsigned file, const char *buf,
			size_t len, unsigned depth)
{
	size_t i = 0, from = 0;
	unsigned line = 1, seg_cline, seg_fline = 1, string_cline = 0;
	bool bol = true;
	const char *nul;
	int r;

#define CLINE(l) (seg_cline + ((l) - seg_fline))

	nul = memchr(buf, '\0', len);
	if (nul) {
		for (i = 0; buf + i < nul; i++)
			if (buf[i] == '\n')
				line++;
		ctx_error(ctx, file, line, "NUL byte in file");
		ctx->fatal = true;
		return 0;
	}
	if (ctx->len && ctx->text[ctx->len - 1] != '\n' && (r = text_append(ctx, "\n", 1)) < 0)
		return r;
	seg_cline = ctx->cline;
	if ((r = segment_add(ctx, file, 1)) < 0)
		return r;

	while (i < len) {
		const char *s = buf + i;
		char c = *s;

		/* ^[ \t]*@include[ \t]+\" */
		if (bol) {
			size_t j = 0;

			while (s[j] == ' ' || s[j] == '\t')
				j++;
			if (strncmp(s + j, "@include", 8) == 0 &&
			    (s[j + 8] == ' ' || s[j + 8] == '\t')) {
				j += 8;
				while (s[j] == ' ' || s[j] == '\t')
					j++;
				if (s[j] == '"') {
					char *raw = malloc(len - i + 1);
					size_t o = 0;

					if (!raw)
						return -ENOMEM;
					for (j++; s[j] && s[j] != '"'; j++) {
						if (s[j] == '\\' && (s[j + 1] == '\\' || s[j + 1] == '"'))
							raw[o++] = s[++j];
						else if (s[j] == '\\')
							;       /* flex echoes it: dropped */
						else if (s[j] == '\n')
							break;
						else
							raw[o++] = s[j];
					}
					raw[o] = '\0';
					if (s[j] != '"') {
						ctx_error(ctx, file, line, "@include: unterminated file name");
						ctx->fatal = true;
						free(raw);
						return 0;
					}
					j++;
					if ((r = text_append(ctx, buf + from, i - from)) < 0) {
						free(raw);
						return r;
					}
					r = do_include(ctx, file, line, raw, depth);
					free(raw);
					if (r < 0)
						return r;
					/* the rest of the line, not at the start of a line,
					 * as libconfig sees it after an include */
					if (ctx->len && ctx->text[ctx->len - 1] != '\n' &&
					    (r = text_append(ctx, "\n", 1)) < 0)
						return r;
					seg_cline = ctx->cline;
					seg_fline = line;
					if ((r = segment_add(ctx, file, line)) < 0 ||
					    (r = text_append(ctx, "/**/", 4)) < 0)
						return r;
					i += j;
					from = i;
					bol = false;
					string_cline = 0;
					continue;
				}
			}
		}
		bol = false;

		/* a token after a string at the end of a line */
		if (string_cline && (c == ']' || c == ')') && CLINE(line) != string_cline) {
			if ((r = fix_add(ctx, CLINE(line), string_cline)) < 0)
				return r;
			string_cline = 0;
		} else if (string_cline && c != ' ' && c != '\t' && c != '\r' &&
			   c != '\f' && c != '\n' && c != '#' &&
			   !(c == '/' && (s[1] == '/' || s[1] == '*'))) {
			string_cline = 0;
		}

		if (c == '\n') {
			line++;
			bol = true;
			i++;
		} else if (c == '/' && s[1] == '*') {
			const char *end = strstr(s + 2, "*/");
			size_t k;

			if (!end) {
				ctx_error(ctx, file, line, "unterminated comment");
				ctx->fatal = true;
				return 0;
			}
			for (k = 2; s + k < end; k++)
				if (s[k] == '\n')
					line++;
			i += (size_t)(end - s) + 2;
		} else if (c == '#' || (c == '/' && s[1] == '/')) {
			while (i < len && buf[i] != '\n')
				i++;
		} else if (c == '"') {
			unsigned start = line;
			size_t k = 1;

			while (s[k] && s[k] != '"') {
				if (s[k] == '\\' && (s[k + 1] == '"' || s[k + 1] == '\\')) {
					k += 2;
					continue;
				}
				if (s[k] == '\n')
					line++;
				k++;
			}
			if (!s[k]) {
				ctx_error(ctx, file, start, "unterminated string");
				ctx->fatal = true;
				return 0;
			}
			i += k + 1;
			string_cline = CLINE(start);
		} else if (is_name_start(c)) {
			i++;
			while (is_name_char(buf[i]))
				i++;
		} else {
			bool is_int, hex, is64;
			size_t n = number_token(s, &is_int, &hex, &is64);

			if (n == 0) {
				i++;    /* punctuation or garbage */
				continue;
			}
			if (is_int && !int_literal_fits(s, n, hex, is64)) {
				char shown[LITERAL_SHOW_MAX * 4 + 8];

				printable(shown, sizeof(shown), s, n, LITERAL_SHOW_MAX);
				ctx_error(ctx, file, line, "integer %s out of range", shown);
				flag_line(ctx, CLINE(line));
			}
			i += n;
		}
	}
#undef CLINE
	return text_append(ctx, buf + from, len - from);
}

/* ------------------------------------------------------------------ */
/* validation */

static void setting_where(const struct parse_ctx *ctx, const config_setting_t *s,
			  const char **file, unsigned *line)
{
	const config_setting_t *parent = config_setting_parent(s);
	unsigned f, cline = config_setting_source_line(s);
	size_t i;

	if (config_setting_source_file(s)) {    /* not expected: no includes */
		*file = config_setting_source_file(s);
		*line = cline;
		return;
	}
	if (config_setting_type(s) == CONFIG_TYPE_STRING && parent &&
	    (config_setting_is_list(parent) || config_setting_is_array(parent)) &&
	    config_setting_index(s) == config_setting_length(parent) - 1) {
		for (i = 0; i < ctx->n_fixes; i++) {
			if (ctx->fixes[i].bracket == cline) {
				cline = ctx->fixes[i].string;
				break;
			}
		}
	}
	map_line(ctx, cline, &f, line);
	*file = ctx->files[f];
}

static void serr(struct parse_ctx *ctx, const config_setting_t *s,
		 const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void serr(struct parse_ctx *ctx, const config_setting_t *s,
		 const char *fmt, ...)
{
	char msg[CONFIG_ERROR_MAX];
	const char *file;
	unsigned line;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	setting_where(ctx, s, &file, &line);
	error_at(ctx->errs, file, line, msg);
}

/* Last expanded-text line that may hold the value of s. */
static unsigned value_end_line(const config_setting_t *s)
{
	const config_setting_t *parent = config_setting_parent(s);
	int idx;

	if (!parent)
		return UINT_MAX;
	idx = config_setting_index(s);
	if (idx >= 0 && idx + 1 < config_setting_length(parent)) {
		unsigned next = config_setting_source_line(
			config_setting_get_elem(parent, (unsigned)idx + 1));

		return next > config_setting_source_line(s) ? next - 1 :
			config_setting_source_line(s);
	}
	return value_end_line(parent);
}

/* Whether the value of s was already reported as an out of range literal. */
static bool value_flagged(const struct parse_ctx *ctx, const config_setting_t *s)
{
	unsigned start = config_setting_source_line(s), end, i;

	if (ctx->flagged_overflow)
		return true;
	end = value_end_line(s);
	for (i = 0; i < ctx->n_flagged; i++)
		if (ctx->flagged[i] >= start && ctx->flagged[i] <= end)
			return true;
	return false;
}

static const char *type_name(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		return "an integer";
	case CONFIG_TYPE_FLOAT:
		return "a float";
	case CONFIG_TYPE_STRING:
		return "a string";
	case CONFIG_TYPE_BOOL:
		return "a boolean";
	case CONFIG_TYPE_GROUP:
		return "a group";
	case CONFIG_TYPE_ARRAY:
		return "an array";
	case CONFIG_TYPE_LIST:
		return "a list";
	}
	return "an unknown type";
}

static bool is_int(const config_setting_t *s)
{
	return config_setting_type(s) == CONFIG_TYPE_INT ||
	       config_setting_type(s) == CONFIG_TYPE_INT64;
}

static bool is_list(const config_setting_t *s)
{
	return config_setting_type(s) == CONFIG_TYPE_LIST ||
	       config_setting_type(s) == CONFIG_TYPE_ARRAY;
}

/* An integer setting in min..max.  Returns 0 and *out, or -1 (reported). */
static int get_int(struct parse_ctx *ctx, const config_setting_t *s,
		   const char *name, long long min, long long max, long long *out)
{
	long long v;

	if (!is_int(s)) {
		serr(ctx, s, "%s: expected an integer, got %s", name, type_name(s));
		return -1;
	}
	v = config_setting_get_int64(s);
	if (v < min || v > max) {
		if (!value_flagged(ctx, s))
			serr(ctx, s, "%s: %lld is out of range %lld..%lld", name, v, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

static void get_u32(struct parse_ctx *ctx, const config_setting_t *s,
		    const char *name, long long min, long long max, uint32_t *out)
{
	long long v;

	if (get_int(ctx, s, name, min, max, &v) == 0)
		*out = (uint32_t)v;
}

static void get_port(struct parse_ctx *ctx, const config_setting_t *s,
		     const char *name, uint16_t *out)
{
	long long v;

	if (get_int(ctx, s, name, 1, 65535, &v) == 0)
		*out = (uint16_t)v;
}

/* A string setting; NULL (reported) if it is not one. */
static const char *get_string(struct parse_ctx *ctx, const config_setting_t *s,
			      const char *name)
{
	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		serr(ctx, s, "%s: expected a string, got %s", name, type_name(s));
		return NULL;
	}
	return config_setting_get_string(s);
}

static int get_addr(struct parse_ctx *ctx, const config_setting_t *s,
		    const char *name, const char *str, struct config_addr *a)
{
	char shown[LITERAL_SHOW_MAX * 4 + 8];

	if (addr_parse(a, str) < 0) {
		serr(ctx, s, "%s: '%s' is not an IPv4 or IPv6 address", name,
		     PRINTABLE(shown, str));
		return -1;
	}
	return 0;
}

static void v_backend(struct parse_ctx *ctx, const config_setting_t *s,
		      struct echod_config *cfg)
{
	char shown[LITERAL_SHOW_MAX * 4 + 8];
	const char *v = get_string(ctx, s, "backend");

	if (!v)
		return;
	if (!strcmp(v, "auto"))
		cfg->backend = CONFIG_BACKEND_AUTO;
	else if (!strcmp(v, "io_uring"))
		cfg->backend = CONFIG_BACKEND_IO_URING;
	else if (!strcmp(v, "epoll"))
		cfg->backend = CONFIG_BACKEND_EPOLL;
	else
		serr(ctx, s, "backend: unknown value '%s' (expected auto, io_uring or epoll)",
		     PRINTABLE(shown, v));
}

static void v_log_level(struct parse_ctx *ctx, const config_setting_t *s,
			struct echod_config *cfg)
{
	char shown[LITERAL_SHOW_MAX * 4 + 8];
	const char *v = get_string(ctx, s, "log_level");
	size_t i;

	if (!v)
		return;
	for (i = 0; i < sizeof(log_levels) / sizeof(log_levels[0]); i++) {
		if (!strcmp(v, log_levels[i].name)) {
			cfg->log_level = log_levels[i].level;
			return;
		}
	}
	serr(ctx, s, "log_level: unknown value '%s' (expected error, warning, notice, info or debug)",
	     PRINTABLE(shown, v));
}

static void v_listen(struct parse_ctx *ctx, const config_setting_t *s,
		     struct echod_config *cfg)
{
	char shown[LITERAL_SHOW_MAX * 4 + 8];
	struct config_addr addrs[CONFIG_MAX_LISTEN];
	unsigned n = 0, count, i, k;
	bool ok = true;

	if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		if (get_addr(ctx, s, "listen", config_setting_get_string(s), &addrs[0]) < 0)
			return;
		memset(cfg->listen, 0, sizeof(cfg->listen));
		cfg->n_listen = 1;
		cfg->listen[0] = addrs[0];
		return;
	}
	if (!is_list(s)) {
		serr(ctx, s, "listen: expected a string or a list of strings, got %s",
		     type_name(s));
		return;
	}
	count = (unsigned)config_setting_length(s);
	if (count == 0) {
		serr(ctx, s, "listen: empty list (at least one address is required)");
		return;
	}
	if (count > CONFIG_MAX_LISTEN) {
		serr(ctx, s, "listen: too many addresses (%u, at most %d)", count,
		     CONFIG_MAX_LISTEN);
		return;
	}
	for (i = 0; i < count; i++) {
		const config_setting_t *e = config_setting_get_elem(s, i);

		if (config_setting_type(e) != CONFIG_TYPE_STRING) {
			serr(ctx, e, "listen[%u]: expected a string, got %s", i, type_name(e));
			ok = false;
			continue;
		}
		if (get_addr(ctx, e, "listen", config_setting_get_string(e), &addrs[n]) < 0) {
			ok = false;
			continue;
		}
		for (k = 0; k < n; k++)
			if (addr_equal(&addrs[k], &addrs[n]))
				break;
		if (k < n) {
			serr(ctx, e, "listen: duplicate address '%s'",
			     PRINTABLE(shown, addrs[n].text));
			ok = false;
			continue;
		}
		n++;
	}
	if (ok) {
		memset(cfg->listen, 0, sizeof(cfg->listen));
		cfg->n_listen = n;
		memcpy(cfg->listen, addrs, n * sizeof(addrs[0]));
	}
}

static int core_check(struct parse_ctx *ctx, const config_setting_t *e,
		      long ncpus, int *cores, unsigned n)
{
	long long v;
	unsigned k;

	if (get_int(ctx, e, "core", 0, CPU_SETSIZE - 1, &v) < 0)
		return -1;
	if (ncpus > 0 && v >= ncpus) {
		if (!value_flagged(ctx, e))
			serr(ctx, e, "core %lld does not exist (this machine has %ld CPU%s)",
			     v, ncpus, ncpus == 1 ? "" : "s");
		return -1;
	}
	for (k = 0; k < n; k++) {
		if (cores[k] == (int)v) {
			if (!value_flagged(ctx, e))
				serr(ctx, e, "core: duplicate core %lld", v);
			return -1;
		}
	}
	cores[n] = (int)v;
	return 0;
}

static void v_core(struct parse_ctx *ctx, const config_setting_t *s,
		   struct echod_config *cfg)
{
	long ncpus = sysconf(_SC_NPROCESSORS_CONF);
	int cores[CONFIG_MAX_CORES];
	unsigned n = 0, count, i;
	bool ok = true;

	if (is_int(s)) {
		if (core_check(ctx, s, ncpus, cores, 0) < 0)
			return;
		memset(cfg->cores, 0, sizeof(cfg->cores));
		cfg->n_cores = 1;
		cfg->cores[0] = cores[0];
		return;
	}
	if (!is_list(s)) {
		serr(ctx, s, "core: expected an integer or a list of integers, got %s",
		     type_name(s));
		return;
	}
	count = (unsigned)config_setting_length(s);
	if (count > CONFIG_MAX_CORES) {
		serr(ctx, s, "core: too many cores (%u, at most %d)", count, CONFIG_MAX_CORES);
		return;
	}
	for (i = 0; i < count; i++) {
		const config_setting_t *e = config_setting_get_elem(s, i);

		if (!is_int(e)) {
			serr(ctx, e, "core[%u]: expected an integer, got %s", i, type_name(e));
			ok = false;
			continue;
		}
		if (core_check(ctx, e, ncpus, cores, n) < 0) {
			ok = false;
			continue;
		}
		n++;
	}
	if (ok) {
		memset(cfg->cores, 0, sizeof(cfg->cores));
		cfg->n_cores = n;
		memcpy(cfg->cores, cores, n * sizeof(cores[0]));
	}
}

static void v_metrics(struct parse_ctx *ctx, const config_setting_t *s,
		      struct echod_config *cfg)
{
	unsigned count, i;

	if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
		serr(ctx, s, "metrics: expected a group, got %s", type_name(s));
		return;
	}
	count = (unsigned)config_setting_length(s);
	for (i = 0; i < count; i++) {
		const config_setting_t *e = config_setting_get_elem(s, i);
		const char *name = config_setting_name(e);
		const char *v;

		if (!strcmp(name, "enabled")) {
			if (config_setting_type(e) != CONFIG_TYPE_BOOL)
				serr(ctx, e, "metrics.enabled: expected a boolean, got %s",
				     type_name(e));
			else
				cfg->metrics.enabled = config_setting_get_bool(e) != 0;
		} else if (!strcmp(name, "address")) {
			v = get_string(ctx, e, "metrics.address");
			if (v)
				get_addr(ctx, e, "metrics.address", v, &cfg->metrics.address);
		} else if (!strcmp(name, "port")) {
			get_port(ctx, e, "metrics.port", &cfg->metrics.port);
		} else {
			serr(ctx, e, "unknown setting 'metrics.%s'", name);
		}
	}
}

static void validate(struct parse_ctx *ctx, const config_setting_t *root,
		     struct echod_config *cfg)
{
	unsigned count = (unsigned)config_setting_length(root), i;

	for (i = 0; i < count; i++) {
		const config_setting_t *s = config_setting_get_elem(root, i);
		const char *name = config_setting_name(s);

		if (!strcmp(name, "backend"))
			v_backend(ctx, s, cfg);
		else if (!strcmp(name, "port"))
			get_port(ctx, s, "port", &cfg->port);
		else if (!strcmp(name, "listen"))
			v_listen(ctx, s, cfg);
		else if (!strcmp(name, "backlog"))
			get_u32(ctx, s, "backlog", 1, CONFIG_BACKLOG_MAX, &cfg->backlog);
		else if (!strcmp(name, "buffer_count"))
			get_u32(ctx, s, "buffer_count", CONFIG_BUFFER_COUNT_MIN,
				CONFIG_BUFFER_COUNT_MAX, &cfg->buffer_count);
		else if (!strcmp(name, "buffer_size"))
			get_u32(ctx, s, "buffer_size", CONFIG_BUFFER_SIZE_MIN,
				CONFIG_BUFFER_SIZE_MAX, &cfg->buffer_size);
		else if (!strcmp(name, "max_pending"))
			get_u32(ctx, s, "max_pending", CONFIG_MAX_PENDING_MIN,
				CONFIG_MAX_PENDING_MAX, &cfg->max_pending);
		else if (!strcmp(name, "core"))
			v_core(ctx, s, cfg);
		else if (!strcmp(name, "max_connections"))
			get_u32(ctx, s, "max_connections", 1,
				CONFIG_MAX_CONNECTIONS_MAX, &cfg->max_connections);
		else if (!strcmp(name, "idle_timeout"))
			get_u32(ctx, s, "idle_timeout", 0, CONFIG_IDLE_TIMEOUT_MAX,
				&cfg->idle_timeout);
		else if (!strcmp(name, "shutdown_timeout"))
			get_u32(ctx, s, "shutdown_timeout", 1,
				CONFIG_SHUTDOWN_TIMEOUT_MAX, &cfg->shutdown_timeout);
		else if (!strcmp(name, "log_level"))
			v_log_level(ctx, s, cfg);
		else if (!strcmp(name, "metrics"))
			v_metrics(ctx, s, cfg);
		else
			serr(ctx, s, "unknown setting '%s'", name);
	}
	for (i = 0; i < cfg->n_listen; i++)
		addr_set_port(&cfg->listen[i], cfg->port);
	addr_set_port(&cfg->metrics.address, cfg->metrics.port);
}

int config_parse_file(const char *path, struct echod_config *cfg,
		      struct config_errors *errs)
{
	struct config_errors *scratch = NULL;
	struct parse_ctx ctx;
	struct echod_config out;
	config_t lc;
	const char *why, *op;
	long long size = 0;
	char *buf = NULL;
	size_t len = 0;
	int r;

	if (errs)
		errs->n = 0;
	if (!path || !cfg)
		return -EINVAL;
	if (!errs) {    /* errors are still counted */
		errs = scratch = calloc(1, sizeof(*scratch));
		if (!errs)
			return -ENOMEM;
	}
	memset(&ctx, 0, sizeof(ctx));
	ctx.errs = errs;
	ctx.cline = 1;
	ctx.files[0] = strdup(path);
	if (!ctx.files[0]) {
		config_error(errs, "%s: %s", path, strerror(ENOMEM));
		free(scratch);
		return -ENOMEM;
	}
	ctx.n_files = 1;
	if (strlen(path) >= CONFIG_PATH_MAX) {
		ctx_error(&ctx, 0, 0, "path too long");
		r = -ENAMETOOLONG;
		goto out;
	}

	r = read_file(path, &buf, &len, &ctx.stack[0], &why, &op, &size);
	if (r == -EFBIG) {
		ctx_error(&ctx, 0, 0, "file too large (%lld bytes, at most %d)",
			  size, FILE_SIZE_MAX);
		r = -EINVAL;
		goto out;
	} else if (r < 0 && why) {
		ctx_error(&ctx, 0, 0, "%s", why);
		r = -EINVAL;
		goto out;
	} else if (r < 0) {
		ctx_error(&ctx, 0, 0, "%s: %s", op, strerror(-r));
		goto out;
	}
	ctx.total = len;
	r = prescan_text(&ctx, 0, buf, len, 0);
	free(buf);
	if (r < 0) {
		ctx_error(&ctx, 0, 0, "%s", strerror(-r));
		goto out;
	}
	if (ctx.fatal) {
		r = -EINVAL;
		goto out;
	}

	config_defaults(&out);
	config_init(&lc);
	config_set_include_dir(&lc, "/dev/null");
	if (!config_read_string(&lc, ctx.text ? ctx.text : "")) {
		unsigned f = 0, line = 0;
		const char *file;

		if (config_error_file(&lc)) {
			file = config_error_file(&lc);
			line = (unsigned)config_error_line(&lc);
		} else {
			map_line(&ctx, (unsigned)config_error_line(&lc), &f, &line);
			file = ctx.files[f];
		}
		error_at(errs, file, line ? line : 1,
			 config_error_text(&lc) ? config_error_text(&lc) : "parse error");
		config_destroy(&lc);
		r = -EINVAL;
		goto out;
	}
	validate(&ctx, config_root_setting(&lc), &out);
	config_destroy(&lc);
	if (errs->n) {
		r = -EINVAL;
		goto out;
	}
	strcpy(out.path, path);
	*cfg = out;
	r = 0;
out:
	ctx_free(&ctx);
	free(scratch);
	return r;
}

/* ------------------------------------------------------------------ */
/* config_load: the parser in a child process */

/* What the child writes to the pipe. */
struct load_result {
	int status;                     /* config_parse_file()'s result */
	struct echod_config cfg;        /* valid if status == 0 */
	struct config_errors errs;
};

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Current address space size of this process, in bytes, or 0. */
static unsigned long vm_size(void)
{
	char buf[128];
	unsigned long pages = 0;
	ssize_t n;
	int fd;

	fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	do
		n = read(fd, buf, sizeof(buf) - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if (sscanf(buf, "%lu", &pages) != 1)
		return 0;
	return pages * (unsigned long)sysconf(_SC_PAGESIZE);
}

/* Lower a limit, never above its current hard limit. */
static void child_limit(int resource, rlim_t soft, rlim_t hard)
{
	struct rlimit rl;

	if (getrlimit(resource, &rl) < 0)
		return;
	if (rl.rlim_max != RLIM_INFINITY && hard > rl.rlim_max)
		hard = rl.rlim_max;
	if (soft > hard)
		soft = hard;
	rl.rlim_cur = soft;
	rl.rlim_max = hard;
	setrlimit(resource, &rl);
}

static void child_setup(int wfd)
{
	static const int dfl[] = {
		SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM,
		SIGCHLD, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGXCPU,
		SIGXFSZ,
	};
	struct sigaction sa;
	struct rlimit rl;
	unsigned long vm;
	sigset_t none;
	size_t i;

	/* the daemon's handlers and mask are not the parser's */
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = SIG_DFL;
	for (i = 0; i < sizeof(dfl) / sizeof(dfl[0]); i++)
		sigaction(dfl[i], &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	/* keep only stdio and the pipe: no listener stays open in a child */
	if (wfd > 3)
		close_range(3, (unsigned)wfd - 1, 0);
	close_range(wfd >= 3 ? (unsigned)wfd + 1 : 3, ~0U, 0);

	rl.rlim_cur = rl.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &rl);
	child_limit(RLIMIT_CPU, CHILD_CPU_SECONDS, CHILD_CPU_SECONDS + 1);
	/* relative to what the daemon already maps: a multi-threaded daemon
	 * easily has more than 256 MiB of address space reserved */
	vm = vm_size();
	if (vm)
		child_limit(RLIMIT_AS, vm + CHILD_AS_EXTRA, vm + CHILD_AS_EXTRA);
}

static void child_run(const char *path, int wfd, struct load_result *unused)
	__attribute__((noreturn));
static void child_run(const char *path, int wfd, struct load_result *unused)
{
	struct load_result *res;

	free(unused);   /* the parent's buffer */
	child_setup(wfd);
	if (config_test_child_hook)
		config_test_child_hook();
	res = calloc(1, sizeof(*res));
	if (!res)
		_exit(125);
	res->status = config_parse_file(path, &res->cfg, &res->errs);
	if (write_all(wfd, res, sizeof(*res)) < 0)
		_exit(126);
	free(res);
	_exit(0);
}

static int parse_timeout_ms(void)
{
	const char *s = getenv(PARSE_TIMEOUT_ENV);
	char *end;
	long v;

	if (!s || !*s)
		return PARSE_TIMEOUT_MS;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 1 || v > 600000)
		return PARSE_TIMEOUT_MS;
	return (int)v;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether a result read from the child is well formed. */
static bool result_sane(struct load_result *res)
{
	unsigned i, n;

	if (res->status > 0 || res->status < -4095)
		return false;
	n = res->errs.n < CONFIG_MAX_ERRORS ? res->errs.n : CONFIG_MAX_ERRORS;
	for (i = 0; i < n; i++)
		res->errs.msg[i][CONFIG_ERROR_MAX - 1] = '\0';
	if (res->status < 0)
		return res->errs.n > 0;
	if (res->cfg.n_listen > CONFIG_MAX_LISTEN || res->cfg.n_cores > CONFIG_MAX_CORES)
		return false;
	res->cfg.path[CONFIG_PATH_MAX - 1] = '\0';
	for (i = 0; i < CONFIG_MAX_LISTEN; i++)
		res->cfg.listen[i].text[CONFIG_ADDR_MAX - 1] = '\0';
	res->cfg.metrics.address.text[CONFIG_ADDR_MAX - 1] = '\0';
	return true;
}

int config_load(const char *path, struct echod_config *cfg,
		struct config_errors *errs)
{
	struct load_result *res;
	struct pollfd pfd;
	long long deadline;
	size_t got = 0;
	bool timed_out = false, killed = false, reaped = false;
	int fds[2], status = 0, r;
	pid_t pid;

	if (errs)
		errs->n = 0;
	if (!path || !cfg)
		return -EINVAL;
	res = malloc(sizeof(*res));
	if (!res) {
		config_error(errs, "%s: %s", path, strerror(ENOMEM));
		return -ENOMEM;
	}
	if (pipe2(fds, O_CLOEXEC) < 0) {
		r = -errno;
		config_error(errs, "%s: pipe: %s", path, strerror(-r));
		free(res);
		return r;
	}
	deadline = now_ms() + parse_timeout_ms();
	pid = fork();
	if (pid < 0) {
		r = -errno;
		config_error(errs, "%s: fork: %s", path, strerror(-r));
		close(fds[0]);
		close(fds[1]);
		free(res);
		return r;
	}
	if (pid == 0) {
		close(fds[0]);
		child_run(path, fds[1], res);
	}
	close(fds[1]);
	/* poll() says when to read; should this fail, a read still returns */
	(void)fcntl(fds[0], F_SETFL, O_NONBLOCK);

	pfd.fd = fds[0];
	pfd.events = POLLIN;
	while (got < sizeof(*res)) {
		long long left = deadline - now_ms();
		ssize_t n;

		if (left <= 0) {
			timed_out = true;
			break;
		}
		r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno != EINTR)
			break;
		if (r <= 0)
			continue;
		n = read(fds[0], (char *)res + got, sizeof(*res) - got);
		if (n > 0)
			got += (size_t)n;
		else if (n == 0)
			break;          /* the child is gone */
		else if (errno != EINTR && errno != EAGAIN)
			break;
	}
	close(fds[0]);

	/* reap the child; kill it if it does not end by the deadline */
	if (timed_out && kill(pid, SIGKILL) == 0)
		killed = true;
	for (;;) {
		pid_t w = waitpid(pid, &status, killed ? 0 : WNOHANG);

		if (w == pid) {
			reaped = true;
			break;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			break;          /* ECHILD: reaped by someone else */
		if (now_ms() >= deadline) {
			if (kill(pid, SIGKILL) == 0)
				killed = true;
			if (got < sizeof(*res))
				timed_out = true;
			continue;
		} else {
			struct timespec ts = { 0, 1000000 };

			nanosleep(&ts, NULL);
		}
	}

	if (got == sizeof(*res) && result_sane(res)) {
		r = res->status;
		if (r == 0)
			*cfg = res->cfg;
		if (errs)
			*errs = res->errs;
	} else {
		r = -EINVAL;
		if (timed_out)
			config_error(errs, "%s: configuration parser timed out", path);
		else if (reaped && WIFSIGNALED(status))
			config_error(errs, "%s: configuration parser crashed (signal %d)",
				     path, WTERMSIG(status));
		else if (reaped && WIFEXITED(status) && WEXITSTATUS(status) != 0)
			config_error(errs, "%s: configuration parser exited with status %d",
				     path, WEXITSTATUS(status));
		else
			config_error(errs, "%s: configuration parser returned no valid result",
				     path);
	}
	free(res);
	return r;
}
