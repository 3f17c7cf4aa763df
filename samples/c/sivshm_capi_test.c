// SPDX-License-Identifier: GPL-2.0
/*
 * A test of libsivshm's C API on the host: a manager and a worker channel in this one
 * process, over a memfd with an eventfd each (sivshm_channel_attach_fd). Built with
 * -fsanitize=address,undefined by capi/tests/c_programs.rs. Covers the calls and their
 * error codes, a hostile peer (a corrupted ring index: SIVSHM_ERR_CORRUPT, no crash) and a
 * removal as the model does it (the memory reads 0xff, the presence callback says gone,
 * the wake eventfd is signalled: SIVSHM_ERR_DEVICE_GONE).
 *
 * Prints "N passed, N failed" and exits non-zero on any failure.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include <sivshm/channel.h>

#define LEN (1 << 16)

static int passed, failed;

#define CHECK(cond) do {							\
	if (cond) {								\
		passed++;							\
	} else {								\
		failed++;							\
		fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);	\
	}									\
} while (0)

#define CHECK_RC(call, want) do {						\
	int rc_ = (call);							\
	if (rc_ == (want)) {							\
		passed++;							\
	} else {								\
		failed++;							\
		fprintf(stderr, "FAIL %s:%d: %s = %d (%s), want %d (%s)\n",	\
			__FILE__, __LINE__, #call, rc_, sivshm_strerror(rc_), want,	\
			sivshm_strerror(want));					\
	}									\
} while (0)

struct pair {
	int shm, to_manager, to_worker;
	struct sivshm_channel *m, *w;
};

static int gone_flag;

static int presence(void *user)
{
	return *(int *)user;
}

static void open_pair(struct pair *p, int with_presence)
{
	p->shm = memfd_create("capi-test", MFD_CLOEXEC);
	if (p->shm < 0 || ftruncate(p->shm, LEN)) {
		perror("memfd");
		exit(1);
	}
	p->to_manager = eventfd(0, EFD_CLOEXEC);
	p->to_worker = eventfd(0, EFD_CLOEXEC);
	struct sivshm_config *cfg = sivshm_config_new();
	CHECK(cfg != NULL);
	CHECK_RC(sivshm_config_set(cfg, SIVSHM_OPT_ATTACH_TIMEOUT_MS, 1000), SIVSHM_OK);
	CHECK_RC(sivshm_config_set(cfg, SIVSHM_OPT_PEER_TIMEOUT_MS, 5000), SIVSHM_OK);
	if (with_presence)
		CHECK_RC(sivshm_config_set_presence(cfg, presence, &gone_flag), SIVSHM_OK);
	CHECK_RC(sivshm_channel_attach_fd(p->shm, 0, LEN, p->to_manager, p->to_worker,
					  SIVSHM_MANAGER, cfg, &p->m), SIVSHM_OK);
	CHECK_RC(sivshm_channel_attach_fd(p->shm, 0, LEN, p->to_worker, p->to_manager,
					  SIVSHM_WORKER, cfg, &p->w), SIVSHM_OK);
	sivshm_config_free(cfg);
	if (!p->m || !p->w) {
		fprintf(stderr, "attach failed: %s\n", sivshm_last_error());
		exit(1);
	}
}

static void close_pair(struct pair *p)
{
	sivshm_channel_close(p->m);
	sivshm_channel_close(p->w);
	close(p->shm);
	close(p->to_manager);
	close(p->to_worker);
}

static void basics(void)
{
	CHECK(sivshm_version() == (SIVSHM_CAPI_VERSION_MAJOR << 16 |
				   SIVSHM_CAPI_VERSION_MINOR << 8 | SIVSHM_CAPI_VERSION_PATCH));
	CHECK(!strcmp(sivshm_strerror(SIVSHM_OK), "success"));
	CHECK(!strcmp(sivshm_strerror(SIVSHM_ERR_DEVICE_GONE), "the device was removed"));
	CHECK(strlen(sivshm_strerror(-1000)) > 0);
	struct sivshm_device *dev = NULL;
	CHECK_RC(sivshm_device_open(NULL, &dev), SIVSHM_ERR_INVALID);
	CHECK_RC(sivshm_device_open("/nonexistent/sivshm9", &dev), SIVSHM_ERR_OS);
	CHECK(strstr(sivshm_last_error(), "/nonexistent/sivshm9") != NULL);
	CHECK(dev == NULL);
	struct sivshm_config *cfg = sivshm_config_new();
	CHECK_RC(sivshm_config_set(cfg, 99, 1), SIVSHM_ERR_INVALID);
	CHECK_RC(sivshm_config_set(NULL, SIVSHM_OPT_SPIN_US, 1), SIVSHM_ERR_INVALID);
	sivshm_config_free(cfg);
	struct sivshm_channel *ch = NULL;
	CHECK_RC(sivshm_channel_attach_fd(-5, 0, LEN, -1, -1, SIVSHM_MANAGER, NULL, &ch),
		 SIVSHM_ERR_INVALID);
	CHECK_RC(sivshm_channel_attach_fd(0, 0, LEN, -1, -1, 7, NULL, &ch), SIVSHM_ERR_INVALID);
	int shm = memfd_create("small", MFD_CLOEXEC);
	CHECK(ftruncate(shm, 4096) == 0);
	CHECK_RC(sivshm_channel_attach_fd(shm, 0, 4096, -1, -1, SIVSHM_MANAGER, NULL, &ch),
		 SIVSHM_ERR_GEOMETRY);
	close(shm);
	CHECK_RC(sivshm_channel_send(NULL, "x", 1, 0), SIVSHM_ERR_INVALID);
	CHECK_RC(sivshm_channel_flush(NULL), SIVSHM_ERR_INVALID);
	sivshm_channel_close(NULL);
	sivshm_reservation_cancel(NULL);
	sivshm_message_leave(NULL);
}

static void messages(void)
{
	struct pair p;
	open_pair(&p, 0);
	CHECK_RC(sivshm_channel_check_peer(p.m), 1);
	CHECK_RC(sivshm_channel_wait_for_peer(p.w, 1000), SIVSHM_OK);
	CHECK(sivshm_channel_max_message(p.m) > 1000);

	/* Zero copy: reserve, write in parts, commit, flush. */
	struct sivshm_reservation *res = NULL, *res2 = NULL;
	CHECK_RC(sivshm_channel_reserve(p.m, 10, 1000, &res), SIVSHM_OK);
	CHECK(sivshm_reservation_len(res) == 10);
	CHECK_RC(sivshm_channel_reserve(p.m, 10, 1000, &res2), SIVSHM_ERR_BUSY);
	CHECK_RC(sivshm_channel_send(p.m, "x", 1, 0), SIVSHM_ERR_BUSY);
	CHECK_RC(sivshm_reservation_write(res, 0, "hello", 5), SIVSHM_OK);
	CHECK_RC(sivshm_reservation_write(res, 5, "world", 5), SIVSHM_OK);
	CHECK_RC(sivshm_reservation_write(res, 8, "toolong", 7), SIVSHM_ERR_TOO_LARGE);
	CHECK_RC(sivshm_reservation_commit(res), SIVSHM_OK);
	CHECK_RC(sivshm_channel_flush(p.m), SIVSHM_OK);
	/* A cancelled reservation sends nothing. */
	CHECK_RC(sivshm_channel_reserve(p.m, 3, 0, &res), SIVSHM_OK);
	sivshm_reservation_cancel(res);
	CHECK_RC(sivshm_channel_send(p.m, "second", 6, 1000), SIVSHM_OK);

	struct sivshm_message *msg = NULL, *msg2 = NULL;
	CHECK_RC(sivshm_channel_recv(p.w, 1000, &msg), SIVSHM_OK);
	CHECK(sivshm_message_len(msg) == 10);
	CHECK_RC(sivshm_channel_recv(p.w, 1000, &msg2), SIVSHM_ERR_BUSY);
	char buf[16] = { 0 };
	CHECK_RC(sivshm_message_read(msg, 0, buf, 10), SIVSHM_OK);
	CHECK(!memcmp(buf, "helloworld", 10));
	CHECK_RC(sivshm_message_read(msg, 5, buf, 6), SIVSHM_ERR_TOO_LARGE);
	CHECK(strlen(sivshm_channel_last_error(p.w)) > 0);
	/* Left in the ring: the next receive finds it again. */
	sivshm_message_leave(msg);
	CHECK_RC(sivshm_channel_recv(p.w, 1000, &msg), SIVSHM_OK);
	CHECK(sivshm_message_len(msg) == 10);
	CHECK_RC(sivshm_message_release(msg), SIVSHM_OK);

	size_t len = 0;
	CHECK_RC(sivshm_channel_receive(p.w, buf, 3, &len, 1000), SIVSHM_ERR_TOO_LARGE);
	CHECK(len == 6);
	CHECK_RC(sivshm_channel_receive(p.w, buf, sizeof(buf), &len, 1000), SIVSHM_OK);
	CHECK(len == 6 && !memcmp(buf, "second", 6));
	CHECK_RC(sivshm_channel_receive(p.w, buf, sizeof(buf), &len, 0), SIVSHM_ERR_AGAIN);
	CHECK_RC(sivshm_channel_recv(p.w, 50, &msg), SIVSHM_ERR_TIMED_OUT);
	CHECK_RC(sivshm_channel_reserve(p.m, 1 << 20, 0, &res), SIVSHM_ERR_TOO_LARGE);

	/* The wake fd in the caller's own poll loop. */
	int fd = sivshm_channel_wake_fd(p.w);
	CHECK(fd >= 0);
	CHECK_RC(sivshm_channel_arm(p.w), 1);
	CHECK_RC(sivshm_channel_send(p.m, "ping", 4, 1000), SIVSHM_OK);
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	CHECK(poll(&pfd, 1, 2000) == 1);
	CHECK_RC(sivshm_channel_disarm(p.w), SIVSHM_OK);
	CHECK_RC(sivshm_channel_arm(p.w), 0);
	CHECK_RC(sivshm_channel_receive(p.w, buf, sizeof(buf), &len, 0), SIVSHM_OK);
	CHECK(len == 4 && !memcmp(buf, "ping", 4));
	CHECK_RC(sivshm_channel_send(p.w, "pong", 4, 1000), SIVSHM_OK);
	CHECK_RC(sivshm_channel_receive(p.m, buf, sizeof(buf), &len, 1000), SIVSHM_OK);

	uint64_t v = 0;
	CHECK_RC(sivshm_channel_stat(p.m, SIVSHM_STAT_SENT, &v), SIVSHM_OK);
	CHECK(v == 3);
	CHECK_RC(sivshm_channel_stat(p.w, SIVSHM_STAT_RECEIVED, &v), SIVSHM_OK);
	CHECK(v == 3);
	CHECK_RC(sivshm_channel_stat(p.w, SIVSHM_STAT_RINGS + 100, &v), SIVSHM_ERR_INVALID);

	/* A batch: sent without a flush, seen at the flush; stamps read in place. */
	uint64_t stamps[2] = { 0x1122334455667788ull, 42 };
	CHECK_RC(sivshm_channel_send_batched(p.m, stamps, sizeof(stamps), 1000), SIVSHM_OK);
	CHECK_RC(sivshm_channel_send_batched(p.m, "tail", 4, 0), SIVSHM_OK);
	CHECK_RC(sivshm_channel_recv(p.w, 0, &msg), SIVSHM_ERR_AGAIN);
	CHECK_RC(sivshm_channel_flush(p.m), SIVSHM_OK);
	CHECK_RC(sivshm_channel_recv(p.w, 1000, &msg), SIVSHM_OK);
	uint64_t word = 0;
	CHECK_RC(sivshm_message_read_u64(msg, 0, &word), SIVSHM_OK);
	CHECK(word == 0x1122334455667788ull);
	CHECK_RC(sivshm_message_read_u64(msg, 8, &word), SIVSHM_OK);
	CHECK(word == 42);
	CHECK_RC(sivshm_message_read_u64(msg, 9, &word), SIVSHM_ERR_TOO_LARGE);
	CHECK_RC(sivshm_message_read_u64(msg, 0, NULL), SIVSHM_ERR_INVALID);
	CHECK_RC(sivshm_message_release(msg), SIVSHM_OK);
	CHECK_RC(sivshm_channel_receive(p.w, buf, sizeof(buf), &len, 1000), SIVSHM_OK);
	CHECK(len == 4 && !memcmp(buf, "tail", 4));
	CHECK_RC(sivshm_channel_send_batched(NULL, "x", 1, 0), SIVSHM_ERR_INVALID);

	/* The manager leaves: the worker is told. */
	sivshm_channel_close(p.m);
	p.m = NULL;
	CHECK_RC(sivshm_channel_recv(p.w, 1000, &msg), SIVSHM_ERR_PEER_CLOSED);
	close_pair(&p);
}

