/* fuzz_cmdline.c - echod's command line (src/cmdline.c).
 *
 * Input: the arguments after "echod", separated by NUL bytes.
 *
 * The oracle is a small model of what the command line means, written
 * from echod(8) and GNU getopt_long's rules, independent of getopt:
 * options are read left to right, operands skipped and refused at the
 * end, "--" ends the options; -c takes the rest of its cluster or the
 * next argument; a long option may be abbreviated to any unambiguous
 * prefix and takes "=VALUE" (--config only) or the next argument; -h and
 * -V print and exit 0 at once; any error exits 2 with a hint on stderr.
 * The parser must agree with the model on the outcome, the config path
 * and the flags, print exactly the usage or the version, and give the
 * same answer when called again (its getopt state is reset).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "cmdline.h"

#ifndef ECHOD_CONFIG_PATH
#define ECHOD_CONFIG_PATH "/etc/echod.conf"
#endif

#define MAX_ARGS 24

enum { M_CONFIG, M_CHECK, M_DUMP, M_FDSTORE, M_HELP, M_VERSION, M__COUNT };
static const char *const long_names[M__COUNT] = {
	"config", "check-config", "dump-config", "fd-store", "help", "version",
};

struct model {
	int status;             /* CMDLINE_RUN, 0 (help/version) or 2 */
	bool help;              /* 0 because of --help (else --version) */
	const char *path;
	bool check, dump, fd_store;
};

static int long_match(const char *name, size_t len)
{
	int found = -1;

	for (int k = 0; k < M__COUNT; k++) {
		if (strlen(long_names[k]) == len && !strncmp(long_names[k], name, len))
			return k;                       /* exact */
		if (!strncmp(long_names[k], name, len)) {
			if (found >= 0)
				return -2;              /* ambiguous */
			found = k;
		}
	}
	return found;
}

static void model(int argc, char **argv, struct model *m)
{
	int operands = 0;

	m->status = CMDLINE_RUN;
	m->path = ECHOD_CONFIG_PATH;
	m->check = m->dump = m->fd_store = m->help = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--")) {
			operands += argc - i - 1;
			break;
		}
		if (a[0] != '-' || a[1] == '\0') {
			operands++;
			continue;
		}
		if (a[1] == '-') {
			const char *name = a + 2, *eq = strchr(name, '=');
			size_t len = eq ? (size_t)(eq - name) : strlen(name);
			int k = long_match(name, len);

			if (k < 0) {
				m->status = 2;
				return;
			}
			if (k == M_CONFIG) {
				if (eq) {
					m->path = eq + 1;
				} else if (i + 1 < argc) {
					m->path = argv[++i];
				} else {
					m->status = 2;
					return;
				}
				continue;
			}
			if (eq) {
				m->status = 2;          /* takes no argument */
				return;
			}
			if (k == M_CHECK)
				m->check = true;
			else if (k == M_DUMP)
				m->dump = true;
			else if (k == M_FDSTORE)
				m->fd_store = true;
			else {
				m->status = 0;
				m->help = k == M_HELP;
				return;
			}
			continue;
		}
		for (const char *p = a + 1; *p; p++) {
			if (*p == 'c') {
				if (p[1]) {
					m->path = p + 1;
				} else if (i + 1 < argc) {
					m->path = argv[++i];
				} else {
					m->status = 2;
					return;
				}
				break;
			} else if (*p == 't') {
				m->check = true;
			} else if (*p == 'T') {
				m->dump = true;
			} else if (*p == 'h' || *p == 'V') {
				m->status = 0;
				m->help = *p == 'h';
				return;
			} else {
				m->status = 2;
				return;
			}
		}
	}
	if (operands)
		m->status = 2;
}

static void run(int argc, char **argv, const struct model *m)
{
	char *args[MAX_ARGS + 2], *out = NULL, *err = NULL;
	size_t out_len = 0, err_len = 0;
	FILE *fo = open_memstream(&out, &out_len), *fe = open_memstream(&err, &err_len);
	struct cmdline cl;
	int st;

	FUZZ_CHECK(fo && fe, "open_memstream");
	memcpy(args, argv, (size_t)(argc + 1) * sizeof(*args));   /* getopt permutes */
	st = cmdline_parse(argc, args, &cl, fo, fe, false);
	fclose(fo);
	fclose(fe);
	FUZZ_CHECK(st == m->status, "status %d, expected %d", st, m->status);
	if (st == CMDLINE_RUN) {
		FUZZ_CHECK(!strcmp(cl.config_path, m->path), "config \"%s\", expected \"%s\"",
			   cl.config_path, m->path);
		FUZZ_CHECK(cl.check == m->check && cl.dump == m->dump && cl.fd_store == m->fd_store,
			   "check %d dump %d fd-store %d, expected %d %d %d", cl.check, cl.dump,
			   cl.fd_store, m->check, m->dump, m->fd_store);
		FUZZ_CHECK(out_len == 0 && err_len == 0, "output when running");
	} else if (st == 0) {
		char version[64];

		snprintf(version, sizeof(version), "echod %s\n", PACKAGE_VERSION);
		FUZZ_CHECK(!strcmp(out, m->help ? cmdline_usage : version), "printed \"%s\"", out);
		FUZZ_CHECK(err_len == 0, "stderr on success: %s", err);
	} else {
		FUZZ_CHECK(out_len == 0 && strstr(err, "Try 'echod --help'"),
			   "usage error: stdout \"%s\" stderr \"%s\"", out, err);
	}
	free(out);
	free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1), *argv[MAX_ARGS + 2];
	struct model m;
	int argc = 0;

	FUZZ_CHECK(buf, "malloc");
	memcpy(buf, data, size);
	buf[size] = '\0';
	argv[argc++] = (char *)"echod";
	for (size_t off = 0; off < size && argc <= MAX_ARGS; off += strlen(buf + off) + 1)
		argv[argc++] = buf + off;
	argv[argc] = NULL;
	model(argc, argv, &m);
	run(argc, argv, &m);
	run(argc, argv, &m);       /* again: no state left from the first call */
	free(buf);
	return 0;
}
