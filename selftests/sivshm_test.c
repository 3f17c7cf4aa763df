// SPDX-License-Identifier: GPL-2.0
/*
 * Single-VM tests of the sivshm driver. The host says what it attached,
 * in the environment, one device per entry:
 *   SIVSHM_EXPECT="DDDD:BB:SS.F,<size>,<peer id or none>,<vectors>;..."
 * The first entry is the device the mmap and unbind tests use; the first
 * one with a peer id is the doorbell device of the interrupt tests.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "kselftest_harness.h"
#include "sivshm_lib.h"

#define SIVSHM_DRIVER_DIR "/sys/bus/pci/drivers/sivshm"
#define SIVSHM_MODULE_PATH "/lib/modules/sivshm.ko"

struct expect {
	char bdf[16];
	uint64_t size;
	uint32_t peer;
	uint32_t vectors;
};

static int parse_expect(struct expect *e, int max)
{
	const char *s = getenv("SIVSHM_EXPECT");
	char peer[16];
	int n = 0, used;

	while (s && *s && n < max) {
		if (sscanf(s, "%15[^,],%lu,%15[^,],%u%n", e[n].bdf, &e[n].size, peer,
			   &e[n].vectors, &used) != 4)
			return -1;
		e[n].peer = strcmp(peer, "none") ? strtoul(peer, NULL, 0) : SIVSHM_PEER_ID_NONE;
		n++;
		s += used;
		if (*s == ';')
			s++;
	}
	return n;
}

static int write_sysfs(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY), ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, val, strlen(val)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* Waits up to ~5 s for the device node of @bdf to (re)appear. */
static int wait_for_bdf(const char *bdf, struct sivshm_info *info)
{
	int i, fd;

	for (i = 0; i < 500; i++) {
		fd = sivshm_open_bdf(bdf, info);
		if (fd >= 0)
			return fd;
		usleep(10000);
	}
	return -1;
}

/* Waits up to 5 s until thread @tid of this process sleeps (state S); returns 0 or -1. */
static int wait_until_sleeping(pid_t tid)
{
	char path[64], buf[256], *p;
	int i, fd;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	for (i = 0; i < 500; i++) {
		fd = open(path, O_RDONLY);
		if (fd < 0)
			return -1;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			buf[n] = 0;
			p = strrchr(buf, ')');
			if (p && p[1] == ' ' && p[2] == 'S')
				return 0;
		}
		usleep(10000);
	}
	return -1;
}

static sigjmp_buf fault_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(fault_jmp, sig);
}

/* Reads one byte at @p; returns the signal it raised, or 0. */
static int probe_read(volatile uint8_t *p)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old_bus, old_segv;
	int sig;

	sigaction(SIGBUS, &sa, &old_bus);
	sigaction(SIGSEGV, &sa, &old_segv);
	sig = sigsetjmp(fault_jmp, 1);
	if (!sig)
		(void)*p;
	sigaction(SIGBUS, &old_bus, NULL);
	sigaction(SIGSEGV, &old_segv, NULL);
	return sig;
}

FIXTURE(dev) {
	struct expect e[8];
	int n;
	int fd;
	struct sivshm_info info;
	long page;
};

FIXTURE_SETUP(dev)
{
	self->page = sysconf(_SC_PAGESIZE);
	self->n = parse_expect(self->e, 8);
	ASSERT_GT(self->n, 0) TH_LOG("SIVSHM_EXPECT is missing or malformed");
	self->fd = sivshm_open_bdf(self->e[0].bdf, &self->info);
	ASSERT_GE(self->fd, 0) TH_LOG("no /dev/sivshmN for %s", self->e[0].bdf);
}

FIXTURE_TEARDOWN(dev)
{
	if (self->fd >= 0)
		close(self->fd);
}

TEST_F(dev, node_is_root_only_char_device)
{
	char path[32];
	struct stat st;

	snprintf(path, sizeof(path), "/dev/sivshm%u", self->info.index);
	ASSERT_EQ(0, stat(path, &st));
	EXPECT_TRUE(S_ISCHR(st.st_mode));
	EXPECT_EQ(0600, st.st_mode & 0777);
	EXPECT_EQ(0, st.st_uid);
}

