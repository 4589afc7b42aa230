/* control.h - the main thread: listeners, workers, signals and reload.
 *
 * control_run() binds or adopts the listeners, starts one worker per
 * configured core (or one unpinned), tells systemd it is ready, then
 * waits on a signalfd: SIGHUP reloads the configuration (all or nothing:
 * a file with errors is refused and the running one kept), SIGTERM and
 * SIGINT drain the workers and exit.  SIGPIPE is ignored. */
#ifndef ECHOD_CONTROL_H
#define ECHOD_CONTROL_H

#include <stdbool.h>

#include "config.h"

/* Serve with cfg (loaded from cfg->path) until told to stop.  With
 * fd_store, a stop hands the established connections to systemd's file
 * descriptor store instead of closing them (a restart resumes them).
 * Returns the process exit status: 0 after a clean stop, 1 on a
 * start-up or fatal error. */
int control_run(const struct echod_config *cfg, bool fd_store);

#endif
