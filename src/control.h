/* control.h - the main thread: listeners, workers, signals and reload.
 *
 * control_run() binds or adopts the listeners, starts one worker per
 * configured core (or one unpinned), tells systemd it is ready, then
 * waits on a signalfd: SIGHUP reloads the configuration (all or nothing:
 * a file with errors is refused and the running one kept), SIGTERM and
 * SIGINT drain the workers and exit.  SIGPIPE is ignored. */
#ifndef ECHOD_CONTROL_H
#define ECHOD_CONTROL_H

#include "config.h"

/* Serve with cfg (loaded from cfg->path) until told to stop.  Returns
 * the process exit status: 0 after a clean stop, 1 on a start-up or
 * fatal error. */
int control_run(const struct echod_config *cfg);

#endif