TEST_F(dev, info_matches_every_attached_device)
{
	struct sivshm_info info;
	char path[64];
	int i, fd;

	for (i = 0; i < self->n; i++) {
		fd = sivshm_open_bdf(self->e[i].bdf, &info);
		ASSERT_GE(fd, 0) TH_LOG("device %s not found", self->e[i].bdf);
		EXPECT_EQ(sizeof(info), info.argsz);
		EXPECT_EQ(self->e[i].size, info.shm_size);
		EXPECT_EQ(self->e[i].peer, info.peer_id);
		EXPECT_EQ(self->e[i].peer != SIVSHM_PEER_ID_NONE,
			  !!(info.flags & SIVSHM_INFO_F_DOORBELL));
		EXPECT_EQ(self->e[i].vectors, info.nr_vectors);
		EXPECT_EQ(0, info.__pad0);
		EXPECT_EQ(0, info.__pad1);
		/* The PCI address names a device bound to this driver. */
		snprintf(path, sizeof(path), SIVSHM_DRIVER_DIR "/%s", self->e[i].bdf);
		EXPECT_EQ(0, access(path, F_OK));
		close(fd);
	}
}

TEST_F(dev, info_short_argsz_is_einval)
{
	struct sivshm_info info = { .argsz = SIVSHM_INFO_ARGSZ_V1 - 1 };

	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_GET_INFO, &info));
	EXPECT_EQ(EINVAL, errno);
	info.argsz = 0;
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_GET_INFO, &info));
	EXPECT_EQ(EINVAL, errno);
}

TEST_F(dev, info_v1_caller_gets_only_what_it_knows)
{
	uint8_t buf[sizeof(struct sivshm_info) + 16];
	struct sivshm_info *info = (void *)buf;
	size_t i;

	memset(buf, 0xa5, sizeof(buf));
	info->argsz = SIVSHM_INFO_ARGSZ_V1;
	ASSERT_EQ(0, ioctl(self->fd, SIVSHM_IOCTL_GET_INFO, info));
	EXPECT_EQ(sizeof(struct sivshm_info), info->argsz);
	EXPECT_EQ(self->e[0].size, info->shm_size);
	for (i = SIVSHM_INFO_ARGSZ_V1; i < sizeof(buf); i++)
		ASSERT_EQ(0xa5, buf[i]) TH_LOG("byte %zu past argsz was written", i);
}

TEST_F(dev, info_large_argsz_is_accepted)
{
	uint8_t buf[256];
	struct sivshm_info *info = (void *)buf;

	memset(buf, 0xa5, sizeof(buf));
	info->argsz = sizeof(buf);
	ASSERT_EQ(0, ioctl(self->fd, SIVSHM_IOCTL_GET_INFO, info));
	EXPECT_EQ(sizeof(struct sivshm_info), info->argsz);
	EXPECT_EQ(0xa5, buf[sizeof(struct sivshm_info)]);
}

TEST_F(dev, info_bad_pointer_is_efault)
{
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_GET_INFO, NULL));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_GET_INFO, (void *)16));
	EXPECT_EQ(EFAULT, errno);
}

TEST_F(dev, info_readonly_buffer_is_efault)
{
	struct sivshm_info *info = mmap(NULL, self->page, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(MAP_FAILED, info);
	info->argsz = sizeof(*info);
	ASSERT_EQ(0, mprotect(info, self->page, PROT_READ));
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_GET_INFO, info));
	EXPECT_EQ(EFAULT, errno);
	munmap(info, self->page);
}

TEST_F(dev, unknown_ioctl_is_enotty)
{
	int arg = 0;

	EXPECT_EQ(-1, ioctl(self->fd, _IO(SIVSHM_IOCTL_TYPE, 0x7f), &arg));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOR('x', 0x00, int), &arg));
	EXPECT_EQ(ENOTTY, errno);
	/* GET_INFO's old number, without direction and size, is another ioctl. */
	EXPECT_EQ(-1, ioctl(self->fd, _IO(SIVSHM_IOCTL_TYPE, 0x00), &arg));
	EXPECT_EQ(ENOTTY, errno);
}

TEST_F(dev, mmap_write_read_back)
{
	size_t size = self->info.shm_size, i;
	uint64_t seed = 0x5157534d, st;
	uint64_t *a, *b;

	a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, a);
	b = mmap(NULL, size, PROT_READ, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, b);
	st = seed;
	for (i = 0; i < size / 8; i++)
		a[i] = sivshm_prng(&st);
	st = seed;
	for (i = 0; i < size / 8; i++)
		ASSERT_EQ(sivshm_prng(&st), b[i]) TH_LOG("word %zu differs", i);
	munmap(a, size);
	munmap(b, size);
}

