/* config_scan.h - the pre-scanner of configuration files (config_scan.c),
 * used by config_parse.c: it reads a file and every file it @includes,
 * refuses what libconfig 1.5 mishandles, and expands the includes into one
 * text for libconfig, with a map from each line of that text back to its
 * file and line. */
#ifndef ECHOD_CONFIG_SCAN_H
#define ECHOD_CONFIG_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"

#define SCAN_INCLUDE_DEPTH_MAX  10      /* as libconfig 1.5 */
#define SCAN_INCLUDE_FILES_MAX  64
#define SCAN_FLAGGED_MAX        64
#define SCAN_LITERAL_SHOW_MAX   64      /* chars of a literal in a message */

struct scan_segment {
	unsigned cline;         /* first line in the expanded text */
	unsigned file;          /* index in files[] */
	unsigned fline;         /* its line in that file */
};

struct scan_file_id {
	dev_t dev;
	ino_t ino;
};

/* libconfig gives a string list element the line of the token after it:
 * for the last element of a list that is the closing bracket, maybe lines
 * below.  Pairs (bracket line, string line) put it back. */
struct scan_line_fix {
	unsigned bracket, string;
};

struct scan {
	struct config_errors *errs;
	char *files[SCAN_INCLUDE_FILES_MAX + 1];        /* names as shown in errors */
	unsigned n_files;
	struct scan_file_id stack[SCAN_INCLUDE_DEPTH_MAX + 1];
	bool fatal;             /* do not hand the text to libconfig */
	/* the expanded text */
	char *text;
	size_t len, cap;
	unsigned cline;         /* line of the end of text, from 1 */
	struct scan_segment *segs;
	size_t n_segs, cap_segs;
	size_t total;           /* bytes read, all files */
	/* expanded-text lines holding an integer literal reported as out of
	 * range: libconfig's wrapped value there is not reported again */
	unsigned flagged[SCAN_FLAGGED_MAX];
	unsigned n_flagged;
	bool flagged_overflow;
	struct scan_line_fix *fixes;
	size_t n_fixes, cap_fixes;
};

/* Read and expand path into sc (zeroed by it).  Returns 0 with sc->text
 * (NULL for an empty file) ready for libconfig, or -errno with every
 * error in errs (-EINVAL: the file has errors).  sc must be freed with
 * scan_free() either way. */
int scan_config(struct scan *sc, const char *path, struct config_errors *errs);

/* Free what sc holds. */
void scan_free(struct scan *sc);

/* The file name and line of line cline of the expanded text. */
void scan_map_line(const struct scan *sc, unsigned cline, const char **file,
		   unsigned *line);

/* The line of a string that libconfig placed at the closing bracket on
 * line cline of the expanded text (see struct scan_line_fix), or cline. */
unsigned scan_string_line(const struct scan *sc, unsigned cline);

/* Whether a literal on lines start..end of the expanded text was reported
 * as out of range. */
bool scan_flagged(const struct scan *sc, unsigned start, unsigned end);

/* Append "FILE:LINE: msg" (or "FILE: msg" for line 0) to errs; a long file
 * name loses its head. */
void scan_error_at(struct config_errors *errs, const char *file, unsigned line,
		   const char *msg);

/* Copy s (len bytes) into buf for a message: printable ASCII kept,
 * anything else as \xHH, cut after max characters with "...". */
const char *scan_printable(char *buf, size_t size, const char *s, size_t len, size_t max);

/* A buffer for scan_printable() of a literal, and the call. */
#define SCAN_SHOWN_SIZE (SCAN_LITERAL_SHOW_MAX * 4 + 8)
#define SCAN_PRINTABLE(buf, s) \
	scan_printable((buf), sizeof(buf), (s), strlen(s), SCAN_LITERAL_SHOW_MAX)

#endif
