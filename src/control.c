/* control.c - the main thread; see control.h */
#include "control.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "http.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

struct control {
	struct echod_config cfg;           /* the running configuration */
	const struct backend_ops *ops;
	unsigned nworkers;
	struct worker *workers;
	struct worker_counters *ctr;       /* one per worker, cache-line apart */
	struct echod_shared shared;
	struct listen_set *sets;           /* one, or one per worker (SO_REUSEPORT) */
	unsigned nsets;
	int sigfd;
	int exit_fd;
	uint64_t reloads, reload_failures;
	bool stopping;
	bool fd_store;                     /* hand connections to systemd at stop */
	struct metrics_state metrics;      /* read by the HTTP thread */
	struct http *http;
	struct listener metrics_own;       /* metrics socket bound here, fd -1 if none */
};

static uint64_t monotonic_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void notify_status(struct control *ctl, const char *what)
{
	uint32_t n = atomic_load_explicit(&ctl->shared.nconns, memory_order_relaxed);

	sd_notifyf(0, "STATUS=%s: backend %s, %u worker%s, %u connection%s, %llu reload%s",
		   what, ctl->ops->name, ctl->nworkers, ctl->nworkers == 1 ? "" : "s",
		   n, n == 1 ? "" : "s", (unsigned long long)ctl->reloads,
		   ctl->reloads == 1 ? "" : "s");
}

static void log_config_errors(const struct config_errors *errs)
{
	unsigned kept = errs->n < CONFIG_MAX_ERRORS ? errs->n : CONFIG_MAX_ERRORS;

	for (unsigned i = 0; i < kept; i++)
		log_error("%s", errs->msg[i]);
	if (errs->n > kept)
		log_error("... and %u more error(s)", errs->n - kept);
}

/* Raise the soft fd limit to the hard one: a connection is an fd. */
static void raise_fd_limit(const struct echod_config *cfg)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_errno(LOG_WARNING, errno, "getrlimit RLIMIT_NOFILE");
		return;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_errno(LOG_WARNING, errno, "setrlimit RLIMIT_NOFILE %llu",
				  (unsigned long long)rl.rlim_max);
		else
			log_debug("raised the open file limit from %llu to %llu",
				  (unsigned long long)was, (unsigned long long)rl.rlim_cur);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)cfg->max_connections + 64)
		log_notice("open file limit %llu is below max_connections %u: "
			   "accepts will pause when it is reached (LimitNOFILE= raises it)",
			   (unsigned long long)rl.rlim_cur, cfg->max_connections);
}

/* ---- listeners ---- */

static int setup_listeners(struct control *ctl)
{
	int n;

	ctl->sets = calloc(ctl->nworkers, sizeof(*ctl->sets));
	if (!ctl->sets)
		return -ENOMEM;
	for (unsigned i = 0; i < ctl->nworkers; i++)
		listen_set_init(&ctl->sets[i]);
	n = listen_adopt(&ctl->sets[0]);
	if (n < 0)
		return n;
	if (n > 0) {
		ctl->nsets = 1;
		log_info("socket activation: adopted %d listener%s", n, n == 1 ? "" : "s");
		return 0;
	}
	if (ctl->sets[0].metrics_fd >= 0)
		log_info("socket activation: metrics socket only; binding the echo listeners");
	/* one socket per worker lets the kernel spread connections */
	ctl->nsets = ctl->nworkers;
	for (unsigned i = 0; i < ctl->nsets; i++) {
		int err = listen_bind(&ctl->sets[i], &ctl->cfg, ctl->nworkers > 1);

		if (err)
			return err;
	}
	return 0;
}

static void close_listeners(struct control *ctl)
{
	if (!ctl->sets)
		return;
	for (unsigned i = 0; i < ctl->nsets; i++)
		listen_close_own(&ctl->sets[i]);
	free(ctl->sets);
	ctl->sets = NULL;
}

static void describe_listeners(struct control *ctl, char *buf, size_t len)
{
	const struct listen_set *ls = &ctl->sets[0];
	size_t off = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < ls->n && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%s", i ? ", " : "", ls->l[i].name);

		if (n < 0)
			break;
		off += (size_t)n;
	}
}

/* ---- metrics endpoint ---- */