TEST_F(dev, mmap_offset_aliases_the_same_memory)
{
	size_t size = self->info.shm_size;
	uint8_t *all, *part;

	ASSERT_GE(size, 2 * self->page);
	all = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, all);
	part = mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, size - self->page);
	ASSERT_NE(MAP_FAILED, part);
	part[7] = 0x3c;
	EXPECT_EQ(0x3c, all[size - self->page + 7]);
	all[size - 1] = 0xc3;
	EXPECT_EQ(0xc3, part[self->page - 1]);
	munmap(all, size);
	munmap(part, self->page);
}

TEST_F(dev, mmap_beyond_bar_is_einval)
{
	size_t size = self->info.shm_size;
	void *p;

	p = mmap(NULL, size + self->page, PROT_READ, MAP_SHARED, self->fd, 0);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
	p = mmap(NULL, self->page, PROT_READ, MAP_SHARED, self->fd, size);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
	p = mmap(NULL, 2 * self->page, PROT_READ, MAP_SHARED, self->fd, size - self->page);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
	/*
	 * Huge offsets: for a character device the mm core accepts any page
	 * offset whose end does not wrap (file_mmap_size_max() is ULONG_MAX),
	 * and on 64-bit no off_t plus length can wrap it, so only the driver's
	 * bounds check refuses these; a check that added without care for
	 * overflow would not.
	 */
	p = mmap(NULL, 2 * self->page, PROT_READ, MAP_SHARED, self->fd, (off_t)1 << 62);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
	p = mmap(NULL, 2 * self->page, PROT_READ, MAP_SHARED, self->fd,
		 (off_t)(((~0ULL >> 1) / self->page) * self->page));
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
}

TEST_F(dev, mmap_private_is_einval)
{
	void *p = mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_PRIVATE, self->fd, 0);

	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
}

TEST_F(dev, read_only_file_maps_shared_read_only)
{
	char path[32];
	volatile uint8_t *p;
	int ro;

	snprintf(path, sizeof(path), "/dev/sivshm%u", self->info.index);
	ro = open(path, O_RDONLY);
	ASSERT_GE(ro, 0);
	p = mmap(NULL, self->page, PROT_READ, MAP_SHARED, ro, 0);
	ASSERT_NE(MAP_FAILED, (void *)p) TH_LOG("mmap: %s", strerror(errno));
	(void)p[0];
	munmap((void *)p, self->page);
	EXPECT_EQ(MAP_FAILED, mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0));
	EXPECT_EQ(EACCES, errno);
	close(ro);
}

TEST_F(dev, read_only_file_may_query_but_not_act)
{
	struct sivshm_info info;
	char path[32];
	int ro, efd = eventfd(0, EFD_CLOEXEC);

	snprintf(path, sizeof(path), "/dev/sivshm%u", self->info.index);
	ro = open(path, O_RDONLY);
	ASSERT_GE(ro, 0);
	EXPECT_EQ(0, sivshm_get_info(ro, &info));
	EXPECT_EQ(self->info.shm_size, info.shm_size);
	/* Ringing and binding act on the device: a read-only file gets EBADF. */
	EXPECT_EQ(-EBADF, sivshm_ring(ro, 0, 0));
	EXPECT_EQ(-EBADF, sivshm_bind(ro, efd, 0));
	close(ro);
	close(efd);
}

TEST_F(dev, the_node_has_no_read_and_no_poll)
{
	struct epoll_event ev = { .events = EPOLLIN };
	uint64_t buf[SIVSHM_MAX_VECTORS];
	int ep = epoll_create1(EPOLL_CLOEXEC);

	ASSERT_GE(ep, 0);
	/* No read(): the VFS answers EINVAL at once, nothing blocks. */
	EXPECT_EQ(-1, read(self->fd, buf, sizeof(buf)));
	EXPECT_EQ(EINVAL, errno);
	/* No poll(): epoll refuses the node; the eventfds are the way to wait. */
	EXPECT_EQ(-1, epoll_ctl(ep, EPOLL_CTL_ADD, self->fd, &ev));
	EXPECT_EQ(EPERM, errno);
	close(ep);
}

