// SPDX-License-Identifier: GPL-2.0
/*
 * The worker of sivshm-distribute in C, on libsivshm: receives batches until the manager's
 * Done, checks each against the manager's checksum and answers with its own (before it
 * releases the batch, as the Rust worker does).
 *
 *   sivshm_distribute_worker [--timeout S] [--progress N] [DEVICE | --fd SHM:LEN:WAKE:RING]
 *
 * DEVICE is a node or a PCI address. Exit status 0: every batch matched and the manager's
 * Done agreed with what arrived; 3: the device was removed (SIVSHM_ERR_DEVICE_GONE); 1: any
 * other failure (the error code and message printed), 2: usage.
 */
#include "distribute.h"

static const char *who = "c-worker";

int main(int argc, char **argv)
{
	const char *device = "/dev/sivshm0", *fd_spec = NULL;
	long timeout_s = 300, progress = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout_s = atol(argv[++i]);
		else if (!strcmp(argv[i], "--progress") && i + 1 < argc)
			progress = atol(argv[++i]);
		else if (!strcmp(argv[i], "--fd") && i + 1 < argc)
			fd_spec = argv[++i];
		else if (argv[i][0] != '-')
			device = argv[i];
		else {
			fprintf(stderr, "usage: %s [--timeout S] [--progress N] "
				"[DEVICE | --fd SHM:LEN:WAKE:RING]\n", argv[0]);
			return 2;
		}
	}
	int timeout_ms = (int)(timeout_s * 1000);

	struct sivshm_config *cfg = sivshm_config_new();
	sivshm_config_set(cfg, SIVSHM_OPT_ATTACH_TIMEOUT_MS, (uint64_t)timeout_ms);
	sivshm_config_set(cfg, SIVSHM_OPT_PEER_TIMEOUT_MS, 30000);
	struct sivshm_channel *ch = open_channel(who, device, fd_spec, SIVSHM_WORKER, cfg);
	sivshm_config_free(cfg);

	uint8_t *buf = NULL;
	size_t cap = 0;
	uint64_t rounds = 0, bytes = 0, first = 0, last = 0, mismatched = 0;
	for (;;) {
		struct sivshm_message *msg;
		die_on(sivshm_channel_recv(ch, timeout_ms, &msg), who, "receive", ch);
		size_t len = sivshm_message_len(msg);
		uint8_t head[BATCH_HEADER] = { 0 };
		size_t n = len < BATCH_HEADER ? len : BATCH_HEADER;
		die_on(sivshm_message_read(msg, 0, head, n), who, "read", ch);
		uint32_t kind = get_u32(head);
		if (kind == KIND_BATCH && len >= BATCH_HEADER) {
			uint64_t round = get_u64(head + 8), sum = get_u64(head + 16);
			size_t data = len - BATCH_HEADER;
			if (data > cap) {
				free(buf);
				cap = data;
				buf = malloc(cap);
				if (!buf) {
					fprintf(stderr, "%s: out of memory\n", who);
					return 1;
				}
			}
			die_on(sivshm_message_read(msg, BATCH_HEADER, buf, data), who, "read", ch);
			uint64_t mine = fnv1a(buf, data);
			if (mine != sum) {
				mismatched++;
				printf("%s: round %llu: checksum %016llx, manager says %016llx\n", who,
				       (unsigned long long)round, (unsigned long long)mine,
				       (unsigned long long)sum);
			}
			if (!first) {
				if (round != 1)
					printf("%s: took over the channel at round %llu\n", who,
					       (unsigned long long)round);
				first = round;
			} else if (round != last + 1) {
				fprintf(stderr, "%s: round %llu arrived after round %llu\n", who,
					(unsigned long long)round, (unsigned long long)last);
				return 1;
			}
			uint8_t ack[ACK_LEN];
			put_u64(ack, round);
			put_u64(ack + 8, mine);
			die_on(sivshm_channel_send(ch, ack, sizeof(ack), timeout_ms), who, "answer", ch);
			die_on(sivshm_message_release(msg), who, "release", ch);
			last = round;
			rounds++;
			bytes += data;
			if (progress > 0 && rounds % (uint64_t)progress == 0)
				printf("%s: round %llu verified and answered\n", who,
				       (unsigned long long)round);
		} else if (kind == KIND_DONE && len == DONE_LEN) {
			uint64_t sent = get_u64(head + 8);
			die_on(sivshm_message_release(msg), who, "release", ch);
			if (first && sent != last) {
				fprintf(stderr, "%s: the manager says it sent %llu rounds, the last "
					"that arrived is %llu\n", who, (unsigned long long)sent,
					(unsigned long long)last);
				return 1;
			}
			break;
		} else {
			fprintf(stderr, "%s: message of kind %u and %zu bytes is not a batch or done\n",
				who, kind, len);
			return 1;
		}
	}
	uint64_t wakeups = 0, rings = 0;
	sivshm_channel_stat(ch, SIVSHM_STAT_WAKEUPS, &wakeups);
	sivshm_channel_stat(ch, SIVSHM_STAT_RINGS, &rings);
	printf("%s: received %llu rounds from round %llu, %llu bytes; woken %llu times by the "
	       "doorbell, rang %llu times\n", who, (unsigned long long)rounds,
	       (unsigned long long)first, (unsigned long long)bytes,
	       (unsigned long long)wakeups, (unsigned long long)rings);
	/* The result as data (Documentation/host-and-tests.rst, "Reading results"), with the
	 * Rust worker's keys. */
	printf("SIVSHM-RESULT distribute-worker impl=c rounds=%llu first_round=%llu bytes=%llu "
	       "woken=%llu rang=%llu took_over=%d mismatched=%llu\n", (unsigned long long)rounds,
	       (unsigned long long)first, (unsigned long long)bytes, (unsigned long long)wakeups,
	       (unsigned long long)rings, first > 1, (unsigned long long)mismatched);
	fflush(stdout);
	sivshm_channel_close(ch);
	free(buf);
	if (mismatched) {
		fprintf(stderr, "%s: %llu of %llu batches did not match their checksum\n", who,
			(unsigned long long)mismatched, (unsigned long long)rounds);
		return 1;
	}
	return 0;
}
