/* fuzz_config.c - loading and validating a configuration file
 * (src/config.c: the pre-parser with its @include expansion, libconfig,
 * the validation), in process: config_parse_file() is what the
 * config_load() child runs, so no fork per input.
 *
 * Input: the text of main.conf; after a first NUL byte, the text of
 * inc.conf, after a second one other.conf (NUL bytes kept), all three in
 * one private directory, so that @include "inc.conf" finds something.
 *
 * The oracle: config_parse_file() returns 0 with no error and a
 * configuration within every documented range, or an error with at
 * least one message; every message is "FILE:LINE: message" or
 * "FILE: message" naming one of the files, with a line that exists in
 * it (or just past its end), printable, on one line.  No crash, no
 * leak (LeakSanitizer checks each input under libFuzzer).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "config.h"
#include "log.h"

static char dir[256];
static char paths[3][300];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");
	static const char *const names[3] = { "main.conf", "inc.conf", "other.conf" };

	(void)argc;
	(void)argv;
	snprintf(dir, sizeof(dir), "%s/echod-fuzz-config.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		perror("fuzz_config: mkdtemp");
		abort();
	}
	for (int i = 0; i < 3; i++)
		snprintf(paths[i], sizeof(paths[i]), "%s/%s", dir, names[i]);
	log_set_level(LOG_EMERG);
	return 0;
}

static void cleanup(void) __attribute__((destructor));
static void cleanup(void)
{
	if (!dir[0])
		return;
	for (int i = 0; i < 3; i++)
		unlink(paths[i]);
	rmdir(dir);
}

static void write_file(const char *path, const uint8_t *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	FUZZ_CHECK(fd >= 0, "open %s", path);
	while (n) {
		ssize_t w = write(fd, p, n);

		FUZZ_CHECK(w > 0, "write %s", path);
		p += w;
		n -= (size_t)w;
	}
	close(fd);
}

static unsigned lines_of(const uint8_t *p, size_t n)
{
	unsigned l = 1;

	for (size_t i = 0; i < n; i++)
		l += p[i] == '\n';
	return l;
}

static void check_message(const char *msg, const unsigned *nlines, bool *have)
{
	for (size_t i = 0; msg[i]; i++)
		FUZZ_CHECK((unsigned char)msg[i] >= 0x20 && msg[i] != 0x7f,
			   "control character 0x%02x in message: %s", (unsigned char)msg[i], msg);
	for (int f = 0; f < 3; f++) {
		size_t len = strlen(paths[f]);
		const char *rest = msg + len;

		if (!have[f] || strncmp(msg, paths[f], len) || rest[0] != ':')
			continue;
		if (rest[1] == ' ') {
			FUZZ_CHECK(rest[2] != '\0', "empty message: %s", msg);
			return;
		}
		char *end;
		unsigned long line = strtoul(rest + 1, &end, 10);

		FUZZ_CHECK(rest[1] >= '1' && rest[1] <= '9' && end[0] == ':' && end[1] == ' ' &&
			   end[2] != '\0', "not FILE:LINE: message: %s", msg);
		FUZZ_CHECK(line <= nlines[f] + 1, "line %lu of a file of %u lines: %s", line,
			   nlines[f], msg);
		return;
	}
	/* a file named by an absolute @include, or a long name cut short */
	FUZZ_CHECK((msg[0] == '/' || !strncmp(msg, "...", 3)) && strstr(msg, ": "),
		   "message names no file: %s", msg);
}

