/* config_scan.c - the pre-scanner: the guard between echod and libconfig 1.5.
 *
 * scan_config() reads the file and, recursively, every file it
 * @includes, with its own small lexer that follows libconfig 1.5's scanner
 * (strings, comments, names, numbers, "@include" at the start of a line).
 * It refuses what libconfig handles badly: a file that is not a regular
 * file, is larger than 1 MiB or holds a NUL byte; an @include of a
 * directory (libconfig exit()s), of a missing file, deeper than 10 levels or
 * in a cycle; an unterminated comment (libconfig silently ignores the rest
 * of the file) or string; and an integer literal that libconfig would
 * silently wrap (see config_literal.c).  It expands the @include
 * directives itself into one text, with a table mapping each line of that
 * text back to its file and line (scan_map_line()).  Include paths are
 * relative to the directory of the file that holds the @include (absolute
 * paths work).  config_parse.c hands that text to libconfig.
 */
#include "autoconfig.h"

#include "config_scan.h"
#include "config_literal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_SIZE_MAX        (1024 * 1024)      /* one file */
#define TOTAL_SIZE_MAX       (4 * 1024 * 1024)  /* a file with its includes */


/* Copy s into buf for a message: printable ASCII kept, anything else as
 * \xHH, cut after max characters with "...". */
const char *scan_printable(char *buf, size_t size, const char *s, size_t len, size_t max)
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

/* ------------------------------------------------------------------ */
/* parse context */


/* A file name for a message: a long one loses its head, so that the
 * message keeps its line number and text. */
#define FILE_SHOW_MAX 200
static const char *file_shown(const char *name)
{
	size_t len = strlen(name);

	return len > FILE_SHOW_MAX ? name + len - FILE_SHOW_MAX : NULL;
}

void scan_error_at(struct config_errors *errs, const char *file, unsigned line,
		     const char *msg)
{
	const char *tail = file_shown(file);

	if (line)
		config_error(errs, "%s%s:%u: %s", tail ? "..." : "", tail ? tail : file,
			     line, msg);
	else
		config_error(errs, "%s%s: %s", tail ? "..." : "", tail ? tail : file, msg);
}