static int start_metrics(struct control *ctl)
{
	int fd = ctl->sets[0].metrics_fd, err;

	if (!ctl->cfg.metrics.enabled) {
		if (fd >= 0)
			log_notice("metrics: disabled in the configuration; the socket-activated "
				   "metrics socket stays unused");
		return 0;
	}
	if (fd < 0) {
		err = listen_bind_addr(&ctl->cfg.metrics.address, 128, &ctl->metrics_own);
		if (err)
			return err;
		fd = ctl->metrics_own.fd;
	}
	err = http_start(&ctl->http, fd, &ctl->metrics);
	if (err)
		return err;
	if (ctl->metrics_own.fd >= 0) {
		log_info("metrics: serving http://%s/metrics", ctl->metrics_own.name);
	} else {
		char name[64];

		listen_sockname(fd, name, sizeof(name));
		log_info("metrics: serving http://%s/metrics (socket-activated)", name);
	}
	return 0;
}

static void stop_metrics(struct control *ctl)
{
	http_stop(ctl->http);
	ctl->http = NULL;
	if (ctl->metrics_own.fd >= 0)
		close(ctl->metrics_own.fd);
	ctl->metrics_own.fd = -1;
}

/* ---- workers ---- */

/* Start the workers in order; *started counts those running. */
static int start_workers(struct control *ctl, unsigned *started)
{
	struct worker_params params;

	worker_params_from_config(&params, &ctl->cfg);
	for (unsigned i = 0; i < ctl->nworkers; i++) {
		struct worker *w = &ctl->workers[i];
		const struct listen_set *ls = &ctl->sets[ctl->nsets == 1 ? 0 : i];
		int err;

		w->id = i;
		w->core = ctl->cfg.n_cores ? ctl->cfg.cores[i] : -1;
		w->ops = ctl->ops;
		w->shared = &ctl->shared;
		w->ctr = &ctl->ctr[i];
		w->exit_fd = ctl->exit_fd;
		w->n_listen = ls->n;
		for (unsigned j = 0; j < ls->n; j++) {
			w->listen_fds[j] = ls->l[j].fd;
			w->listen_own[j] = !ls->l[j].inherited && ctl->nsets == ctl->nworkers;
		}
		w->shared_listeners = ctl->nsets == 1 && ctl->nworkers > 1;
		w->buffer_count = ctl->cfg.buffer_count;
		w->buffer_size = ctl->cfg.buffer_size;
		w->conn_cap = CONFIG_MAX_CONNECTIONS_MAX;
		w->params = params;
		err = worker_setup(w);
		if (err) {
			log_errno(LOG_ERR, err, "worker %u: set-up (eventfd, pthread_mutex_init)", i);
			return err;
		}
		err = worker_start(w);
		if (err) {
			log_error("worker %u: %s", i, w->init_error);
			worker_teardown(w);
			return err;
		}
		(*started)++;
	}
	return 0;
}

/* One line with the totals of every worker's counters. */
static void log_totals(struct control *ctl)
{
	uint64_t t[10] = { 0 };

	for (unsigned i = 0; i < ctl->nworkers; i++) {
		struct worker_counters *c = &ctl->ctr[i];

		t[0] += ctr_get(&c->accepted);
		t[1] += ctr_get(&c->rejected);
		t[2] += ctr_get(&c->bytes_received);
		t[3] += ctr_get(&c->bytes_sent);
		t[4] += ctr_get(&c->buf_exhausted);
		t[5] += ctr_get(&c->backpressure_pauses);
		t[6] += ctr_get(&c->idle_timeouts);
		t[7] += ctr_get(&c->conn_errors);
		t[8] += ctr_get(&c->cq_overflow);
		t[9] += ctr_get(&c->rearms);
	}
	log_info("totals: accepted %llu, rejected %llu, bytes received %llu, bytes sent %llu, "
		 "buffer exhaustion %llu, backpressure pauses %llu, idle timeouts %llu, "
		 "connection errors %llu, cq overflow %llu, rearms %llu",
		 (unsigned long long)t[0], (unsigned long long)t[1], (unsigned long long)t[2],
		 (unsigned long long)t[3], (unsigned long long)t[4], (unsigned long long)t[5],
		 (unsigned long long)t[6], (unsigned long long)t[7], (unsigned long long)t[8],
		 (unsigned long long)t[9]);
}

/* Drain and join the first n workers. */
static int stop_workers(struct control *ctl, unsigned n)
{
	int status = 0;

	for (unsigned i = 0; i < n; i++)
		worker_post_stop(&ctl->workers[i]);
	for (unsigned i = 0; i < n; i++) {
		int err = worker_join(&ctl->workers[i]);

		if (err) {
			log_errno(LOG_ERR, err, "worker %u ended with an error", i);
			status = 1;
		}
		worker_teardown(&ctl->workers[i]);
	}
	return status;
}

/* ---- reload ---- */

