/* main.c - echod: command line, then control_run(). */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmdline.h"
#include "config.h"
#include "control.h"
#include "log.h"

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
	struct cmdline cl;
	struct echod_config *cfg;
	struct config_errors *errs;
	const char *path;
	bool check, dump, fd_store;
	int err, status;

	status = cmdline_parse(argc, argv, &cl, stdout, stderr, true);
	if (status != CMDLINE_RUN)
		return status;
	path = cl.config_path;
	check = cl.check;
	dump = cl.dump;
	fd_store = cl.fd_store;
	/* the journal reads "<N>" priority prefixes; a terminal does not */
	log_set_prefix(check || dump ? 0 : !isatty(STDERR_FILENO));

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
		if (!check && !dump)
			log_error("configuration file %s has errors, not starting", path);
		free(cfg);
		free(errs);
		return 1;
	}
	free(errs);
	if (dump) {
		err = config_dump(stdout, cfg);
		if (err)
			log_errno(LOG_ERR, err, "--dump-config: writing the configuration");
		free(cfg);
		return err ? 1 : 0;
	}
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
