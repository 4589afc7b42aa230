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
#include "handoff.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "metrics_endpoint.h"
#include "persource.h"
#include "policy.h"
#include "worker.h"
#include "wset.h"

#define HANDOVER_FLUSH_MS 250       /* a reload's hand-over: flush this long first */

struct control {
	struct echod_config cfg;           /* the running configuration */
	struct policy *policy;             /* its allow/deny lists, compiled (NULL: none) */
	struct wset ws;                    /* the running workers */
	struct echod_shared shared;
	struct listen_set *sets;           /* one, or one per worker at start (SO_REUSEPORT) */
	unsigned nsets;                    /* sets with TCP listeners */
	unsigned nalloc;                   /* sets allocated: UDP sockets bound per worker */
	int sigfd;
	int exit_fd;
	uint64_t reloads;
	bool fd_store;                     /* hand connections to systemd at stop */
	struct metrics_state metrics;      /* read by the HTTP thread */
	struct worker_counters *base;      /* counted by replaced workers (metrics) */
	struct metrics_endpoint mep;       /* /metrics over HTTP(S) */
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
		   what, ctl->ws.ops->name, ctl->ws.n, ctl->ws.n == 1 ? "" : "s",
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
	unsigned nw = ctl->cfg.n_cores ? ctl->cfg.n_cores : 1;
	int n;

	ctl->sets = calloc(nw, sizeof(*ctl->sets));
	if (!ctl->sets)
		return -ENOMEM;
	ctl->nalloc = nw;
	for (unsigned i = 0; i < nw; i++)
		listen_set_init(&ctl->sets[i]);
	ctl->nsets = 1;
	n = listen_adopt(&ctl->sets[0]);
	if (n < 0)
		return n;
	if (n > 0) {
		log_info("socket activation: adopted %d listener%s", n, n == 1 ? "" : "s");
		return 0;
	}
	if (ctl->sets[0].metrics_fd >= 0)
		log_info("socket activation: metrics socket only; binding the echo listeners");
	/* one socket per worker lets the kernel spread connections; the set
	 * of sockets never changes after start-up (closing a SO_REUSEPORT
	 * socket would reset the connections in its backlog) */
	ctl->nsets = nw;
	for (unsigned i = 0; i < ctl->nsets; i++) {
		int err = listen_bind(&ctl->sets[i], &ctl->cfg, nw > 1);

		if (err)
			return err;
	}
	return 0;
}

/* UDP: the inherited datagram sockets, or with udp.enabled one socket
 * per worker and address (SO_REUSEPORT); then their options. */
static int setup_udp(struct control *ctl)
{
	unsigned nw = ctl->nalloc;

	if (ctl->sets[0].n_udp) {
		log_info("socket activation: %u UDP socket%s%s", ctl->sets[0].n_udp,
			 ctl->sets[0].n_udp == 1 ? "" : "s",
			 ctl->cfg.udp.enabled ? " (udp.enabled: binding none)" : "");
	} else if (ctl->cfg.udp.enabled) {
		for (unsigned i = 0; i < nw; i++) {
			int err = listen_bind_udp(&ctl->sets[i], &ctl->cfg, nw > 1);

			if (err)
				return err;
		}
	}
	return listen_udp_options(ctl->sets, nw, &ctl->cfg);
}

static void close_listeners(struct control *ctl)
{
	if (!ctl->sets)
		return;
	for (unsigned i = 0; i < ctl->nalloc; i++)
		listen_close_own(&ctl->sets[i]);
	for (unsigned i = 0; i < ctl->sets[0].n_handed; i++)
		close(ctl->sets[0].handed[i].fd);
	free(ctl->sets[0].handed);
	free(ctl->sets);
	ctl->sets = NULL;
}

static void describe_listeners(struct control *ctl, char *buf, size_t len)
{
	const struct listen_set *ls = &ctl->sets[0];
	size_t off = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < ls->n && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%s", off ? ", " : "", ls->l[i].name);

		if (n < 0)
			break;
		off += (size_t)n;
	}
}

static void publish_workers(struct control *ctl)
{
	pthread_mutex_lock(&ctl->metrics.lock);
	ctl->metrics.ctr = ctl->ws.ctr;
	ctl->metrics.base = ctl->base;
	ctl->metrics.nworkers = ctl->ws.n;
	ctl->metrics.backend = ctl->ws.ops->name;
	ctl->metrics.persource = ctl->shared.persource;
	pthread_mutex_unlock(&ctl->metrics.lock);
}

