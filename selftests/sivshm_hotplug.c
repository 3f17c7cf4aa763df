// SPDX-License-Identifier: GPL-2.0
/*
 * Hot-plug and hot-unplug of a worker channel in a running manager, driven by
 * the host over QMP. This program asks the host for each step by printing a
 * line on the console,
 *
 *   SIVSHM-HOTPLUG add BDF    (the host adds the device: chardev-add, device_add)
 *   SIVSHM-HOTPLUG del BDF    (the host removes it: device_del)
 *
 * and then watches the device come or go from inside the guest, the way a
 * manager program would: nothing tells it but the device nodes.
 *
 * Environment:
 *   SIVSHM_HOTPLUG_BDF   the PCI address the host plugs the device at
 *   SIVSHM_HOTPLUG_PEER  the peer id of the worker at the other end
 *   SIVSHM_CHURN         add/remove cycles of the churn test
 *
 * Run the tests one at a time (-t NAME), in the order the host expects:
 * appears, then unplug_with_live_users, then churn.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#include "kselftest_harness.h"
#include "sivshm_lib.h"

/* Seconds the host and the guest's ACPI hot-plug get for one step. */
#define STEP_TIMEOUT_S 60
/* The words the test stamps into the segment; the host's segment outlives every unplug. */
#define STAMP_MAGIC 0x5356534d484f5450ull /* "SVSMHOTP" */

static const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);

	return v && *v ? v : dflt;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void request(const char *what, const char *bdf)
{
	printf("SIVSHM-HOTPLUG %s %s\n", what, bdf);
	fflush(stdout);
}

/* Waits until a node for @bdf exists (@present) or none does; returns its fd, or 0 once gone. */
static int wait_for(const char *bdf, int present, struct sivshm_info *info)
{
	double end = now_s() + STEP_TIMEOUT_S;
	int fd;

	do {
		fd = sivshm_open_bdf(bdf, info);
		if (present && fd >= 0)
			return fd;
		if (fd >= 0)
			close(fd);
		else if (!present)
			return 0;
		usleep(20000);
	} while (now_s() < end);
	return -1;
}

/* The driver's stand-in page starts filled with this (uapi/linux/sivshm.h, mmap()). */
#define STAND_IN 0xffffffffffffffffULL

struct reader {
	int efd;
	pid_t tid;
	ssize_t ret;
	uint64_t value;
};

/* A blocking read() on a bound eventfd: what a manager's waiting thread does. */
static void *read_eventfd(void *arg)
{
	struct reader *r = arg;

	__atomic_store_n(&r->tid, gettid(), __ATOMIC_RELEASE);
	r->ret = read(r->efd, &r->value, sizeof(r->value));
	return NULL;
}

FIXTURE(hotplug) {
	int unused;
};

FIXTURE_SETUP(hotplug)
{
}

FIXTURE_TEARDOWN(hotplug)
{
}

/*
 * The host plugs the worker's channel into the running manager; the device
 * shows up as a node with the address, peer and vector the host gave it.
 */
TEST_F_TIMEOUT(hotplug, appears, 90)
{
	const char *bdf = env_or("SIVSHM_HOTPLUG_BDF", "");
	struct sivshm_info info;
	char name[24], pat[32] = "";
	double t0;
	int fd;

	ASSERT_NE(0, *bdf) TH_LOG("SIVSHM_HOTPLUG_BDF is not set");
	ASSERT_GT(0, sivshm_open_bdf(bdf, &info)) TH_LOG("%s is there before it was plugged", bdf);
	t0 = now_s();
	request("add", bdf);
	fd = wait_for(bdf, 1, &info);
	ASSERT_GE(fd, 0) TH_LOG("%s did not appear within %d s", bdf, STEP_TIMEOUT_S);
	TH_LOG("%s appeared as /dev/sivshm%u after %.2f s", bdf, info.index, now_s() - t0);
	sivshm_bdf(&info, name, sizeof(name));
	EXPECT_STREQ(bdf, name);
	EXPECT_EQ(0, info.peer_id);
	EXPECT_EQ(1, info.nr_vectors);
	EXPECT_TRUE(info.flags & SIVSHM_INFO_F_DOORBELL);
	/*
	 * Hot-plugged behind a bridge, its BAR is assigned by this kernel from
	 * the bridge's window: the host must have given that window a
	 * write-back range too. The driver's answer and the PAT's must agree.
	 */
	EXPECT_EQ(0, sivshm_pat_type(bdf, pat, sizeof(pat)));
	EXPECT_STREQ("write-back", sivshm_mem_type_name(info.mem_type));
	EXPECT_STREQ(sivshm_mem_type_name(info.mem_type), pat);
	close(fd);
}

