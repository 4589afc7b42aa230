/* cmdline.h - echod's command line (getopt_long), apart from main() so
 * that a test can drive it (tests/fuzz/fuzz_cmdline.c). */
#ifndef ECHOD_CMDLINE_H
#define ECHOD_CMDLINE_H

#include <stdbool.h>
#include <stdio.h>

#define CMDLINE_RUN (-1)

struct cmdline {
	const char *config_path;   /* -c FILE (points into argv), or the default */
	bool check;                /* -t, --check-config */
	bool dump;                 /* -T, --dump-config */
	bool fd_store;             /* --fd-store */
};

/* The --help text. */
extern const char cmdline_usage[];

/* Parse argv (getopt_long: options and operands may mix; argv's pointers
 * are permuted).  Returns CMDLINE_RUN with *cl filled, or the status to
 * exit with: 0 after --help or --version (printed to out), 2 after a
 * usage error (explained on err; getopt's own message goes to stderr if
 * getopt_messages).  Can be called again: getopt's state is reset. */
int cmdline_parse(int argc, char **argv, struct cmdline *cl, FILE *out, FILE *err,
		  bool getopt_messages);

#endif
