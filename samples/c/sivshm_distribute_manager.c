// SPDX-License-Identifier: GPL-2.0
/*
 * The manager of sivshm-distribute in C, on libsivshm: sends every worker `rounds` batches
 * of pseudo-random data with their checksum, checks each worker's answer, then says Done.
 * Each round goes to all workers before their answers are collected. A worker whose
 * channel fails (its device removed, a hostile or stopped peer) is reported and dropped;
 * the others are served on.
 *
 *   sivshm_distribute_manager [--rounds N] [--bytes N] [--timeout S] [--pace-ms MS]
 *       [--progress N] (--workers BDF[,BDF...] | DEVICE | --fd SHM:LEN:WAKE:RING)...
 *
 * --pace-ms sends a round at most every MS milliseconds; --progress prints
 * "worker I: N rounds verified" every N rounds of a worker.
 *
 * Worker i is the i-th device (PCI address, node) or --fd. Exit status 0: every batch of
 * every worker verified, except those of workers whose device was removed (reported as
 * the Rust manager does: "worker I was removed (device gone) after N verified rounds");
 * 1: a worker failed otherwise (or none is left), 2: usage.
 */
#include <time.h>

#include "distribute.h"

static const char *who = "c-manager";

#define MAX_WORKERS 64

struct worker {
	const char *dev, *fd;
	struct sivshm_channel *ch;
	uint64_t verified, expected;
	int error; /* the code that ended its channel, 0 while it is served */
};

static struct worker w[MAX_WORKERS];
static int n;

static void add(const char *dev, const char *fd)
{
	if (n == MAX_WORKERS) {
		fprintf(stderr, "%s: at most %d workers\n", who, MAX_WORKERS);
		exit(2);
	}
	w[n].dev = dev;
	w[n++].fd = fd;
}

/* Ends worker i's channel on error `rc`; true if it did (rc < 0). */
static int failed(int i, int rc, const char *what)
{
	if (rc >= 0)
		return 0;
	fprintf(stderr, "%s: worker %d: %s: %s (%d): %s\n", who, i, what, sivshm_strerror(rc), rc,
		sivshm_channel_last_error(w[i].ch));
	w[i].error = rc;
	sivshm_channel_close(w[i].ch);
	w[i].ch = NULL;
	return 1;
}