static void name_unapplied(unsigned changed)
{
	static const struct { unsigned bit; const char *what; } later[] = {
		{ CONFIG_CHANGED_BACKEND, "backend" },
		{ CONFIG_CHANGED_LISTEN, "port/listen/backlog" },
		{ CONFIG_CHANGED_BUFFERS, "buffer_count/buffer_size" },
		{ CONFIG_CHANGED_CORES, "core" },
		{ CONFIG_CHANGED_METRICS, "metrics" },
	};

	for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++)
		if (changed & later[i].bit)
			log_warning("reload: %s changed; this takes effect at the next restart",
				    later[i].what);
}

static void reload(struct control *ctl)
{
	struct echod_config next;
	struct config_errors *errs;
	struct worker_params params;
	unsigned changed;
	int err;

	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
		   (unsigned long long)monotonic_usec(), ctl->cfg.path);
	log_info("reload: reading %s", ctl->cfg.path);
	errs = calloc(1, sizeof(*errs));
	if (!errs) {
		log_errno(LOG_ERR, ENOMEM, "reload: calloc: not reloading");
		ctl->reload_failures++;
		sd_notify(0, "READY=1");
		return;
	}
	err = config_load(ctl->cfg.path, &next, errs);
	if (err) {
		log_config_errors(errs);
		log_error("reload: configuration file %s has errors, keeping the running one",
			  ctl->cfg.path);
		ctl->reload_failures++;
		atomic_fetch_add(&ctl->metrics.reload_failures, 1);
		atomic_store(&ctl->metrics.last_reload_ok, 0);
		free(errs);
		sd_notify(0, "READY=1");
		notify_status(ctl, "serving (last reload failed)");
		return;
	}
	free(errs);
	changed = config_diff(&ctl->cfg, &next);
	/* what applies live */
	next.backend = ctl->cfg.backend;    /* keep the rest as running */
	if (changed & CONFIG_CHANGED_LOG_LEVEL)
		log_set_level(next.log_level);
	atomic_store_explicit(&ctl->shared.max_connections, next.max_connections,
			      memory_order_relaxed);
	atomic_store(&ctl->metrics.max_connections, next.max_connections);
	worker_params_from_config(&params, &next);
	for (unsigned i = 0; i < ctl->nworkers; i++)
		worker_post_params(&ctl->workers[i], &params);
	name_unapplied(changed);
	/* settings not applied stay as running, so the next diff names them again */
	memcpy(next.listen, ctl->cfg.listen, sizeof(next.listen));
	next.n_listen = ctl->cfg.n_listen;
	next.port = ctl->cfg.port;
	next.backlog = ctl->cfg.backlog;
	next.buffer_count = ctl->cfg.buffer_count;
	next.buffer_size = ctl->cfg.buffer_size;
	memcpy(next.cores, ctl->cfg.cores, sizeof(next.cores));
	next.n_cores = ctl->cfg.n_cores;
	next.metrics = ctl->cfg.metrics;
	ctl->cfg = next;
	ctl->reloads++;
	atomic_fetch_add(&ctl->metrics.reloads, 1);
	atomic_store(&ctl->metrics.last_reload_ok, 1);
	atomic_store(&ctl->metrics.last_reload_success, (uint64_t)time(NULL));
	log_info("reload: configuration applied (log_level %s, max_connections %u, "
		 "idle_timeout %u s, max_pending %u, shutdown_timeout %u s)",
		 config_log_level_name(next.log_level), next.max_connections,
		 next.idle_timeout, next.max_pending, next.shutdown_timeout);
	sd_notify(0, "READY=1");
	notify_status(ctl, "serving");
}

/* ---- signals ---- */

static int setup_signals(struct control *ctl)
{
	struct sigaction sa = { .sa_handler = SIG_IGN };
	sigset_t set;
	int err;

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGPIPE, &sa, NULL) < 0)
		return -errno;
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	/* blocked before any thread starts, so every thread inherits it */
	err = pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (err)
		return -err;
	ctl->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (ctl->sigfd < 0)
		return -errno;
	return 0;
}

