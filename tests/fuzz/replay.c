/* replay.c - run a fuzz target on its seed corpus, without libFuzzer.
 *
 *   replay_TARGET [FILE|DIR]...
 *
 * Feeds every file (a directory: every file in it, sorted) to the
 * target's LLVMFuzzerTestOneInput(), one TAP line per file.  Without
 * arguments it replays $ECHOD_SRCDIR/tests/fuzz/corpus/TARGET, so that
 * `make check` builds and exercises every target with any compiler.  A
 * failed check aborts the process: the TAP driver reports it, and the
 * line "# FILE" before it names the input. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "tap.h"

#ifndef FUZZ_TARGET
#error "FUZZ_TARGET (the target's name) must be defined"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;

	if (!f) {
		tap_ok(0, "%s: %s", path, strerror(errno));
		return -1;
	}
	for (;;) {
		if (len == cap) {
			uint8_t *p;

			cap = cap ? cap * 2 : 4096;
			p = realloc(buf, cap);
			if (!p)
				abort();
			buf = p;
		}
		size_t n = fread(buf + len, 1, cap - len, f);

		if (n == 0)
			break;
		len += n;
	}
	fclose(f);
	printf("# %s\n", path);
	fflush(stdout);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	tap_ok(1, "%s (%zu bytes)", path, len);
	return 0;
}

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void replay_path(const char *path)
{
	struct stat st;
	struct dirent *e;
	char **names = NULL;
	size_t n = 0;
	DIR *d;

	if (stat(path, &st) < 0) {
		tap_ok(0, "%s: %s", path, strerror(errno));
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		replay_file(path);
		return;
	}
	d = opendir(path);
	if (!d) {
		tap_ok(0, "%s: %s", path, strerror(errno));
		return;
	}
	while ((e = readdir(d))) {
		char **p;

		if (e->d_name[0] == '.')
			continue;
		p = realloc(names, (n + 1) * sizeof(*names));
		if (!p)
			abort();
		names = p;
		if (asprintf(&names[n], "%s/%s", path, e->d_name) < 0)
			abort();
		n++;
	}
	closedir(d);
	tap_ok(n > 0, "%s: %zu input(s)", path, n);
	qsort(names, n, sizeof(*names), cmp);
	for (size_t i = 0; i < n; i++) {
		replay_file(names[i]);
		free(names[i]);
	}
	free(names);
}

int main(int argc, char **argv)
{
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			replay_path(argv[i]);
	} else {
		const char *src = getenv("ECHOD_SRCDIR");
		char *dir;

		if (asprintf(&dir, "%s/tests/fuzz/corpus/%s", src && *src ? src : ".",
			     FUZZ_TARGET) < 0)
			abort();
		replay_path(dir);
		free(dir);
	}
	return tap_done();
}