TEST_F(dev, get_user_pages_on_the_mapping_is_refused)
{
	volatile uint8_t *p = mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_SHARED,
				   self->fd, 0);
	struct iovec local;
	uint8_t buf[16];
	int mem, pipefd[2];

	ASSERT_NE(MAP_FAILED, (void *)p);
	p[0] = 0x11;
	/* /proc/self/mem reads through get_user_pages (then ->access, which we lack). */
	mem = open("/proc/self/mem", O_RDONLY);
	ASSERT_GE(mem, 0);
	EXPECT_EQ(-1, pread(mem, buf, sizeof(buf), (off_t)(uintptr_t)p));
	EXPECT_EQ(EIO, errno);
	close(mem);
	/* vmsplice pins the pages it is given, as O_DIRECT I/O from the buffer would. */
	ASSERT_EQ(0, pipe(pipefd));
	local.iov_base = (void *)p;
	local.iov_len = self->page;
	EXPECT_EQ(-1, vmsplice(pipefd[1], &local, 1, 0));
	EXPECT_EQ(EFAULT, errno);
	close(pipefd[0]);
	close(pipefd[1]);
	/* The mapping itself works: the refusals above are not a broken mapping. */
	EXPECT_EQ(0x11, p[0]);
	munmap((void *)p, self->page);
}

TEST_F(dev, mremap_cannot_grow_a_mapping)
{
	void *p = mmap(NULL, self->page, PROT_READ, MAP_SHARED, self->fd, 0);

	ASSERT_NE(MAP_FAILED, p);
	EXPECT_EQ(MAP_FAILED, mremap(p, self->page, 2 * self->page, MREMAP_MAYMOVE));
	EXPECT_EQ(EFAULT, errno);
	munmap(p, self->page);
}

TEST_F(dev, info_reserved_fields_are_zero)
{
	unsigned int i;

	for (i = 0; i < sizeof(self->info.__reserved) / sizeof(self->info.__reserved[0]); i++)
		EXPECT_EQ(0, self->info.__reserved[i]);
	EXPECT_EQ(64, sizeof(struct sivshm_info));
}

TEST_F(dev, shared_memory_is_never_executable)
{
	void *p = mmap(NULL, self->page, PROT_READ | PROT_EXEC, MAP_SHARED, self->fd, 0);

	/* EPERM, as the kernel answers PROT_EXEC on a noexec mount. */
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EPERM, errno);
	p = mmap(NULL, self->page, PROT_READ, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	EXPECT_EQ(-1, mprotect(p, self->page, PROT_READ | PROT_EXEC));
	EXPECT_EQ(EACCES, errno);
	munmap(p, self->page);
}

TEST_F(dev, mapping_survives_close_of_the_fd)
{
	volatile uint8_t *p = mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);

	ASSERT_NE(MAP_FAILED, (void *)p);
	close(self->fd);
	self->fd = -1;
	p[1] = 0x77;
	EXPECT_EQ(0x77, p[1]);
	munmap((void *)p, self->page);
}