static void ctx_error(struct scan *ctx, unsigned file, unsigned line,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void ctx_error(struct scan *ctx, unsigned file, unsigned line,
		      const char *fmt, ...)
{
	char msg[CONFIG_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	scan_error_at(ctx->errs, ctx->files[file], line, msg);
}

static int text_append(struct scan *ctx, const char *s, size_t n)
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

/* Room for one more element (size bytes each) in arr, of n elements with
 * room for *cap (doubled, from first).  Returns arr, moved maybe, or NULL
 * (out of memory: arr is left as it was). */
static void *room_for_one(void *arr, size_t n, size_t *cap, size_t size, size_t first)
{
	size_t c = *cap ? *cap * 2 : first;
	void *p;

	if (n < *cap)
		return arr;
	p = realloc(arr, c * size);
	if (p)
		*cap = c;
	return p;
}

static int segment_add(struct scan *ctx, unsigned file, unsigned fline)
{
	struct scan_segment *segs = room_for_one(ctx->segs, ctx->n_segs, &ctx->cap_segs,
						 sizeof(*segs), 16);

	if (!segs)
		return -ENOMEM;
	ctx->segs = segs;
	ctx->segs[ctx->n_segs++] = (struct scan_segment){ ctx->cline, file, fline };
	return 0;
}

void scan_map_line(const struct scan *ctx, unsigned cline, const char **file,
		   unsigned *line)
{
	size_t lo = 0, hi = ctx->n_segs;

	*file = ctx->files[0];
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
	*file = ctx->files[ctx->segs[lo].file];
	if (cline >= ctx->segs[lo].cline)
		*line = ctx->segs[lo].fline + (cline - ctx->segs[lo].cline);
	else
		*line = ctx->segs[lo].fline;
}

unsigned scan_string_line(const struct scan *ctx, unsigned cline)
{
	size_t i;

	for (i = 0; i < ctx->n_fixes; i++)
		if (ctx->fixes[i].bracket == cline)
			return ctx->fixes[i].string;
	return cline;
}

bool scan_flagged(const struct scan *ctx, unsigned start, unsigned end)
{
	unsigned i;

	if (ctx->flagged_overflow)
		return true;
	for (i = 0; i < ctx->n_flagged; i++)
		if (ctx->flagged[i] >= start && ctx->flagged[i] <= end)
			return true;
	return false;
}

void scan_free(struct scan *ctx)
{
	unsigned i;

	for (i = 0; i < ctx->n_files; i++)
		free(ctx->files[i]);
	free(ctx->text);
	free(ctx->segs);
	free(ctx->fixes);
}

static int fix_add(struct scan *ctx, unsigned bracket, unsigned string)
{
	struct scan_line_fix *fixes = room_for_one(ctx->fixes, ctx->n_fixes, &ctx->cap_fixes,
						   sizeof(*fixes), 8);

	if (!fixes)
		return -ENOMEM;
	ctx->fixes = fixes;
	ctx->fixes[ctx->n_fixes++] = (struct scan_line_fix){ bracket, string };
	return 0;
}

/* ------------------------------------------------------------------ */
/* pre-parser */

/* Open and read a whole configuration file.  On error returns -errno and
 * sets *why to a description, or to NULL and *op to the failed call. */
static int read_file(const char *path, char **buf, size_t *len,
		     struct scan_file_id *id, const char **why, const char **op,
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

static bool is_name_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '*';
}

static bool is_name_char(char c)
{
	return is_name_start(c) || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static void flag_line(struct scan *ctx, unsigned cline)
{
	if (ctx->n_flagged < SCAN_FLAGGED_MAX)
		ctx->flagged[ctx->n_flagged++] = cline;
	else
		ctx->flagged_overflow = true;
}

static int prescan_text(struct scan *ctx, unsigned file, const char *buf,
			size_t len, unsigned depth);

/* Resolve, check, read and expand one @include (the directive is on line
 * `line` of file `file`). */
static int do_include(struct scan *ctx, unsigned file, unsigned line,
		      const char *raw, unsigned depth)
{
	char shown[SCAN_SHOWN_SIZE], *path, *buf = NULL;
	const char *parent = ctx->files[file], *slash, *why, *op;
	struct scan_file_id id;
	long long size = 0;
	size_t len = 0, dlen;
	unsigned i, idx;
	int r;

	SCAN_PRINTABLE(shown, raw);
	if (depth + 1 > SCAN_INCLUDE_DEPTH_MAX) {
		ctx_error(ctx, file, line, "@include \"%s\": nested too deeply (more than %d levels)",
			  shown, SCAN_INCLUDE_DEPTH_MAX);
		ctx->fatal = true;
		return 0;
	}
	if (ctx->n_files >= SCAN_INCLUDE_FILES_MAX + 1) {
		ctx_error(ctx, file, line, "@include \"%s\": too many included files (at most %d)",
			  shown, SCAN_INCLUDE_FILES_MAX);
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
static int prescan_text(struct scan *ctx, unsigned file, const char *buf,
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
			size_t n = literal_number(s, &is_int, &hex, &is64);

			if (n == 0) {
				i++;    /* punctuation or garbage */
				continue;
			}
			if (is_int && !literal_int_fits(s, n, hex, is64)) {
				char shown[SCAN_SHOWN_SIZE];

				scan_printable(shown, sizeof(shown), s, n, SCAN_LITERAL_SHOW_MAX);
				ctx_error(ctx, file, line, "integer %s out of range", shown);
				flag_line(ctx, CLINE(line));
			}
			i += n;
		}
	}
#undef CLINE
	return text_append(ctx, buf + from, len - from);
}

int scan_config(struct scan *sc, const char *path, struct config_errors *errs)
{
	const char *why, *op;
	long long size = 0;
	char *buf = NULL;
	size_t len = 0;
	int r;

	memset(sc, 0, sizeof(*sc));
	sc->errs = errs;
	sc->cline = 1;
	sc->files[0] = strdup(path);
	if (!sc->files[0]) {
		config_error(errs, "%s: %s", path, strerror(ENOMEM));
		return -ENOMEM;
	}
	sc->n_files = 1;
	if (strlen(path) >= CONFIG_PATH_MAX) {
		ctx_error(sc, 0, 0, "path too long");
		return -ENAMETOOLONG;
	}

	r = read_file(path, &buf, &len, &sc->stack[0], &why, &op, &size);
	if (r == -EFBIG) {
		ctx_error(sc, 0, 0, "file too large (%lld bytes, at most %d)",
			  size, FILE_SIZE_MAX);
		return -EINVAL;
	} else if (r < 0 && why) {
		ctx_error(sc, 0, 0, "%s", why);
		return -EINVAL;
	} else if (r < 0) {
		ctx_error(sc, 0, 0, "%s: %s", op, strerror(-r));
		return r;
	}
	sc->total = len;
	r = prescan_text(sc, 0, buf, len, 0);
	free(buf);
	if (r < 0) {
		ctx_error(sc, 0, 0, "%s", strerror(-r));
		return r;
	}
	return sc->fatal ? -EINVAL : 0;
}