/* Read pending signals; returns true when asked to stop. */
static bool handle_signals(struct control *ctl)
{
	struct signalfd_siginfo si;
	bool stop = false;

	bool hup = false;

	/* read them all first: a stop wins over a reload queued with it */
	while (read(ctl->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGHUP:
			hup = true;
			break;
		case SIGTERM:
		case SIGINT:
			if (!stop)
				log_info("received %s from pid %u, stopping",
					 si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT", si.ssi_pid);
			stop = true;
			break;
		}
	}
	if (hup && !stop)
		reload(ctl);
	return stop;
}

static int serve(struct control *ctl)
{
	struct pollfd pfd[2] = {
		{ .fd = ctl->sigfd, .events = POLLIN },
		{ .fd = ctl->exit_fd, .events = POLLIN },
	};

	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_errno(LOG_ERR, errno, "poll");
			return 1;
		}
		if ((pfd[0].revents & POLLIN) && handle_signals(ctl))
			return 0;
		if (pfd[1].revents & POLLIN) {
			log_error("a worker stopped unexpectedly, exiting");
			return 1;
		}
	}
}

int control_run(const struct echod_config *cfg, bool fd_store)
{
	struct control *ctl;
	char why[256], where[1024];
	unsigned started = 0;
	int status = 1, err;

	ctl = calloc(1, sizeof(*ctl));
	if (!ctl) {
		log_errno(LOG_ERR, ENOMEM, "calloc");
		return 1;
	}
	ctl->cfg = *cfg;
	ctl->fd_store = fd_store;
	ctl->sigfd = ctl->exit_fd = -1;
	ctl->metrics_own.fd = -1;
	if (metrics_state_init(&ctl->metrics) < 0) {
		log_error("metrics: pthread_mutex_init failed");
		free(ctl);
		return 1;
	}
	atomic_store(&ctl->metrics.max_connections, cfg->max_connections);
	ctl->nworkers = cfg->n_cores ? cfg->n_cores : 1;
	atomic_store(&ctl->shared.nconns, 0);
	atomic_store(&ctl->shared.max_connections, cfg->max_connections);

	raise_fd_limit(cfg);
	err = setup_signals(ctl);
	if (err) {
		log_errno(LOG_ERR, err, "signal set-up (sigaction SIGPIPE, pthread_sigmask, signalfd)");
		goto out;
	}
	ctl->exit_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ctl->exit_fd < 0) {
		log_errno(LOG_ERR, errno, "eventfd");
		goto out;
	}
	ctl->ops = backend_select(cfg->backend, cfg, why, sizeof(why));
	if (!ctl->ops) {
		log_error("backend %s: %s", config_backend_name(cfg->backend), why);
		goto out;
	}
	if (why[0])
		log_warning("backend auto: using %s (%s)", ctl->ops->name, why);
	if (setup_listeners(ctl) < 0)
		goto out;
	if (!ctl->sets[0].n) {
		log_error("no echo listener: nothing to serve");
		goto out;
	}
	ctl->workers = calloc(ctl->nworkers, sizeof(*ctl->workers));
	ctl->ctr = aligned_alloc(CACHELINE, ctl->nworkers * sizeof(*ctl->ctr));
	if (!ctl->workers || !ctl->ctr) {
		log_errno(LOG_ERR, ENOMEM, "allocating %u workers", ctl->nworkers);
		goto out;
	}
	memset(ctl->ctr, 0, ctl->nworkers * sizeof(*ctl->ctr));
	err = start_workers(ctl, &started);
	if (err) {
		stop_workers(ctl, started);
		goto out;
	}
	pthread_mutex_lock(&ctl->metrics.lock);
	ctl->metrics.ctr = ctl->ctr;
	ctl->metrics.nworkers = ctl->nworkers;
	ctl->metrics.backend = ctl->ops->name;
	pthread_mutex_unlock(&ctl->metrics.lock);
	if (start_metrics(ctl) < 0) {
		stop_workers(ctl, started);
		goto out;
	}

	describe_listeners(ctl, where, sizeof(where));
	log_info("echod %s ready: backend %s, %u worker%s, listening on %s",
		 PACKAGE_VERSION, ctl->ops->name, ctl->nworkers,
		 ctl->nworkers == 1 ? "" : "s", where);
	sd_notify(0, "READY=1");
	notify_status(ctl, "serving");

	status = serve(ctl);
	ctl->stopping = true;
	sd_notify(0, "STOPPING=1\nSTATUS=draining connections");
	log_info("draining %u connection(s), deadline %u s",
		 atomic_load(&ctl->shared.nconns), ctl->cfg.shutdown_timeout);
	if (stop_workers(ctl, ctl->nworkers))
		status = 1;
	log_totals(ctl);
	log_info("stopped");
out:
	stop_metrics(ctl);
	close_listeners(ctl);
	if (ctl->exit_fd >= 0)
		close(ctl->exit_fd);
	if (ctl->sigfd >= 0)
		close(ctl->sigfd);
	free(ctl->workers);
	free(ctl->ctr);
	metrics_state_destroy(&ctl->metrics);
	free(ctl);
	return status;
}