TEST_F(dev, unbind_revokes_and_rebind_restores)
{
	const char *bdf = self->e[0].bdf;
	struct sivshm_info info, other_info;
	volatile uint8_t *p, *q, *o = MAP_FAILED;
	int fd2, other = -1, go[2], st, arg = 0;
	pid_t child;

	p = mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, (void *)p);
	p[0] = 0x42;
	/* A second device, with a file and a mapping of its own, must not notice. */
	if (self->n > 1) {
		other = sivshm_open_bdf(self->e[1].bdf, &other_info);
		ASSERT_GE(other, 0);
		o = mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_SHARED, other, 0);
		ASSERT_NE(MAP_FAILED, (void *)o);
		o[5] = 0x24;
	}
	/* A child inherits the mapping; unbind must revoke its copy too. */
	ASSERT_EQ(0, pipe(go));
	child = fork();
	ASSERT_GE(child, 0);
	if (child == 0) {
		char c;

		close(go[1]);
		if (p[0] != 0x42 || read(go[0], &c, 1) != 1)
			_exit(2);
		_exit(probe_read(p) == SIGBUS ? 0 : 1);
	}
	close(go[0]);
	ASSERT_EQ(0, write_sysfs(SIVSHM_DRIVER_DIR "/unbind", bdf));
	ASSERT_EQ(1, write(go[1], "x", 1));
	close(go[1]);
	ASSERT_EQ(child, waitpid(child, &st, 0));
	EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
		TH_LOG("the child's inherited mapping was not revoked (status %#x)", st);

	/* The open file stays usable for close, but the device is gone. */
	EXPECT_EQ(-ENODEV, sivshm_get_info(self->fd, &info));
	EXPECT_EQ(MAP_FAILED, mmap(NULL, self->page, PROT_READ, MAP_SHARED, self->fd, 0));
	EXPECT_EQ(ENODEV, errno);
	/* An unknown number is still unknown, whatever the device's state. */
	EXPECT_EQ(-1, ioctl(self->fd, _IO(SIVSHM_IOCTL_TYPE, 0x7f), &arg));
	EXPECT_EQ(ENOTTY, errno);
	/* The old mapping no longer reaches the BAR. */
	EXPECT_EQ(SIGBUS, probe_read(p));
	munmap((void *)p, self->page);
	/* The other device: its file, its mapping and its data are untouched. */
	if (other >= 0) {
		EXPECT_EQ(0, sivshm_get_info(other, &info));
		EXPECT_EQ(0x24, o[5]);
		o[6] = 0x25;
		EXPECT_EQ(0x25, o[6]);
		munmap((void *)o, self->page);
		close(other);
	}

	ASSERT_EQ(0, write_sysfs(SIVSHM_DRIVER_DIR "/bind", bdf));
	fd2 = wait_for_bdf(bdf, &info);
	ASSERT_GE(fd2, 0) TH_LOG("device did not come back after bind");
	EXPECT_EQ(self->e[0].size, info.shm_size);
	q = mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
	ASSERT_NE(MAP_FAILED, (void *)q);
	/* The memory is the host's: what was written before unbind is still there. */
	EXPECT_EQ(0x42, q[0]);
	munmap((void *)q, self->page);
	close(fd2);
}

TEST_F(dev, plain_device_has_no_doorbell_or_interrupts)
{
	struct sivshm_ring r = { 0 };
	int efd = eventfd(0, EFD_CLOEXEC);

	if (self->info.flags & SIVSHM_INFO_F_DOORBELL)
		SKIP(return, "the first device has a doorbell");
	EXPECT_EQ(-EOPNOTSUPP, sivshm_ring(self->fd, 0, 0));
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_RING, &r));
	EXPECT_EQ(EOPNOTSUPP, errno);
	EXPECT_EQ(-EOPNOTSUPP, sivshm_bind(self->fd, efd, 0));
	EXPECT_EQ(0, self->info.nr_vectors);
	EXPECT_EQ(SIVSHM_PEER_ID_NONE, self->info.peer_id);
	close(efd);
}

/* The doorbell device, its eventfds (one per vector) and an O_NONBLOCK fd. */
FIXTURE(db) {
	struct expect e;
	struct sivshm_info info;
	int fd, nbfd;
	int efd[SIVSHM_MAX_VECTORS];
};

static int eventfd_value(int efd, uint64_t *v)
{
	return read(efd, v, sizeof(*v)) == sizeof(*v) ? 0 : -errno;
}

/* Waits up to @ms for @efd to become readable; returns its counter, or 0. */
static uint64_t wait_eventfd(int efd, int ms)
{
	struct pollfd p = { .fd = efd, .events = POLLIN };
	uint64_t v = 0;

	if (poll(&p, 1, ms) == 1)
		eventfd_value(efd, &v);
	return v;
}

FIXTURE_SETUP(db)
{
	struct expect e[8];
	int n = parse_expect(e, 8), i;
	char path[32];

	self->fd = self->nbfd = -1;
	for (i = 0; i < n; i++)
		if (e[i].peer != SIVSHM_PEER_ID_NONE)
			break;
	if (i == n)
		SKIP(return, "no doorbell device attached");
	self->e = e[i];
	self->fd = sivshm_open_bdf(self->e.bdf, &self->info);
	ASSERT_GE(self->fd, 0);
	ASSERT_EQ(self->e.vectors, self->info.nr_vectors);
	ASSERT_GE(self->info.nr_vectors, 2);
	snprintf(path, sizeof(path), "/dev/sivshm%u", self->info.index);
	self->nbfd = open(path, O_RDWR | O_NONBLOCK);
	ASSERT_GE(self->nbfd, 0);
	for (i = 0; i < self->info.nr_vectors; i++) {
		self->efd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		ASSERT_GE(self->efd[i], 0);
	}
}