/* The peer writes an index no honest peer writes: an error code, no crash, and it sticks. */
static void hostile_peer(void)
{
	struct pair p;
	open_pair(&p, 0);
	CHECK_RC(sivshm_channel_send(p.m, "fine", 4, 1000), SIVSHM_OK);
	uint8_t *mem = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, p.shm, 0);
	CHECK(mem != MAP_FAILED);
	/* Ring 0's head (layout.rs: 0x100) far beyond anything written. */
	__atomic_store_n((uint64_t *)(mem + 0x100), 1ull << 40, __ATOMIC_SEQ_CST);
	struct sivshm_message *msg = NULL;
	CHECK_RC(sivshm_channel_recv(p.w, 1000, &msg), SIVSHM_ERR_CORRUPT);
	CHECK(msg == NULL);
	CHECK(strstr(sivshm_channel_last_error(p.w), "corrupt") != NULL);
	CHECK_RC(sivshm_channel_recv(p.w, 0, &msg), SIVSHM_ERR_CORRUPT);
	/* Garbage everywhere else too: still only error codes. */
	memset(mem + 0x40, 0x5a, LEN - 0x40);
	char buf[64];
	size_t len;
	int rc = sivshm_channel_receive(p.m, buf, sizeof(buf), &len, 200);
	CHECK(rc < 0);
	rc = sivshm_channel_send(p.m, buf, sizeof(buf), 200);
	CHECK(rc < 0);
	munmap(mem, LEN);
	close_pair(&p);
}