/* One line with the totals of every worker's counters. */
static void log_totals(struct control *ctl)
{
	struct worker_counters sum;
	unsigned long long t[13] = { 0 };

	memset(&sum, 0, sizeof(sum));
	metrics_fold(&sum, 1, ctl->ws.ctr, ctl->ws.n);
	if (ctl->base)
		metrics_fold(&sum, 1, ctl->base, ctl->ws.n);
	t[0] = ctr_get(&sum.accepted);
	t[1] = ctr_get(&sum.rejected);
	t[2] = ctr_get(&sum.bytes_received);
	t[3] = ctr_get(&sum.bytes_sent);
	t[4] = ctr_get(&sum.buf_exhausted);
	t[5] = ctr_get(&sum.backpressure_pauses);
	t[6] = ctr_get(&sum.idle_timeouts);
	t[7] = ctr_get(&sum.conn_errors);
	t[8] = ctr_get(&sum.cq_overflow);
	t[9] = ctr_get(&sum.rearms);
	t[10] = ctr_get(&sum.udp_rx_datagrams);
	t[11] = ctr_get(&sum.udp_tx_datagrams);
	for (unsigned k = 0; k < DDROP__COUNT; k++)
		t[12] += ctr_get(&sum.udp_drops[k]);
	log_info("totals: accepted %llu, rejected %llu, bytes received %llu, bytes sent %llu, "
		 "buffer exhaustion %llu, backpressure pauses %llu, idle timeouts %llu, "
		 "connection errors %llu, cq overflow %llu, rearms %llu, "
		 "udp datagrams received %llu, echoed %llu, dropped %llu",
		 t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12]);
}

/* ---- replacing the workers ---- */

/* Forget the exit notifications of n workers that were meant to end. */
static void absorb_exits(struct control *ctl, unsigned n)
{
	uint64_t v = 0;

	if (read(ctl->exit_fd, &v, sizeof(v)) == (ssize_t)sizeof(v) && v > n) {
		v -= n;     /* some other worker ended too: let serve() see it */
		if (write(ctl->exit_fd, &v, sizeof(v)) < 0)
			log_errno(LOG_ERR, errno, "write exit eventfd");
	}
}

/* Start workers for next, hand the running workers' connections over to
 * them, and retire the old ones.  On error the old workers keep serving. */
static int respawn(struct control *ctl, const struct echod_config *next, struct policy *policy)
{
	const struct backend_ops *ops;
	struct worker_counters *base;
	struct conn_export *moved;
	struct wset old = ctl->ws, ws;
	unsigned n, nn = next->n_cores ? next->n_cores : 1;
	char why[256];
	int err;

	ops = backend_select(next->backend, next, why, sizeof(why));
	if (!ops) {
		log_error("reload: backend %s: %s", config_backend_name(next->backend), why);
		return -ENOTSUP;
	}
	if (why[0])
		log_warning("reload: backend auto: using %s (%s)", ops->name, why);
	base = aligned_alloc(CACHELINE, nn * sizeof(*base));
	if (!base)
		return -ENOMEM;
	memset(base, 0, nn * sizeof(*base));
	/* the new workers read UDP only once the old ones have sent what they
	 * received: a flow's echoes stay in order */
	err = wset_start(&ws, ops, next, ctl->sets, ctl->nsets, ctl->nalloc, true, &ctl->shared,
			 ctl->exit_fd, policy);
	if (err) {
		free(base);
		return err;
	}
	/* the old workers stop accepting and reading, then give up their
	 * connections; the new ones accept already */
	n = wset_handover(&old, HANDOVER_FLUSH_MS, &moved);
	absorb_exits(ctl, ctl->ws.n);
	wset_udp_release(&ws, &old);
	wset_import(&ws, moved, n);
	/* counters go on from where the old workers left them */
	if (ctl->base)
		metrics_fold(base, nn, ctl->base, ctl->ws.n);
	metrics_fold(base, nn, ctl->ws.ctr, ctl->ws.n);
	struct worker_counters *old_base = ctl->base;

	ctl->ws = ws;
	ctl->base = base;
	publish_workers(ctl);        /* the HTTP thread now reads only the new arrays */
	free(old_base);
	wset_free(&old);
	log_info("reload: %u connection(s) handed over to %u %s worker%s", n, ws.n, ops->name,
		 ws.n == 1 ? "" : "s");
	return 0;
}

/* ---- reload ---- */

static void reload_failed(struct control *ctl, const char *why)
{
	log_error("reload: %s, keeping the running one", why);
	atomic_fetch_add(&ctl->metrics.reload_failures, 1);
	atomic_store(&ctl->metrics.last_reload_ok, 0);
	sd_notify(0, "READY=1");
	notify_status(ctl, "serving (last reload failed)");
}