FIXTURE_TEARDOWN(db)
{
	int i;

	if (self->fd < 0)
		return;
	for (i = 0; i < self->info.nr_vectors; i++)
		close(self->efd[i]);
	close(self->nbfd);
	close(self->fd);
}

/* Counts every eventfd of the fixture; returns the total and stores each in @counts. */
static uint64_t take_counts(FIXTURE_DATA(db) *self, uint64_t *counts)
{
	uint64_t total = 0;
	int v;

	for (v = 0; v < self->info.nr_vectors; v++) {
		counts[v] = 0;
		eventfd_value(self->efd[v], &counts[v]);
		total += counts[v];
	}
	return total;
}

TEST_F(db, each_ring_is_one_interrupt_on_its_own_vector_only)
{
	uint64_t counts[SIVSHM_MAX_VECTORS];
	uint32_t v, o, n = self->info.nr_vectors;
	int round;

	for (v = 0; v < n; v++)
		ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[v], v));
	/*
	 * Paced rings (each waits for its interrupt, so QEMU has nothing to
	 * coalesce): a driver that lost, doubled or misrouted an interrupt shows
	 * up as a count other than exactly one, on exactly the rung vector.
	 */
	for (round = 0; round < 50; round++) {
		v = round % n;
		ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, v));
		ASSERT_EQ(1, wait_eventfd(self->efd[v], 5000))
			TH_LOG("round %d: vector %u did not get exactly one interrupt", round, v);
	}
	/* Nothing late: every vector is quiet afterwards. */
	usleep(100000);
	EXPECT_EQ(0, take_counts(self, counts));
	for (o = 0; o < n; o++)
		EXPECT_EQ(0, counts[o]) TH_LOG("vector %u got a stray interrupt", o);
}

TEST_F(db, ring_bad_arguments_get_their_errno_and_deliver_nothing)
{
	struct sivshm_ring r = { .peer_id = self->info.peer_id };
	uint64_t counts[SIVSHM_MAX_VECTORS];
	int v;

	for (v = 0; v < self->info.nr_vectors; v++)
		ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[v], v));
	EXPECT_EQ(-EINVAL, sivshm_ring(self->fd, 0x10000, 0));
	EXPECT_EQ(-EINVAL, sivshm_ring(self->fd, 0xffffffff, 0));
	EXPECT_EQ(-EINVAL, sivshm_ring(self->fd, self->info.peer_id, self->info.nr_vectors));
	EXPECT_EQ(-EINVAL, sivshm_ring(self->fd, self->info.peer_id, 0x10000));
	r.flags = 1;
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_RING, &r));
	EXPECT_EQ(EINVAL, errno);
	r.flags = 0;
	r.__reserved = 1;
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_RING, &r));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_RING, NULL));
	EXPECT_EQ(EFAULT, errno);
	usleep(100000);
	EXPECT_EQ(0, take_counts(self, counts)) TH_LOG("a refused ring reached a vector");
	/* The path works: one valid ring is exactly one delivery, so the above proved something. */
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(1, wait_eventfd(self->efd[0], 5000));
}

TEST_F(db, bind_bad_arguments_get_their_errno)
{
	struct sivshm_eventfd b = { .fd = self->efd[0] };
	int pipefd[2];

	ASSERT_EQ(0, pipe(pipefd));
	EXPECT_EQ(-EINVAL, sivshm_bind(self->fd, self->efd[0], self->info.nr_vectors));
	EXPECT_EQ(-EINVAL, sivshm_bind(self->fd, pipefd[0], 0));
	EXPECT_EQ(-EINVAL, sivshm_bind(self->fd, self->fd, 0));
	EXPECT_EQ(-EBADF, sivshm_bind(self->fd, 1000, 0));
	EXPECT_EQ(-EBADF, sivshm_bind(self->fd, -2, 0));
	b.flags = 1;
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_BIND_EVENTFD, &b));
	EXPECT_EQ(EINVAL, errno);
	b.flags = 0;
	b.__reserved = 1;
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_BIND_EVENTFD, &b));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_BIND_EVENTFD, (void *)8));
	EXPECT_EQ(EFAULT, errno);
	close(pipefd[0]);
	close(pipefd[1]);
}