/* The memory goes away as a removed device's does (the model's removal): every byte reads
 * 0xff, the presence callback says gone, the wake eventfd is signalled once. */
static void removal(void)
{
	struct pair p;
	gone_flag = 0;
	open_pair(&p, 1);
	CHECK_RC(sivshm_channel_send(p.m, "before", 6, 1000), SIVSHM_OK);
	char buf[16];
	size_t len;
	CHECK_RC(sivshm_channel_receive(p.w, buf, sizeof(buf), &len, 1000), SIVSHM_OK);
	uint8_t *mem = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, p.shm, 0);
	CHECK(mem != MAP_FAILED);
	__atomic_store_n(&gone_flag, 1, __ATOMIC_SEQ_CST);
	memset(mem, 0xff, LEN);
	uint64_t one = 1;
	CHECK(write(p.to_worker, &one, sizeof(one)) == sizeof(one));
	struct sivshm_message *msg = NULL;
	CHECK_RC(sivshm_channel_recv(p.w, 2000, &msg), SIVSHM_ERR_DEVICE_GONE);
	CHECK_RC(sivshm_channel_send(p.w, "after", 5, 100), SIVSHM_ERR_DEVICE_GONE);
	CHECK_RC(sivshm_channel_check_peer(p.w), SIVSHM_ERR_DEVICE_GONE);
	CHECK_RC(sivshm_channel_arm(p.w), SIVSHM_ERR_DEVICE_GONE);
	/* The manager's side of the same memory: gone too, by its own presence callback. */
	CHECK_RC(sivshm_channel_receive(p.m, buf, sizeof(buf), &len, 500), SIVSHM_ERR_DEVICE_GONE);
	munmap(mem, LEN);
	close_pair(&p);
	gone_flag = 0;
}

int main(void)
{
	basics();
	messages();
	hostile_peer();
	removal();
	printf("%d passed, %d failed\n", passed, failed);
	printf("SIVSHM-RESULT capi-test passed=%d failed=%d\n", passed, failed);
	return failed != 0;
}