/* Apply a configuration read without error. */
static void reload_apply(struct control *ctl, struct echod_config *next)
{
	struct worker_params params;
	struct policy *policy = ctl->policy;
	bool partial = false;
	unsigned changed;
	int err;

	changed = config_diff(&ctl->cfg, next);
	/* the lists compiled first: nothing has changed if that fails */
	if ((changed & CONFIG_CHANGED_POLICY) &&
	    (err = policy_build_config(&policy, next))) {
		log_errno(LOG_ERR, err, "reload: allow/deny: %u + %u prefixes", next->n_allow,
			  next->n_deny);
		reload_failed(ctl, "allow/deny could not be compiled; configuration");
		return;
	}

	/* new workers first: if they cannot start, nothing has changed */
	if (changed & (CONFIG_CHANGED_BACKEND | CONFIG_CHANGED_BUFFERS | CONFIG_CHANGED_CORES)) {
		err = respawn(ctl, next, policy);
		if (err) {
			if (policy != ctl->policy)
				policy_unref(policy);
			reload_failed(ctl, "new workers could not start; configuration");
			return;
		}
	}
	if ((changed & CONFIG_CHANGED_METRICS) &&
	    mep_reopen(&ctl->mep, ctl->sets[0].metrics_fd, &ctl->metrics, &ctl->cfg, next) < 0) {
		log_error("reload: the metrics endpoint stays as it was");
		next->metrics = ctl->cfg.metrics;
		atomic_store(&ctl->metrics.last_reload_ok, 0);
		partial = true;
	}
	if (changed & CONFIG_CHANGED_LOG_LEVEL)
		log_set_level(next->log_level);
	if ((changed & CONFIG_CHANGED_UDP) && listen_udp_options(ctl->sets, ctl->nalloc, next) < 0) {
		atomic_store(&ctl->metrics.last_reload_ok, 0);
		partial = true;
	}
	atomic_store_explicit(&ctl->shared.max_connections, next->max_connections,
			      memory_order_relaxed);
	atomic_store(&ctl->metrics.max_connections, next->max_connections);
	persource_apply_config(ctl->shared.persource, next);
	/* each worker drops its reference to the old lists once it uses the new */
	worker_params_from_config(&params, next, policy);
	wset_post_params(&ctl->ws, &params);
	if (policy != ctl->policy) {
		policy_unref(ctl->policy);
		ctl->policy = policy;
	}
	if (changed & config_restart_mask()) {
		char names[256];

		config_restart_names(&ctl->cfg, next, names, sizeof(names));
		log_warning("reload: %s changed; this takes effect at the next restart", names);
	}
	/* the listeners stay as running, so the next diff names them again */
	config_keep_restart(next, &ctl->cfg);
	if (ctl->sets[0].metrics_fd >= 0) {     /* the socket stays; TLS and auth applied */
		next->metrics.enabled = ctl->cfg.metrics.enabled;
		next->metrics.address = ctl->cfg.metrics.address;
		next->metrics.port = ctl->cfg.metrics.port;
	}
	ctl->cfg = *next;
	ctl->reloads++;
	atomic_fetch_add(&ctl->metrics.reloads, 1);
	if (!partial) {
		atomic_store(&ctl->metrics.last_reload_ok, 1);
		atomic_store(&ctl->metrics.last_reload_success, (uint64_t)time(NULL));
	}
	log_info("reload: configuration applied (backend %s, %u worker%s, buffers %u x %u, "
		 "log_level %s, max_connections %u, idle_timeout %u s, max_pending %u, "
		 "shutdown_timeout %u s, busy_poll_us %u, batch_wait_us %u, allow/deny %u/%u prefixes)",
		 ctl->ws.ops->name, ctl->ws.n, ctl->ws.n == 1 ? "" : "s", next->buffer_count,
		 next->buffer_size, config_log_level_name(next->log_level), next->max_connections,
		 next->idle_timeout, next->max_pending, next->shutdown_timeout, next->busy_poll_us,
		 next->batch_wait_us,
		 next->n_allow,
		 next->n_deny);
	sd_notify(0, "READY=1");
	notify_status(ctl, "serving");
}

static void reload(struct control *ctl)
{
	struct echod_config *next;
	struct config_errors *errs;

	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
		   (unsigned long long)monotonic_usec(), ctl->cfg.path);
	log_info("reload: reading %s", ctl->cfg.path);
	errs = calloc(1, sizeof(*errs));
	next = malloc(sizeof(*next));      /* some 560 KB: never on a stack */
	if (!errs || !next) {
		reload_failed(ctl, "calloc: out of memory; configuration");
	} else if (config_load(ctl->cfg.path, next, errs) != 0) {
		char why[CONFIG_PATH_MAX + 64];

		log_config_errors(errs);
		snprintf(why, sizeof(why), "configuration file %s has errors", ctl->cfg.path);
		reload_failed(ctl, why);
	} else {
		reload_apply(ctl, next);
	}
	free(errs);
	free(next);
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
	bool stop = false, hup = false;

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

