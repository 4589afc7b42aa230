/* cmdline.c - see cmdline.h */
#include "cmdline.h"

#include <getopt.h>

#ifndef ECHOD_CONFIG_PATH
#define ECHOD_CONFIG_PATH "/etc/echod.conf"
#endif

const char cmdline_usage[] =
	"Usage: echod [OPTION]...\n"
	"TCP and UDP echo daemon (RFC 862): io_uring or epoll, systemd socket\n"
	"activation, live reload on SIGHUP. Runs in the foreground; logs to stderr.\n"
	"\n"
	"  -c, --config FILE     configuration file (default " ECHOD_CONFIG_PATH ")\n"
	"  -t, --check-config    check the configuration, print 'configuration OK'\n"
	"                        or every error as FILE:LINE: message, and exit\n"
	"  -T, --dump-config     check the configuration, print it as an echod.conf with\n"
	"                        every default filled in and every setting described\n"
	"                        (or every error, as -t), and exit\n"
	"      --fd-store        on SIGTERM, hand established connections to systemd's\n"
	"                        file descriptor store (FileDescriptorStoreMax=), so\n"
	"                        that 'systemctl restart' keeps them\n"
	"  -h, --help            show this help and exit\n"
	"  -V, --version         show the version and exit\n"
	"\n"
	"Signals: SIGHUP reloads the configuration; SIGTERM or SIGINT stop accepting,\n"
	"echo what was received, and exit.\n";

int cmdline_parse(int argc, char **argv, struct cmdline *cl, FILE *out, FILE *err,
		  bool getopt_messages)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 't' },
		{ "dump-config", no_argument, NULL, 'T' },
		{ "fd-store", no_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	cl->config_path = ECHOD_CONFIG_PATH;
	cl->check = false;
	cl->dump = false;
	cl->fd_store = false;
	optind = 0;             /* glibc: a full re-initialisation */
	opterr = getopt_messages;
	while ((opt = getopt_long(argc, argv, "c:tThV", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			cl->config_path = optarg;
			break;
		case 't':
			cl->check = true;
			break;
		case 'T':
			cl->dump = true;
			break;
		case 'F':
			cl->fd_store = true;
			break;
		case 'h':
			fputs(cmdline_usage, out);
			return 0;
		case 'V':
			fprintf(out, "echod %s\n", PACKAGE_VERSION);
			return 0;
		default:
			fputs("Try 'echod --help' for more information.\n", err);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(err, "echod: unexpected argument '%s'\n"
			"Try 'echod --help' for more information.\n", argv[optind]);
		return 2;
	}
	return CMDLINE_RUN;
}