static void check_config(const struct echod_config *c)
{
	FUZZ_CHECK(c->port >= 1, "port %u", c->port);
	FUZZ_CHECK(c->n_listen >= 1 && c->n_listen <= CONFIG_MAX_LISTEN, "n_listen %u", c->n_listen);
	FUZZ_CHECK(c->backlog >= 1 && c->backlog <= CONFIG_BACKLOG_MAX, "backlog %u", c->backlog);
	FUZZ_CHECK(c->buffer_count >= CONFIG_BUFFER_COUNT_MIN &&
		   c->buffer_count <= CONFIG_BUFFER_COUNT_MAX, "buffer_count %u", c->buffer_count);
	FUZZ_CHECK(c->buffer_size >= CONFIG_BUFFER_SIZE_MIN &&
		   c->buffer_size <= CONFIG_BUFFER_SIZE_MAX, "buffer_size %u", c->buffer_size);
	FUZZ_CHECK(c->max_pending >= CONFIG_MAX_PENDING_MIN &&
		   c->max_pending <= CONFIG_MAX_PENDING_MAX, "max_pending %u", c->max_pending);
	FUZZ_CHECK(c->n_cores <= CONFIG_MAX_CORES, "n_cores %u", c->n_cores);
	for (unsigned i = 0; i < c->n_cores; i++) {
		FUZZ_CHECK(c->cores[i] >= 0 && c->cores[i] < 1024, "core %d", c->cores[i]);
		for (unsigned j = 0; j < i; j++)
			FUZZ_CHECK(c->cores[i] != c->cores[j], "core %d twice", c->cores[i]);
	}
	FUZZ_CHECK(c->max_connections >= 1 && c->max_connections <= CONFIG_MAX_CONNECTIONS_MAX,
		   "max_connections %u", c->max_connections);
	FUZZ_CHECK(c->idle_timeout <= CONFIG_IDLE_TIMEOUT_MAX, "idle_timeout %u", c->idle_timeout);
	FUZZ_CHECK(c->shutdown_timeout >= 1 && c->shutdown_timeout <= CONFIG_SHUTDOWN_TIMEOUT_MAX,
		   "shutdown_timeout %u", c->shutdown_timeout);
	FUZZ_CHECK(config_log_level_name(c->log_level) != NULL, "log_level %d", c->log_level);
	FUZZ_CHECK(c->backend == CONFIG_BACKEND_AUTO || c->backend == CONFIG_BACKEND_IO_URING ||
		   c->backend == CONFIG_BACKEND_EPOLL, "backend %d", (int)c->backend);
	FUZZ_CHECK(c->metrics.port >= 1, "metrics.port %u", c->metrics.port);
	for (unsigned i = 0; i < c->n_listen; i++)
		FUZZ_CHECK(memchr(c->listen[i].text, '\0', CONFIG_ADDR_MAX) &&
			   (c->listen[i].sa.ss_family == AF_INET || c->listen[i].sa.ss_family == AF_INET6),
			   "listen[%u]", i);
	FUZZ_CHECK(!strcmp(c->path, paths[0]), "path %s", c->path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *part[3] = { data, NULL, NULL };
	size_t len[3] = { size, 0, 0 };
	unsigned nlines[3] = { 0, 0, 0 };
	bool have[3] = { true, false, false };
	struct echod_config *cfg = malloc(sizeof(*cfg));
	struct config_errors *errs = malloc(sizeof(*errs));
	int r;

	FUZZ_CHECK(cfg && errs, "malloc");
	if (!dir[0])
		LLVMFuzzerInitialize(NULL, NULL);
	for (int f = 0; f < 2; f++) {
		const uint8_t *nul = len[f] ? memchr(part[f], 0, len[f]) : NULL;

		if (!nul)
			break;
		part[f + 1] = nul + 1;
		len[f + 1] = len[f] - (size_t)(nul + 1 - part[f]);
		len[f] = (size_t)(nul - part[f]);
		have[f + 1] = true;
	}
	for (int f = 0; f < 3; f++) {
		if (have[f]) {
			write_file(paths[f], part[f], len[f]);
			nlines[f] = lines_of(part[f], len[f]);
		} else {
			unlink(paths[f]);
		}
	}

	memset(cfg, 0xa5, sizeof(*cfg));
	r = config_parse_file(paths[0], cfg, errs);
	if (r == 0) {
		FUZZ_CHECK(errs->n == 0, "success with %u errors", errs->n);
		check_config(cfg);
	} else {
		unsigned kept = errs->n < CONFIG_MAX_ERRORS ? errs->n : CONFIG_MAX_ERRORS;

		FUZZ_CHECK(r < 0 && r > -4096, "returned %d", r);
		FUZZ_CHECK(errs->n > 0, "error %d without a message", r);
		for (unsigned i = 0; i < kept; i++) {
			FUZZ_CHECK(memchr(errs->msg[i], '\0', CONFIG_ERROR_MAX), "message not terminated");
			check_message(errs->msg[i], nlines, have);
		}
	}
	free(cfg);
	free(errs);
	return 0;
}