int main(int argc, char **argv)
{
	unsigned long long rounds = 8, bytes = 1 << 20;
	long timeout_s = 300, pace_ms = 0;
	unsigned long long progress = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--bytes") && i + 1 < argc)
			bytes = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout_s = atol(argv[++i]);
		else if (!strcmp(argv[i], "--pace-ms") && i + 1 < argc)
			pace_ms = atol(argv[++i]);
		else if (!strcmp(argv[i], "--progress") && i + 1 < argc)
			progress = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--fd") && i + 1 < argc)
			add(NULL, argv[++i]);
		else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
			for (char *b = strtok(argv[++i], ","); b; b = strtok(NULL, ","))
				add(b, NULL);
		else if (argv[i][0] != '-')
			add(argv[i], NULL);
		else {
			fprintf(stderr, "usage: %s [--rounds N] [--bytes N] [--timeout S] "
				"[--pace-ms MS] [--progress N] "
				"(--workers BDF[,BDF...] | DEVICE | --fd SHM:LEN:WAKE:RING)...\n",
				argv[0]);
			return 2;
		}
	}
	if (!n || !rounds || !bytes) {
		fprintf(stderr, "%s: needs a worker, and --rounds and --bytes above zero\n", who);
		return 2;
	}
	int timeout_ms = (int)(timeout_s * 1000);

	struct sivshm_config *cfg = sivshm_config_new();
	sivshm_config_set(cfg, SIVSHM_OPT_ATTACH_TIMEOUT_MS, (uint64_t)timeout_ms);
	sivshm_config_set(cfg, SIVSHM_OPT_PEER_TIMEOUT_MS, 30000);
	for (int i = 0; i < n; i++) {
		w[i].ch = open_channel(who, w[i].dev, w[i].fd, SIVSHM_MANAGER, cfg);
		if (sivshm_channel_max_message(w[i].ch) < BATCH_HEADER + bytes) {
			fprintf(stderr, "%s: worker %d's channel takes messages of at most %zu bytes\n",
				who, i, sivshm_channel_max_message(w[i].ch));
			return 2;
		}
		printf("%s: worker %d on %s\n", who, i, w[i].dev ? w[i].dev : w[i].fd);
	}
	sivshm_config_free(cfg);

	uint8_t *data = malloc(bytes);
	if (!data)
		return 1;
	for (uint64_t r = 1; r <= rounds; r++) {
		if (pace_ms > 0 && r > 1)
			nanosleep(&(struct timespec){ .tv_sec = pace_ms / 1000,
						      .tv_nsec = pace_ms % 1000 * 1000000 }, NULL);
		for (int i = 0; i < n; i++) {
			if (!w[i].ch)
				continue;
			payload((uint64_t)i, r, data, bytes);
			w[i].expected = fnv1a(data, bytes);
			uint8_t head[BATCH_HEADER] = { 0 };
			put_u32(head, KIND_BATCH);
			put_u64(head + 8, r);
			put_u64(head + 16, w[i].expected);
			struct sivshm_reservation *res;
			if (failed(i, sivshm_channel_reserve(w[i].ch, BATCH_HEADER + bytes, timeout_ms,
							     &res), "reserve"))
				continue;
			int rc = sivshm_reservation_write(res, 0, head, sizeof(head));
			if (rc == SIVSHM_OK)
				rc = sivshm_reservation_write(res, BATCH_HEADER, data, bytes);
			if (rc != SIVSHM_OK) {
				sivshm_reservation_cancel(res);
				failed(i, rc, "write");
				continue;
			}
			if (failed(i, sivshm_reservation_commit(res), "commit") ||
			    failed(i, sivshm_channel_flush(w[i].ch), "flush"))
				continue;
		}
		for (int i = 0; i < n; i++) {
			if (!w[i].ch)
				continue;
			uint8_t ack[ACK_LEN];
			size_t len = 0;
			if (failed(i, sivshm_channel_receive(w[i].ch, ack, sizeof(ack), &len,
							     timeout_ms), "answer"))
				continue;
			uint64_t round = get_u64(ack), sum = get_u64(ack + 8);
			if (len != ACK_LEN || round != r || sum != w[i].expected) {
				fprintf(stderr, "%s: worker %d answered round %llu with %016llx (%zu "
					"bytes); expected round %llu, %016llx\n", who, i,
					(unsigned long long)round, (unsigned long long)sum, len,
					(unsigned long long)r, (unsigned long long)w[i].expected);
				failed(i, SIVSHM_ERR_CORRUPT, "answer");
				continue;
			}
			w[i].verified++;
			if (progress && w[i].verified % progress == 0) {
				printf("%s: worker %d: %llu rounds verified\n", who, i,
				       (unsigned long long)w[i].verified);
				fflush(stdout);
			}
		}
	}
	uint8_t done[DONE_LEN] = { 0 };
	put_u32(done, KIND_DONE);
	put_u64(done + 8, rounds);
	uint64_t wakeups = 0, rings = 0, verified = 0;
	int bad = 0, served = 0;
	for (int i = 0; i < n; i++) {
		if (w[i].ch && !failed(i, sivshm_channel_send(w[i].ch, done, sizeof(done), timeout_ms),
				       "done")) {
			uint64_t a = 0, b = 0;
			sivshm_channel_stat(w[i].ch, SIVSHM_STAT_WAKEUPS, &a);
			sivshm_channel_stat(w[i].ch, SIVSHM_STAT_RINGS, &b);
			wakeups += a;
			rings += b;
			served++;
		}
		verified += w[i].verified;
	}
	printf("%s: %llu of %llu batches verified, %llu bytes each, %llu wake-ups, %llu rings\n",
	       who, (unsigned long long)verified, rounds * (unsigned long long)n, bytes,
	       (unsigned long long)wakeups, (unsigned long long)rings);
	for (int i = 0; i < n; i++) {
		if (w[i].error == SIVSHM_ERR_DEVICE_GONE) {
			printf("%s: worker %d was removed (device gone) after %llu verified rounds\n",
			       who, i, (unsigned long long)w[i].verified);
		} else if (w[i].error) {
			printf("%s: worker %d failed after %llu verified rounds: %s (%d)\n", who, i,
			       (unsigned long long)w[i].verified, sivshm_strerror(w[i].error),
			       w[i].error);
			bad = 1;
		}
	}
	/* The results as data (Documentation/host-and-tests.rst, "Reading results"), with the
	 * Rust manager's keys: one line per worker, then the run's. */
	int removed = 0;
	for (int i = 0; i < n; i++) {
		const char *status = !w[i].error ? "ok" :
				     w[i].error == SIVSHM_ERR_DEVICE_GONE ? "removed" : "failed";
		removed += w[i].error == SIVSHM_ERR_DEVICE_GONE;
		printf("SIVSHM-RESULT distribute-manager-worker impl=c index=%d verified=%llu "
		       "status=%s code=%d\n", i, (unsigned long long)w[i].verified, status,
		       w[i].error);
	}
	printf("SIVSHM-RESULT distribute-manager impl=c verified=%llu batches=%llu workers=%d "
	       "batch_bytes=%llu wakeups=%llu rings=%llu removed=%d failed=%d\n",
	       (unsigned long long)verified, rounds * (unsigned long long)n, n, bytes,
	       (unsigned long long)wakeups, (unsigned long long)rings, removed, bad);
	fflush(stdout);
	/* The workers read Done even after this side leaves (committed messages are delivered
	 * before a peer's leaving is reported). */
	for (int i = 0; i < n; i++)
		sivshm_channel_close(w[i].ch);
	free(data);
	return bad || !served ? 1 : 0;
}