/*
 * The host removes the device while this process has its memory mapped (in
 * itself and in a child), an eventfd bound, a thread blocked in read() and
 * the node in an epoll set: the reader wakes, the node polls EPOLLHUP, every
 * call fails with ENODEV, the mapping shows the driver's stand-in (no
 * signal: this program handles none), and the node goes away. What was
 * written before stays in the host's segment (the churn test reads it back).
 */
TEST_F_TIMEOUT(hotplug, unplug_with_live_users, 120)
{
	const char *bdf = env_or("SIVSHM_HOTPLUG_BDF", "");
	struct reader r = { 0 };
	struct sivshm_info info, after;
	struct epoll_event ev = { .events = EPOLLIN };
	volatile uint64_t *p;
	pthread_t t;
	pid_t child;
	int fd, status, pipefd[2], ep;
	char c;

	fd = sivshm_open_bdf(bdf, &info);
	ASSERT_GE(fd, 0) TH_LOG("no device at %s", bdf);
	ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_GE(ep, 0);
	ASSERT_EQ(0, epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
	EXPECT_EQ(0, epoll_wait(ep, &ev, 1, 0)) TH_LOG("the node polled an event while present");
	p = mmap(NULL, info.shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	p[0] = STAMP_MAGIC;
	p[1] = 0;
	r.efd = eventfd(0, EFD_CLOEXEC);
	ASSERT_GE(r.efd, 0);
	ASSERT_EQ(0, sivshm_bind(fd, r.efd, 0));

	/* A child that inherited the mapping touches it once it is told to. */
	ASSERT_EQ(0, pipe(pipefd));
	child = fork();
	ASSERT_GE(child, 0);
	if (!child) {
		close(pipefd[1]);
		if (read(pipefd[0], &c, 1) != 1)
			_exit(3);
		/* The stand-in, not the device's STAMP_MAGIC. */
		_exit(p[0] == STAND_IN ? 0 : 4);
	}
	close(pipefd[0]);

	ASSERT_EQ(0, pthread_create(&t, NULL, read_eventfd, &r));
	while (!__atomic_load_n(&r.tid, __ATOMIC_ACQUIRE))
		usleep(1000);
	ASSERT_EQ(0, sivshm_wait_until_sleeping(r.tid)) TH_LOG("the reader never blocked");

	request("del", bdf);
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(sizeof(uint64_t), r.ret) TH_LOG("read() returned %zd", r.ret);
	EXPECT_EQ(0, wait_for(bdf, 0, &after)) TH_LOG("the node of %s stayed", bdf);

	EXPECT_EQ(-ENODEV, sivshm_get_info(fd, &after));
	EXPECT_EQ(-ENODEV, sivshm_ring(fd, 1, 0));
	EXPECT_EQ(-ENODEV, sivshm_bind(fd, -1, 0));
	EXPECT_EQ(MAP_FAILED, mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0));
	EXPECT_EQ(ENODEV, errno);
	EXPECT_EQ(1, epoll_wait(ep, &ev, 1, 0));
	EXPECT_EQ(EPOLLHUP | EPOLLERR, ev.events & (EPOLLHUP | EPOLLERR | EPOLLIN));
	EXPECT_EQ(STAND_IN, p[0]);
	EXPECT_EQ(STAND_IN, p[info.shm_size / 8 - 1]);
	p[1] = 7; /* lands in the stand-in, never in the segment */

	ASSERT_EQ(1, write(pipefd[1], "x", 1));
	ASSERT_EQ(child, waitpid(child, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
		TH_LOG("child status %#x: it saw the device after removal, or died", status);
	close(ep);

	munmap((void *)p, info.shm_size);
	close(pipefd[1]);
	close(r.efd);
	close(fd);
}

/*
 * Add and remove the channel SIVSHM_CHURN times. Each cycle finds the stamp
 * the previous one left in the segment (the same memory behind every new
 * device), writes its own, binds an eventfd with a reader blocked on it, and
 * removes the device under it.
 */
TEST_F_TIMEOUT(hotplug, churn, 3600)
{
	const char *bdf = env_or("SIVSHM_HOTPLUG_BDF", "");
	long cycles = strtol(env_or("SIVSHM_CHURN", "10"), NULL, 10);
	struct sivshm_info info, after;
	double t0 = now_s(), add_s = 0, del_s = 0, t;
	long i;

	ASSERT_GT(cycles, 0);
	for (i = 1; i <= cycles; i++) {
		struct reader r = { 0 };
		volatile uint64_t *p;
		pthread_t th;
		int fd;

		t = now_s();
		request("add", bdf);
		fd = wait_for(bdf, 1, &info);
		ASSERT_GE(fd, 0) TH_LOG("cycle %ld: %s did not appear", i, bdf);
		add_s += now_s() - t;
		ASSERT_EQ(0, info.peer_id);
		p = mmap(NULL, info.shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		ASSERT_NE(MAP_FAILED, p);
		/* What the previous cycle (or the unplug test, cycle 0) wrote. */
		ASSERT_EQ(STAMP_MAGIC, p[0]) TH_LOG("cycle %ld: not the same segment", i);
		ASSERT_EQ((uint64_t)(i - 1), p[1]) TH_LOG("cycle %ld: stamp %llu", i,
							   (unsigned long long)p[1]);
		p[1] = i;
		r.efd = eventfd(0, EFD_CLOEXEC);
		ASSERT_GE(r.efd, 0);
		ASSERT_EQ(0, sivshm_bind(fd, r.efd, 0));
		ASSERT_EQ(0, pthread_create(&th, NULL, read_eventfd, &r));
		while (!__atomic_load_n(&r.tid, __ATOMIC_ACQUIRE))
			usleep(1000);
		ASSERT_EQ(0, sivshm_wait_until_sleeping(r.tid));

		t = now_s();
		request("del", bdf);
		ASSERT_EQ(0, pthread_join(th, NULL));
		ASSERT_EQ(sizeof(uint64_t), r.ret) TH_LOG("cycle %ld: reader not woken", i);
		ASSERT_EQ(0, wait_for(bdf, 0, &after)) TH_LOG("cycle %ld: node stayed", i);
		del_s += now_s() - t;
		ASSERT_EQ(-ENODEV, sivshm_get_info(fd, &after));
		ASSERT_EQ(STAND_IN, p[0]);
		munmap((void *)p, info.shm_size);
		close(r.efd);
		close(fd);
	}
	TH_LOG("%ld add/remove cycles in %.1f s: add to node %.0f ms, remove to node gone %.0f ms "
	       "on average", cycles, now_s() - t0, add_s * 1000 / cycles, del_s * 1000 / cycles);
	printf("SIVSHM-RESULT hotplug-churn cycles=%ld seconds=%.1f add_ms=%.0f del_ms=%.0f\n", cycles,
	       now_s() - t0, add_s * 1000 / cycles, del_s * 1000 / cycles);
}

TEST_HARNESS_MAIN