TEST_F(db, rebinding_replaces_and_minus_one_unbinds)
{
	uint64_t val;

	ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[0], 0));
	ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[1], 0));
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(1, wait_eventfd(self->efd[1], 5000));
	EXPECT_EQ(-EAGAIN, eventfd_value(self->efd[0], &val)) TH_LOG("the replaced eventfd fired");
	ASSERT_EQ(0, sivshm_bind(self->fd, -1, 0));
	/* Removing a binding that does not exist (any more) is not an error. */
	EXPECT_EQ(0, sivshm_bind(self->fd, -1, 0));
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(0, wait_eventfd(self->efd[1], 300)) TH_LOG("an unbound eventfd fired");
	EXPECT_EQ(-EAGAIN, eventfd_value(self->efd[0], &val));
	/* The vector still works once bound again. */
	ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[0], 0));
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(1, wait_eventfd(self->efd[0], 5000));
}

TEST_F(db, a_binding_belongs_to_the_file_that_made_it)
{
	char path[32];
	int other;

	snprintf(path, sizeof(path), "/dev/sivshm%u", self->info.index);
	other = open(path, O_RDWR);
	ASSERT_GE(other, 0);
	ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[0], 0));
	/* Another open file can neither take nor remove it ... */
	EXPECT_EQ(-EBUSY, sivshm_bind(other, self->efd[1], 0));
	EXPECT_EQ(-EBUSY, sivshm_bind(other, -1, 0));
	/* ... and the binding still delivers to its owner's eventfd. */
	ASSERT_EQ(0, sivshm_ring(other, self->info.peer_id, 0));
	EXPECT_EQ(1, wait_eventfd(self->efd[0], 5000));
	EXPECT_EQ(0, wait_eventfd(self->efd[1], 100));
	/* Other vectors are free for the other file. */
	EXPECT_EQ(0, sivshm_bind(other, self->efd[1], 1));
	EXPECT_EQ(-EBUSY, sivshm_bind(self->fd, -1, 1));
	/* Once the owner lets go, the other file may bind. */
	ASSERT_EQ(0, sivshm_bind(self->fd, -1, 0));
	EXPECT_EQ(0, sivshm_bind(other, self->efd[1], 0));
	close(other);
}

TEST_F(db, closing_the_owner_frees_its_vectors)
{
	char path[32];
	int other;

	snprintf(path, sizeof(path), "/dev/sivshm%u", self->info.index);
	other = open(path, O_RDWR);
	ASSERT_GE(other, 0);
	ASSERT_EQ(0, sivshm_bind(other, self->efd[1], 1));
	EXPECT_EQ(-EBUSY, sivshm_bind(self->fd, self->efd[0], 1));
	close(other);
	/* The closed file's eventfd no longer fires ... */
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 1));
	EXPECT_EQ(0, wait_eventfd(self->efd[1], 300)) TH_LOG("a closed file's binding fired");
	/* ... and the vector is free. */
	ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[0], 1));
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 1));
	EXPECT_EQ(1, wait_eventfd(self->efd[0], 5000));
}

TEST_F(db, an_eventfd_waits_in_poll_and_epoll_until_the_interrupt)
{
	struct epoll_event ev = { .events = EPOLLIN }, out;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t val;
	pid_t child;

	ASSERT_GE(ep, 0);
	ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[1], 1));
	ev.data.u32 = 1;
	ASSERT_EQ(0, epoll_ctl(ep, EPOLL_CTL_ADD, self->efd[1], &ev));
	EXPECT_EQ(0, epoll_wait(ep, &out, 1, 100)) TH_LOG("ready before any interrupt");
	child = fork();
	ASSERT_GE(child, 0);
	if (child == 0) {
		usleep(300000);
		_exit(sivshm_ring(self->fd, self->info.peer_id, 1) ? 1 : 0);
	}
	ASSERT_EQ(1, epoll_wait(ep, &out, 1, 5000));
	EXPECT_EQ(1, out.data.u32);
	ASSERT_EQ(0, eventfd_value(self->efd[1], &val));
	EXPECT_EQ(1, val);
	waitpid(child, NULL, 0);
	close(ep);
}

static pid_t waiter_tid;

