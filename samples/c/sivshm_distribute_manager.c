// SPDX-License-Identifier: GPL-2.0
/*
 * The manager of sivshm-distribute in C, on libsivshm: sends every worker `rounds` batches
 * of pseudo-random data with their checksum, checks each worker's answer, then says Done.
 * Each round goes to all workers before their answers are collected.
 *
 *   sivshm_distribute_manager [--rounds N] [--bytes N] [--timeout S]
 *                             (DEVICE | --fd SHM:LEN:WAKE:RING)...
 *
 * Worker i is the i-th DEVICE or --fd. Exit status 0: every batch verified.
 */
#include "distribute.h"

static const char *who = "c-manager";

#define MAX_WORKERS 64

int main(int argc, char **argv)
{
	const char *dev[MAX_WORKERS], *fds[MAX_WORKERS];
	int n = 0;
	unsigned long long rounds = 8, bytes = 1 << 20;
	long timeout_s = 300;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--bytes") && i + 1 < argc)
			bytes = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout_s = atol(argv[++i]);
		else if (!strcmp(argv[i], "--fd") && i + 1 < argc && n < MAX_WORKERS) {
			dev[n] = NULL;
			fds[n++] = argv[++i];
		} else if (argv[i][0] != '-' && n < MAX_WORKERS) {
			dev[n] = argv[i];
			fds[n++] = NULL;
		} else {
			fprintf(stderr, "usage: %s [--rounds N] [--bytes N] [--timeout S] "
				"(DEVICE | --fd SHM:LEN:WAKE:RING)...\n", argv[0]);
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
	struct sivshm_channel *ch[MAX_WORKERS];
	for (int i = 0; i < n; i++) {
		ch[i] = open_channel(who, dev[i], fds[i], SIVSHM_MANAGER, cfg);
		if (sivshm_channel_max_message(ch[i]) < BATCH_HEADER + bytes) {
			fprintf(stderr, "%s: worker %d's channel takes messages of at most %zu bytes\n",
				who, i, sivshm_channel_max_message(ch[i]));
			return 2;
		}
		printf("%s: worker %d on %s\n", who, i, dev[i] ? dev[i] : fds[i]);
	}
	sivshm_config_free(cfg);

	uint8_t *data = malloc(bytes);
	uint64_t *expected = calloc((size_t)n, sizeof(*expected));
	if (!data || !expected)
		return 1;
	uint64_t verified = 0;
	for (uint64_t r = 1; r <= rounds; r++) {
		for (int i = 0; i < n; i++) {
			payload((uint64_t)i, r, data, bytes);
			expected[i] = fnv1a(data, bytes);
			uint8_t head[BATCH_HEADER] = { 0 };
			put_u32(head, KIND_BATCH);
			put_u64(head + 8, r);
			put_u64(head + 16, expected[i]);
			struct sivshm_reservation *res;
			die_on(sivshm_channel_reserve(ch[i], BATCH_HEADER + bytes, timeout_ms, &res),
			       who, "reserve", ch[i]);
			die_on(sivshm_reservation_write(res, 0, head, sizeof(head)), who, "write", ch[i]);
			die_on(sivshm_reservation_write(res, BATCH_HEADER, data, bytes), who, "write",
			       ch[i]);
			die_on(sivshm_reservation_commit(res), who, "commit", ch[i]);
			die_on(sivshm_channel_flush(ch[i]), who, "flush", ch[i]);
		}
		for (int i = 0; i < n; i++) {
			uint8_t ack[ACK_LEN];
			size_t len = 0;
			die_on(sivshm_channel_receive(ch[i], ack, sizeof(ack), &len, timeout_ms), who,
			       "answer", ch[i]);
			uint64_t round = get_u64(ack), sum = get_u64(ack + 8);
			if (len != ACK_LEN || round != r || sum != expected[i]) {
				fprintf(stderr, "%s: worker %d answered round %llu with %016llx (%zu "
					"bytes); expected round %llu, %016llx\n", who, i,
					(unsigned long long)round, (unsigned long long)sum, len,
					(unsigned long long)r, (unsigned long long)expected[i]);
				return 1;
			}
			verified++;
		}
	}
	uint8_t done[DONE_LEN] = { 0 };
	put_u32(done, KIND_DONE);
	put_u64(done + 8, rounds);
	uint64_t wakeups = 0, rings = 0;
	for (int i = 0; i < n; i++) {
		die_on(sivshm_channel_send(ch[i], done, sizeof(done), timeout_ms), who, "done", ch[i]);
		uint64_t w = 0, g = 0;
		sivshm_channel_stat(ch[i], SIVSHM_STAT_WAKEUPS, &w);
		sivshm_channel_stat(ch[i], SIVSHM_STAT_RINGS, &g);
		wakeups += w;
		rings += g;
	}
	printf("%s: %llu of %llu batches verified, %llu bytes each, %llu wake-ups, %llu rings\n",
	       who, (unsigned long long)verified, rounds * (unsigned long long)n, bytes,
	       (unsigned long long)wakeups, (unsigned long long)rings);
	/* The workers read Done even after this side leaves (committed messages are delivered
	 * before a peer's leaving is reported). */
	for (int i = 0; i < n; i++)
		sivshm_channel_close(ch[i]);
	free(data);
	free(expected);
	return verified == rounds * (unsigned long long)n ? 0 : 1;
}