/* Stop: drain, or hand the connections to systemd's fd store. */
static int stop(struct control *ctl)
{
	unsigned n, kept;
	struct conn_export *e;

	if (!ctl->fd_store || !handoff_available()) {
		if (ctl->fd_store)
			log_notice("--fd-store: no service manager (NOTIFY_SOCKET unset): draining");
		sd_notify(0, "STOPPING=1\nSTATUS=draining connections");
		log_info("draining %u connection(s), deadline %u s",
			 atomic_load(&ctl->shared.nconns), ctl->cfg.shutdown_timeout);
		return wset_stop(&ctl->ws);
	}
	sd_notify(0, "STOPPING=1\nSTATUS=handing connections to the fd store");
	n = wset_handover(&ctl->ws, ctl->cfg.shutdown_timeout * 1000u, &e);
	kept = handoff_push(e, n);
	free(e);
	log_info("fd store: %u of %u connection(s) kept for the next start", kept, n);
	return kept == n ? 0 : 1;
}

/* Connections a previous echod left in the fd store. */
static void resume_handed(struct control *ctl)
{
	struct listen_set *ls = &ctl->sets[0];
	struct conn_export *e;
	unsigned n;

	if (!ls->n_handed)
		return;
	n = handoff_collect(ls->handed, ls->n_handed, &e);
	free(ls->handed);
	ls->handed = NULL;
	ls->n_handed = 0;
	atomic_fetch_add(&ctl->shared.nconns, n);
	log_info("fd store: resuming %u connection(s) from the previous start", n);
	wset_import(&ctl->ws, e, n);
}

int control_run(const struct echod_config *cfg, bool fd_store)
{
	struct control *ctl;
	const struct backend_ops *ops;
	char why[256], where[1024];
	int status = 1, err;

	ctl = calloc(1, sizeof(*ctl));
	if (!ctl) {
		log_errno(LOG_ERR, ENOMEM, "calloc");
		return 1;
	}
	ctl->cfg = *cfg;
	ctl->fd_store = fd_store;
	ctl->sigfd = ctl->exit_fd = -1;
	ctl->mep.own.fd = -1;
	if (metrics_state_init(&ctl->metrics) < 0) {
		log_error("metrics: pthread_mutex_init failed");
		free(ctl);
		return 1;
	}
	atomic_store(&ctl->metrics.max_connections, cfg->max_connections);
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
	ops = backend_select(cfg->backend, cfg, why, sizeof(why));
	if (!ops) {
		log_error("backend %s: %s", config_backend_name(cfg->backend), why);
		goto out;
	}
	if (why[0])
		log_warning("backend auto: using %s (%s)", ops->name, why);
	if (setup_listeners(ctl) < 0 || setup_udp(ctl) < 0 ||
	    persource_create(&ctl->shared.persource, cfg->per_source.table_size) < 0)
		goto out;
	persource_apply_config(ctl->shared.persource, cfg);
	if (!ctl->sets[0].n) {
		log_error("no echo listener: nothing to serve");
		goto out;
	}
	err = policy_build_config(&ctl->policy, cfg);
	if (err) {
		log_errno(LOG_ERR, err, "allow/deny: %u + %u prefixes", cfg->n_allow, cfg->n_deny);
		goto out;
	}
	if (wset_start(&ctl->ws, ops, &ctl->cfg, ctl->sets, ctl->nsets, ctl->nalloc, false,
		       &ctl->shared, ctl->exit_fd, ctl->policy) < 0)
		goto out;
	publish_workers(ctl);
	if (mep_open(&ctl->mep, ctl->sets[0].metrics_fd, &ctl->metrics, &ctl->cfg) < 0) {
		wset_stop(&ctl->ws);
		goto out;
	}
	resume_handed(ctl);

	describe_listeners(ctl, where, sizeof(where));
	log_info("echod %s ready: backend %s, %u worker%s, listening on %s",
		 PACKAGE_VERSION, ctl->ws.ops->name, ctl->ws.n, ctl->ws.n == 1 ? "" : "s", where);
	sd_notify(0, "READY=1");
	notify_status(ctl, "serving");

	status = serve(ctl);
	if (stop(ctl))
		status = 1;
	log_totals(ctl);
	log_info("stopped");
out:
	mep_close(&ctl->mep);
	close_listeners(ctl);
	if (ctl->exit_fd >= 0)
		close(ctl->exit_fd);
	if (ctl->sigfd >= 0)
		close(ctl->sigfd);
	wset_free(&ctl->ws);
	policy_unref(ctl->policy);
	persource_destroy(ctl->shared.persource);
	free(ctl->base);
	metrics_state_destroy(&ctl->metrics);
	free(ctl);
	return status;
}
