/* main.c - echod: command line, then control_run(). */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "log.h"

#ifndef ECHOD_CONFIG_PATH
#define ECHOD_CONFIG_PATH "/etc/echod.conf"
#endif

static const char usage_text[] =
	"Usage: echod [OPTION]...\n"
	"TCP echo daemon (RFC 862): io_uring or epoll, systemd socket activation,\n"
	"live reload on SIGHUP. Runs in the foreground; logs to stderr.\n"
	"\n"
	"  -c, --config FILE     configuration file (default " ECHOD_CONFIG_PATH ")\n"
	"  -t, --check-config    check the configuration, print 'configuration OK'\n"
	"                        or every error as FILE:LINE: message, and exit\n"
	"      --fd-store        on SIGTERM, hand established connections to systemd's\n"
	"                        file descriptor store (FileDescriptorStoreMax=), so\n"
	"                        that 'systemctl restart' keeps them\n"
	"  -h, --help            show this help and exit\n"
	"  -V, --version         show the version and exit\n"
	"\n"
	"Signals: SIGHUP reloads the configuration; SIGTERM or SIGINT stop accepting,\n"
	"echo what was received, and exit.\n";

static void print_errors(const struct config_errors *errs)
{
	unsigned kept = errs->n < CONFIG_MAX_ERRORS ? errs->n : CONFIG_MAX_ERRORS;

	for (unsigned i = 0; i < kept; i++)
		log_error("%s", errs->msg[i]);
	if (errs->n > kept)
		log_error("... and %u more error(s)", errs->n - kept);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 't' },
		{ "fd-store", no_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = ECHOD_CONFIG_PATH;
	struct echod_config *cfg;
	struct config_errors *errs;
	bool check = false, fd_store = false;
	int opt, err, status;

	while ((opt = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check = true;
			break;
		case 'F':
			fd_store = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case 'V':
			printf("echod %s\n", PACKAGE_VERSION);
			return 0;
		default:
			fputs("Try 'echod --help' for more information.\n", stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "echod: unexpected argument '%s'\n"
			"Try 'echod --help' for more information.\n", argv[optind]);
		return 2;
	}
	/* the journal reads "<N>" priority prefixes; a terminal does not */
	log_set_prefix(check ? 0 : !isatty(STDERR_FILENO));

	cfg = calloc(1, sizeof(*cfg));
	errs = calloc(1, sizeof(*errs));
	if (!cfg || !errs) {
		log_errno(LOG_ERR, ENOMEM, "calloc");
		return 1;
	}
	err = config_load(path, cfg, errs);
	if (err) {
		if (errs->n)
			print_errors(errs);
		else
			log_errno(LOG_ERR, err, "%s", path);
		if (!check)
			log_error("configuration file %s has errors, not starting", path);
		free(cfg);
		free(errs);
		return 1;
	}
	free(errs);
	if (check) {
		printf("configuration OK\n");
		free(cfg);
		return 0;
	}
	log_set_level(cfg->log_level);
	status = control_run(cfg, fd_store);
	free(cfg);
	return status;
}