/* Blocks in poll() on the eventfd @arg points to; returns the revents, or -errno. */
static void *blocked_poller(void *arg)
{
	struct pollfd p = { .fd = *(int *)arg, .events = POLLIN };
	int ret;

	__atomic_store_n(&waiter_tid, gettid(), __ATOMIC_RELEASE);
	ret = poll(&p, 1, 30000);
	return (void *)(long)(ret < 0 ? -errno : ret == 1 ? p.revents : 0);
}

TEST_F(db, unbind_wakes_a_waiter_on_a_bound_eventfd)
{
	struct sivshm_info info;
	pthread_t t;
	void *ret;
	int fd, efd = self->efd[0];

	ASSERT_EQ(0, sivshm_bind(self->fd, efd, 0));
	waiter_tid = 0;
	ASSERT_EQ(0, pthread_create(&t, NULL, blocked_poller, &efd));
	while (!__atomic_load_n(&waiter_tid, __ATOMIC_ACQUIRE))
		usleep(1000);
	ASSERT_EQ(0, wait_until_sleeping(waiter_tid)) TH_LOG("the waiter never blocked");
	ASSERT_EQ(0, write_sysfs(SIVSHM_DRIVER_DIR "/unbind", self->e.bdf));
	/* The unbind signals the eventfd once: the waiter wakes ... */
	ASSERT_EQ(0, pthread_join(t, &ret));
	EXPECT_EQ(POLLIN, (long)ret) TH_LOG("poll returned %ld", (long)ret);
	/* ... and learns from its next call that the device is gone. */
	EXPECT_EQ(-ENODEV, sivshm_get_info(self->fd, &info));
	EXPECT_EQ(-ENODEV, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(-ENODEV, sivshm_bind(self->fd, self->efd[1], 1));
	ASSERT_EQ(0, write_sysfs(SIVSHM_DRIVER_DIR "/bind", self->e.bdf));
	fd = wait_for_bdf(self->e.bdf, &info);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(self->info.nr_vectors, info.nr_vectors);
	EXPECT_EQ(self->info.peer_id, info.peer_id);
	/* The lowest free index: the one it had. */
	EXPECT_EQ(self->info.index, info.index);
	/* The rebound device delivers again, and the old binding is gone. */
	eventfd_value(efd, &(uint64_t){ 0 });
	ASSERT_EQ(0, sivshm_bind(fd, self->efd[1], 1));
	ASSERT_EQ(0, sivshm_ring(fd, info.peer_id, 1));
	EXPECT_EQ(1, wait_eventfd(self->efd[1], 5000));
	ASSERT_EQ(0, sivshm_ring(fd, info.peer_id, 0));
	EXPECT_EQ(0, wait_eventfd(efd, 300)) TH_LOG("a binding survived the unbind");
	close(fd);
}

TEST(rmmod_is_refused_while_open_or_mapped_then_reload_works)
{
	struct sivshm_info info;
	const char *bdf;
	int fd, modfd;
	struct expect e[8];
	void *p;

	ASSERT_GT(parse_expect(e, 8), 0);
	bdf = e[0].bdf;
	fd = sivshm_open_bdf(bdf, &info);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(-1, syscall(SYS_delete_module, "sivshm", O_NONBLOCK));
	EXPECT_EQ(EWOULDBLOCK, errno);
	/* A mapping keeps its file, and so the module, after close. */
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	close(fd);
	EXPECT_EQ(-1, syscall(SYS_delete_module, "sivshm", O_NONBLOCK));
	EXPECT_EQ(EWOULDBLOCK, errno);
	munmap(p, 4096);
	ASSERT_EQ(0, syscall(SYS_delete_module, "sivshm", O_NONBLOCK)) TH_LOG("rmmod: %s", strerror(errno));
	EXPECT_NE(0, access("/dev/sivshm0", F_OK));
	modfd = open(SIVSHM_MODULE_PATH, O_RDONLY | O_CLOEXEC);
	ASSERT_GE(modfd, 0);
	ASSERT_EQ(0, syscall(SYS_finit_module, modfd, "", 0)) TH_LOG("insmod: %s", strerror(errno));
	close(modfd);
	fd = wait_for_bdf(bdf, &info);
	ASSERT_GE(fd, 0);
	close(fd);
}

TEST_HARNESS_MAIN
