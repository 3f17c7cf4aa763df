// SPDX-License-Identifier: GPL-2.0
/*
 * A C program on libsivshm whose device is removed under it (the `hotplug` guest scenario):
 * it attaches to the device at a PCI address as the manager, asks the host to remove the
 * device (a "SIVSHM-HOTPLUG del BDF" line, as selftests/sivshm_hotplug.c asks), and waits for
 * a worker in sivshm_channel_wait_for_peer. No new worker comes, so only the removal can end
 * the wait: with SIVSHM_ERR_DEVICE_GONE (the library asks the device at every look). A worker
 * of the channel's previous manager that has not noticed it left may still be there: then
 * the wait goes on in sivshm_channel_receive (this program sends it nothing; what it may
 * still send is an answer it owed the previous manager, read and let go) until the worker
 * leaves (closed or stopped: not the end of the wait) or the removal ends it. Every
 * later call (receive, reserve, send, flush, a peer check) must say the same, and nothing
 * may crash: the mapping shows the driver's stand-in page and this program installs no
 * signal handler. Then it waits for the node to go away, so that the device can be added
 * again.
 *
 *   sivshm_capi_removal [--timeout S] BDF
 *
 * Prints `SIVSHM-RESULT capi-removal impl=c wait=CODE receive=CODE reserve=CODE send=CODE
 * flush=CODE check_peer=CODE node_gone=0|1 status=ok|failed` (codes are sivshm_status
 * values). Exit status 0: every code was SIVSHM_ERR_DEVICE_GONE and the node went away;
 * 1: otherwise; 2: usage.
 */
#define _GNU_SOURCE
#include <time.h>
#include <unistd.h>

#include "distribute.h"

static const char *who = "c-removal";

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Waits up to `timeout_s` for no sivshm device to answer at `bdf`. */
static int node_gone(const char *bdf, long timeout_s)
{
	double end = now_s() + (double)timeout_s;
	do {
		struct sivshm_device *dev = NULL;
		int rc = sivshm_device_find(bdf, &dev);
		if (rc < 0)
			return 1;
		sivshm_device_close(dev);
		usleep(20000);
	} while (now_s() < end);
	return 0;
}

int main(int argc, char **argv)
{
	const char *bdf = NULL;
	long timeout_s = 120;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout_s = atol(argv[++i]);
		else if (argv[i][0] != '-' && !bdf)
			bdf = argv[i];
		else {
			fprintf(stderr, "usage: %s [--timeout S] BDF\n", argv[0]);
			return 2;
		}
	}
	if (!bdf || timeout_s <= 0) {
		fprintf(stderr, "usage: %s [--timeout S] BDF\n", argv[0]);
		return 2;
	}
	int timeout_ms = (int)(timeout_s * 1000);

	struct sivshm_config *cfg = sivshm_config_new();
	/* No peer answers here: only the removal may end the wait, not the peer's timeout. */
	sivshm_config_set(cfg, SIVSHM_OPT_PEER_TIMEOUT_MS, (uint64_t)timeout_ms * 2);
	struct sivshm_channel *ch = open_channel(who, bdf, NULL, SIVSHM_MANAGER, cfg);
	sivshm_config_free(cfg);
	printf("%s: attached to %s; asking for its removal\n", who, bdf);
	printf("SIVSHM-HOTPLUG del %s\n", bdf);
	fflush(stdout);
	uint8_t buf[64];
	size_t len = 0;
	int wait;
	for (;;) {
		wait = sivshm_channel_wait_for_peer(ch, timeout_ms);
		if (wait != SIVSHM_OK)
			break;
		/* The previous manager's worker, still there: wait until it leaves. */
		wait = sivshm_channel_receive(ch, buf, sizeof(buf), &len, timeout_ms);
		if (wait == SIVSHM_OK || wait == SIVSHM_ERR_TOO_LARGE) {
			/* An answer the previous worker owed its manager, finished late: not ours. */
			printf("%s: the previous worker's late answer of %zu bytes; waiting on\n", who,
			       len);
			struct sivshm_message *late = NULL;
			if (wait == SIVSHM_ERR_TOO_LARGE && sivshm_channel_recv(ch, 0, &late) == SIVSHM_OK)
				sivshm_message_release(late);
			continue;
		}
		if (wait != SIVSHM_ERR_PEER_CLOSED && wait != SIVSHM_ERR_PEER_GONE)
			break;
		printf("%s: the previous worker left: %s; waiting on\n", who, sivshm_strerror(wait));
	}
	printf("%s: waiting for a worker: %s (%d): %s\n", who, sivshm_strerror(wait), wait,
	       sivshm_channel_last_error(ch));
	/* Every later call on the channel says the same. */
	uint8_t hello[16] = { 0 };
	int receive = sivshm_channel_receive(ch, buf, sizeof(buf), &len, timeout_ms);
	struct sivshm_reservation *res = NULL;
	int reserve = sivshm_channel_reserve(ch, 16, 0, &res);
	if (reserve >= 0)
		sivshm_reservation_cancel(res);
	int send = sivshm_channel_send(ch, hello, sizeof(hello), 0);
	int flush = sivshm_channel_flush(ch);
	int check_peer = sivshm_channel_check_peer(ch);
	sivshm_channel_close(ch);
	int gone = node_gone(bdf, 60);

	int ok = wait == SIVSHM_ERR_DEVICE_GONE && receive == SIVSHM_ERR_DEVICE_GONE &&
		 reserve == SIVSHM_ERR_DEVICE_GONE &&
		 send == SIVSHM_ERR_DEVICE_GONE && flush == SIVSHM_ERR_DEVICE_GONE &&
		 check_peer == SIVSHM_ERR_DEVICE_GONE && gone;
	printf("SIVSHM-RESULT capi-removal impl=c wait=%d receive=%d reserve=%d send=%d "
	       "flush=%d check_peer=%d node_gone=%d status=%s\n", wait, receive, reserve, send,
	       flush, check_peer, gone, ok ? "ok" : "failed");
	fflush(stdout);
	return ok ? 0 : 1;
}
