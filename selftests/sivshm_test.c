// SPDX-License-Identifier: GPL-2.0
/*
 * Single-VM tests of the sivshm driver. The host says what it attached,
 * in the environment, one device per entry:
 *   SIVSHM_EXPECT="DDDD:BB:SS.F,<size>,<peer id or none>,<vectors>;..."
 * The first entry is the device the mmap and unbind tests use; the first
 * one with a peer id is the doorbell device of the interrupt tests.
 *
 * Interrupt delivery is checked against the kernel's own count: the IRQ
 * core counts every MSI-X interrupt per vector before the driver's handler
 * runs (/proc/interrupts, see sivshm_irq_counts()), one count per run of the
 * handler. An eventfd that received exactly what the IRQ core counted on its
 * vector, and no other vector's, shows that the driver lost, duplicated and
 * misrouted nothing.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "sivshm_lib.h"

#define SIVSHM_DRIVER_DIR "/sys/bus/pci/drivers/sivshm"
#define SIVSHM_MODULE_PATH "/lib/modules/sivshm.ko"

struct expect {
	char bdf[24];
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
		if (sscanf(s, "%23[^,],%lu,%15[^,],%u%n", e[n].bdf, &e[n].size, peer,
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

static int is_bound(const char *bdf)
{
	char path[96];

	snprintf(path, sizeof(path), SIVSHM_DRIVER_DIR "/%s", bdf);
	return !access(path, F_OK);
}

static int unbind_device(const char *bdf)
{
	return sivshm_write_sysfs(SIVSHM_DRIVER_DIR "/unbind", bdf);
}

/* Binds @bdf to the driver again and opens its node; -1 if it did not come back. */
static int rebind_device(const char *bdf, struct sivshm_info *info)
{
	if (sivshm_write_sysfs(SIVSHM_DRIVER_DIR "/bind", bdf))
		return -1;
	return wait_for_bdf(bdf, info);
}

/*
 * Teardown, in the harness's parent process (so it also runs after a test
 * died of a signal): binds again every expected device that a failed test
 * left unbound, so that one failure does not fail the tests after it.
 */
static void rebind_all(const struct expect *e, int n)
{
	struct sivshm_info info;
	int i, fd;

	for (i = 0; i < n; i++) {
		if (is_bound(e[i].bdf))
			continue;
		fd = rebind_device(e[i].bdf, &info);
		if (fd >= 0)
			close(fd);
	}
}

static void node_path(const struct sivshm_info *info, char *buf, size_t len)
{
	snprintf(buf, len, "/dev/sivshm%u", info->index);
}

/*
 * No test installs a SIGBUS (or SIGSEGV) handler: a removed device must not
 * raise one. A signal kills the test's process, which the harness reports
 * as a failure.
 */

/* Reads @len bytes at @p and says whether every one is @val. */
static int all_bytes_are(const volatile uint8_t *p, size_t len, uint8_t val)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != val)
			return 0;
	return 1;
}

/* Writes one byte at @p in a child process; returns the signal that ended it, or 0. */
static int write_in_child(volatile uint8_t *p)
{
	int status = 0;
	pid_t child = fork();

	if (child < 0)
		return -1;
	if (child == 0) {
		*p = 0x99;
		_exit(0);
	}
	if (waitpid(child, &status, 0) != child)
		return -1;
	return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

/* The driver's stand-in page starts filled with this (uapi/linux/sivshm.h, mmap()). */
#define STAND_IN_BYTE 0xff

/*
 * Waits up to 5 s until the IRQ core has counted @want interrupts on @vector
 * of @bdf since @before; returns how many it counted (0 on error).
 */
static uint64_t wait_irqs(const char *bdf, const uint64_t *before, unsigned int n,
			  unsigned int vector, uint64_t want)
{
	uint64_t now[SIVSHM_MAX_VECTORS];
	int i;

	for (i = 0; i < 500; i++) {
		if (sivshm_irq_counts(bdf, now, n) != (int)n)
			return 0;
		if (now[vector] - before[vector] >= want)
			break;
		usleep(10000);
	}
	/* Give a wrongly routed or duplicated delivery time to show up too. */
	usleep(50000);
	if (sivshm_irq_counts(bdf, now, n) != (int)n)
		return 0;
	return now[vector] - before[vector];
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
	self->fd = -1;
	self->page = sysconf(_SC_PAGESIZE);
	self->n = parse_expect(self->e, 8);
	ASSERT_GT(self->n, 0) TH_LOG("SIVSHM_EXPECT is missing or malformed");
	self->fd = sivshm_open_bdf(self->e[0].bdf, &self->info);
	ASSERT_GE(self->fd, 0) TH_LOG("no /dev/sivshmN for %s", self->e[0].bdf);
}

/* The test's process closes its files when it exits; only devices need restoring. */
FIXTURE_TEARDOWN_PARENT(dev)
{
	rebind_all(self->e, self->n);
}

TEST_F(dev, node_is_root_only_char_device)
{
	char path[32];
	struct stat st;

	node_path(&self->info, path, sizeof(path));
	ASSERT_EQ(0, stat(path, &st));
	EXPECT_TRUE(S_ISCHR(st.st_mode));
	EXPECT_EQ(0600, st.st_mode & 0777);
	EXPECT_EQ(0, st.st_uid);
}

TEST_F(dev, info_matches_every_attached_device)
{
	struct sivshm_info info;
	char path[64];
	unsigned int r;
	int i, fd;

	EXPECT_EQ(64, sizeof(struct sivshm_info));
	for (i = 0; i < self->n; i++) {
		/* Poisoned first (sivshm_get_info()): every field below was written. */
		fd = sivshm_open_bdf(self->e[i].bdf, &info);
		ASSERT_GE(fd, 0) TH_LOG("device %s not found", self->e[i].bdf);
		EXPECT_EQ(sizeof(info), info.argsz);
		EXPECT_EQ(self->e[i].size, info.shm_size);
		EXPECT_EQ(self->e[i].peer, info.peer_id);
		EXPECT_EQ(self->e[i].peer != SIVSHM_PEER_ID_NONE,
			  !!(info.flags & SIVSHM_INFO_F_DOORBELL));
		EXPECT_EQ(0, info.flags & ~SIVSHM_INFO_F_DOORBELL);
		EXPECT_EQ(self->e[i].vectors, info.nr_vectors);
		EXPECT_EQ(0, info.__pad0);
		EXPECT_EQ(0, info.__pad1);
		for (r = 0; r < sizeof(info.__reserved) / sizeof(info.__reserved[0]); r++)
			EXPECT_EQ(0, info.__reserved[r]) TH_LOG("__reserved[%u]", r);
		/* The PCI address names a device bound to this driver. */
		snprintf(path, sizeof(path), SIVSHM_DRIVER_DIR "/%s", self->e[i].bdf);
		EXPECT_EQ(0, access(path, F_OK));
		close(fd);
	}
}

/*
 * GET_INFO's memory type is the one the PAT lists for the BAR (read
 * independently of the driver), for every device; SIVSHM_EXPECT_MEMTYPE
 * (default write-back) says which one the host's placement must give.
 */
TEST_F(dev, info_mem_type_is_what_the_pat_lists)
{
	const char *want = getenv("SIVSHM_EXPECT_MEMTYPE");
	struct sivshm_info info;
	char pat[32];
	int i, fd;

	for (i = 0; i < self->n; i++) {
		fd = sivshm_open_bdf(self->e[i].bdf, &info);
		ASSERT_GE(fd, 0);
		close(fd);
		ASSERT_EQ(0, sivshm_pat_type(self->e[i].bdf, pat, sizeof(pat)))
			TH_LOG("%s: no pat_memtype_list entry for BAR2", self->e[i].bdf);
		EXPECT_STREQ(pat, sivshm_mem_type_name(info.mem_type))
			TH_LOG("%s: the driver and the PAT disagree", self->e[i].bdf);
		EXPECT_STREQ(want ? want : "write-back", pat)
			TH_LOG("%s: BAR2's memory type", self->e[i].bdf);
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
	/* @index is the last field of version 1. */
	EXPECT_EQ(self->info.index, info->index);
	for (i = SIVSHM_INFO_ARGSZ_V1; i < sizeof(buf); i++)
		ASSERT_EQ(0xa5, buf[i]) TH_LOG("byte %zu past argsz was written", i);
}

TEST_F(dev, info_large_argsz_is_accepted)
{
	uint8_t buf[256];
	struct sivshm_info *info = (void *)buf;
	size_t i;

	memset(buf, 0xa5, sizeof(buf));
	info->argsz = sizeof(buf);
	ASSERT_EQ(0, ioctl(self->fd, SIVSHM_IOCTL_GET_INFO, info));
	EXPECT_EQ(sizeof(struct sivshm_info), info->argsz);
	for (i = sizeof(struct sivshm_info); i < sizeof(buf); i++)
		ASSERT_EQ(0xa5, buf[i]) TH_LOG("byte %zu past the kernel's struct was written", i);
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
	/* Big enough and zeroed for every number tried: a refusal cannot be EFAULT or EINVAL. */
	uint8_t arg[sizeof(struct sivshm_info)] = { 0 };

	EXPECT_EQ(-1, ioctl(self->fd, _IO(SIVSHM_IOCTL_TYPE, 0x7f), arg));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOR('x', 0x00, int), arg));
	EXPECT_EQ(ENOTTY, errno);
	/*
	 * Direction and size are part of the number: GET_INFO's number before it
	 * became _IOWR (_IO), and the other directions, are other ioctls.
	 */
	EXPECT_EQ(-1, ioctl(self->fd, _IO(SIVSHM_IOCTL_TYPE, 0x00), arg));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOR(SIVSHM_IOCTL_TYPE, 0x00, struct sivshm_info), arg));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOW(SIVSHM_IOCTL_TYPE, 0x00, struct sivshm_info), arg));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOWR(SIVSHM_IOCTL_TYPE, 0x01, struct sivshm_ring), arg));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOW(SIVSHM_IOCTL_TYPE, 0x03, struct sivshm_eventfd), arg));
	EXPECT_EQ(ENOTTY, errno);
}

/* The node has no read() and no write(): the VFS answers EINVAL for such a file. */
TEST_F(dev, read_and_write_on_the_node_are_einval)
{
	uint64_t buf[SIVSHM_MAX_VECTORS] = { 0 };

	EXPECT_EQ(-1, read(self->fd, buf, sizeof(buf)));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, read(self->fd, buf, 8));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, write(self->fd, buf, 8));
	EXPECT_EQ(EINVAL, errno);
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

/* mmap(2) with the offset as the unsigned long the system call takes, no libc check between. */
static long raw_mmap(size_t len, int prot, int fd, unsigned long offset)
{
	return syscall(SYS_mmap, NULL, len, prot, MAP_SHARED, fd, offset);
}

TEST_F(dev, mmap_beyond_bar_is_einval_and_a_wrapping_range_eoverflow)
{
	unsigned long page = self->page, len = 2 * page, off;
	size_t size = self->info.shm_size;
	void *p;

	p = mmap(NULL, size + page, PROT_READ, MAP_SHARED, self->fd, 0);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
	p = mmap(NULL, page, PROT_READ, MAP_SHARED, self->fd, size);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
	p = mmap(NULL, len, PROT_READ, MAP_SHARED, self->fd, size - page);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
	/*
	 * The largest offset the mm core passes to the driver for this length:
	 * file_mmap_ok() in mm/mmap.c (7.3) lets a character device's page
	 * offset go up to (ULONG_MAX - len) >> PAGE_SHIFT. offset + len does not
	 * wrap, so refusing it is the driver's range check: EINVAL.
	 */
	off = (~0UL - len) & ~(page - 1);
	EXPECT_EQ(-1, raw_mmap(len, PROT_READ, self->fd, off));
	EXPECT_EQ(EINVAL, errno) TH_LOG("offset %#lx: errno %d", off, errno);
	/*
	 * A range that really wraps: offset + len is beyond 2^64. do_mmap()
	 * refuses it with EOVERFLOW in file_mmap_ok() before it calls the
	 * driver, whose own pgoff + pages check cannot overflow on 64-bit (a
	 * page offset is below 2^52). So EOVERFLOW and nothing else: EINVAL
	 * would mean the offset did not reach the kernel as given.
	 */
	off = ~0UL & ~(page - 1);
	EXPECT_EQ(-1, raw_mmap(len, PROT_READ, self->fd, off));
	EXPECT_EQ(EOVERFLOW, errno) TH_LOG("offset %#lx: errno %d", off, errno);
}

TEST_F(dev, mmap_private_is_einval)
{
	void *p = mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_PRIVATE, self->fd, 0);

	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
}

TEST_F(dev, read_only_file_may_query_and_map_read_only)
{
	volatile uint8_t *rw, *ro_map;
	struct sivshm_info info;
	char path[32];
	int ro;

	node_path(&self->info, path, sizeof(path));
	ro = open(path, O_RDONLY);
	ASSERT_GE(ro, 0);
	ASSERT_EQ(0, sivshm_get_info(ro, &info));
	EXPECT_EQ(0, memcmp(&info, &self->info, sizeof(info)));
	rw = mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, (void *)rw);
	ro_map = mmap(NULL, self->page, PROT_READ, MAP_SHARED, ro, 0);
	ASSERT_NE(MAP_FAILED, (void *)ro_map) TH_LOG("mmap: %s", strerror(errno));
	rw[5] = 0x5e;
	EXPECT_EQ(0x5e, ro_map[5]);
	EXPECT_EQ(SIGSEGV, write_in_child(ro_map + 5));
	EXPECT_EQ(MAP_FAILED, mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0));
	EXPECT_EQ(EACCES, errno);
	munmap((void *)ro_map, self->page);
	munmap((void *)rw, self->page);
	close(ro);
}

TEST_F(dev, shared_memory_is_never_executable)
{
	char path[32];
	void *p;
	int ro;

	/* EPERM, as for PROT_EXEC on a noexec mount. */
	p = mmap(NULL, self->page, PROT_READ | PROT_EXEC, MAP_SHARED, self->fd, 0);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EPERM, errno);
	p = mmap(NULL, self->page, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED, self->fd, 0);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EPERM, errno);
	node_path(&self->info, path, sizeof(path));
	ro = open(path, O_RDONLY);
	ASSERT_GE(ro, 0);
	p = mmap(NULL, self->page, PROT_READ | PROT_EXEC, MAP_SHARED, ro, 0);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EPERM, errno);
	close(ro);
	/* A mapping made without PROT_EXEC cannot gain it later. */
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

/* VM_DONTEXPAND: mremap() may shrink a mapping but never grow it (EFAULT in mm/mremap.c). */
TEST_F(dev, mremap_cannot_expand_a_mapping)
{
	size_t page = self->page;
	volatile uint8_t *p, *two;
	void *q;

	ASSERT_GE(self->info.shm_size, 2 * page);
	p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, (void *)p);
	p[0] = 0x11;
	q = mremap((void *)p, page, 2 * page, 0);
	EXPECT_EQ(MAP_FAILED, q);
	EXPECT_EQ(EFAULT, errno);
	q = mremap((void *)p, page, 2 * page, MREMAP_MAYMOVE);
	EXPECT_EQ(MAP_FAILED, q);
	EXPECT_EQ(EFAULT, errno);
	/* Old length 0 asks for a second mapping of the same pages: growing from nothing. */
	q = mremap((void *)p, 0, page, MREMAP_MAYMOVE);
	EXPECT_EQ(MAP_FAILED, q);
	EXPECT_EQ(EFAULT, errno);
	/* The refused calls left the mapping as it was. */
	EXPECT_EQ(0x11, p[0]);
	munmap((void *)p, page);

	two = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, (void *)two);
	q = mremap((void *)two, 2 * page, page, 0);
	EXPECT_EQ((void *)two, q) TH_LOG("shrinking: %s", strerror(errno));
	EXPECT_EQ(0x11, two[0]);
	munmap((void *)two, page);
}

/*
 * The mapping is VM_IO | VM_PFNMAP, so nothing can take references to its
 * pages (get_user_pages() refuses such a vma with EFAULT): not /proc/PID/mem
 * (EIO), and not page pinning. Direct I/O pins the pages of its buffer; the
 * guest has no block device, and tmpfs, its only disk-like file system,
 * serves O_DIRECT in 7.3 as a buffered copy (shmem_file_open() sets
 * FMODE_CAN_ODIRECT, and its read/write paths ignore IOCB_DIRECT), so it
 * cannot show the refusal. vmsplice() from user memory into a pipe pins
 * pages through the same iov_iter_get_pages2() as direct I/O does, so that
 * is what is tested. Ordinary copies by the kernel (read()/write() with the
 * mapping as buffer) fault the pages in like any user access, and work.
 */
TEST_F(dev, proc_mem_and_page_pinning_are_refused)
{
	static const char pattern[16] = "sivshm-mem-test";
	char buf[16], plain[16] = "ordinary memory";
	struct iovec iov = { .iov_len = sizeof(buf) };
	volatile uint8_t *p;
	int mem, pipefd[2];

	p = mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, (void *)p);
	memcpy((void *)p, pattern, sizeof(pattern));

	mem = open("/proc/self/mem", O_RDWR);
	ASSERT_GE(mem, 0) TH_LOG("/proc/self/mem: %s", strerror(errno));
	/* The same accesses to ordinary memory work: the refusals are the mapping's. */
	EXPECT_EQ(sizeof(buf), pread(mem, buf, sizeof(buf), (off_t)(uintptr_t)plain));
	EXPECT_EQ(0, memcmp(buf, plain, sizeof(buf)));
	EXPECT_EQ(1, pwrite(mem, "O", 1, (off_t)(uintptr_t)plain));
	EXPECT_EQ('O', plain[0]);
	EXPECT_EQ(-1, pread(mem, buf, sizeof(buf), (off_t)(uintptr_t)p));
	EXPECT_EQ(EIO, errno);
	EXPECT_EQ(-1, pwrite(mem, "X", 1, (off_t)(uintptr_t)p));
	EXPECT_EQ(EIO, errno);
	EXPECT_EQ(pattern[0], p[0]);
	close(mem);

	ASSERT_EQ(0, pipe(pipefd));
	iov.iov_base = plain;
	EXPECT_EQ(sizeof(buf), vmsplice(pipefd[1], &iov, 1, 0));
	EXPECT_EQ(sizeof(buf), read(pipefd[0], buf, sizeof(buf)));
	iov.iov_base = (void *)p;
	EXPECT_EQ(-1, vmsplice(pipefd[1], &iov, 1, 0));
	EXPECT_EQ(EFAULT, errno);

	/* Copies through the mapping as a buffer, both ways. */
	EXPECT_EQ(sizeof(pattern), write(pipefd[1], (void *)p, sizeof(pattern)));
	EXPECT_EQ(sizeof(buf), read(pipefd[0], buf, sizeof(buf)));
	EXPECT_EQ(0, memcmp(buf, pattern, sizeof(buf)));
	EXPECT_EQ(sizeof(plain), write(pipefd[1], plain, sizeof(plain)));
	EXPECT_EQ(sizeof(plain), read(pipefd[0], (void *)(p + 64), sizeof(plain)));
	EXPECT_EQ(0, memcmp((void *)(p + 64), plain, sizeof(plain)));
	close(pipefd[0]);
	close(pipefd[1]);
	munmap((void *)p, self->page);
}

TEST_F_TIMEOUT(dev, unbind_revokes_and_rebind_restores, 60)
{
	const char *bdf = self->e[0].bdf;
	struct sivshm_info info;
	volatile uint8_t *p, *q;
	size_t page = self->page;
	uint8_t buf[8];
	int fd2;

	p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, (void *)p);
	p[0] = 0x42;
	p[1] = 0x43;
	p[page] = 0x44;
	ASSERT_EQ(0, unbind_device(bdf));

	/* The open file stays usable for close, but the device is gone. */
	EXPECT_EQ(-ENODEV, sivshm_get_info(self->fd, &info));
	EXPECT_EQ(MAP_FAILED, mmap(NULL, self->page, PROT_READ, MAP_SHARED, self->fd, 0));
	EXPECT_EQ(ENODEV, errno);
	/* Unknown numbers stay unknown; the node still has no read(). */
	EXPECT_EQ(-1, ioctl(self->fd, _IO(SIVSHM_IOCTL_TYPE, 0x7f), buf));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, read(self->fd, buf, sizeof(buf)));
	EXPECT_EQ(EINVAL, errno);
	/*
	 * The old mapping no longer reaches the BAR, and touching it raises no
	 * signal: both pages show the stand-in, nothing of what was written.
	 */
	EXPECT_TRUE(all_bytes_are(p, page, STAND_IN_BYTE));
	EXPECT_TRUE(all_bytes_are(p + page, page, STAND_IN_BYTE));
	/* Writes land in the stand-in, the one page behind every address. */
	p[1] = 0x77;
	EXPECT_EQ(0x77, p[page + 1]);
	munmap((void *)p, 2 * page);

	fd2 = rebind_device(bdf, &info);
	ASSERT_GE(fd2, 0) TH_LOG("device did not come back after bind");
	EXPECT_EQ(self->e[0].size, info.shm_size);
	q = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
	ASSERT_NE(MAP_FAILED, (void *)q);
	/*
	 * The memory is the host's: what was written before unbind is still
	 * there, and what was written after it never reached the device.
	 */
	EXPECT_EQ(0x42, q[0]);
	EXPECT_EQ(0x43, q[1]);
	EXPECT_EQ(0x44, q[page]);
	munmap((void *)q, 2 * page);
	close(fd2);
}

/*
 * A process with a live mapping of the whole shared memory (in single-vm a
 * segment larger than the guest's RAM), a blocked reader of the node in
 * epoll, and no signal handling survives the unbind: it learns of it from
 * the node (EPOLLHUP | EPOLLERR) and from every call (ENODEV), then touches
 * every page of the mapping, read and write. Every page shows the one
 * stand-in page: nothing of the device, and no memory spent per page beyond
 * page tables.
 */
struct hup_waiter {
	int ep;
	int ret;
	uint32_t events;
	pid_t tid;
};

static void *wait_for_hup(void *arg)
{
	struct hup_waiter *w = arg;
	struct epoll_event out = { 0 };

	__atomic_store_n(&w->tid, gettid(), __ATOMIC_RELEASE);
	w->ret = epoll_wait(w->ep, &out, 1, 20000);
	w->events = out.events;
	return NULL;
}

static long mem_total_kib(void)
{
	char line[128];
	long kib = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemTotal: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

TEST_F_TIMEOUT(dev, a_process_survives_unbind_and_touches_every_page_after_it, 120)
{
	const char *bdf = self->e[0].bdf;
	struct epoll_event ev = { .events = EPOLLIN };
	struct hup_waiter w = { 0 };
	size_t page = self->page, len = self->info.shm_size, i;
	struct sivshm_info info;
	volatile uint8_t *p, *q;
	long ram = mem_total_kib();
	pthread_t t;
	int fd2, bad = 0;

	TH_LOG("segment %zu MiB, guest RAM %ld MiB", len >> 20, ram >> 10);
	if (getenv("SIVSHM_LARGER_THAN_RAM"))
		ASSERT_GT((long)(len >> 10), ram) TH_LOG("the host was to make the segment larger than RAM");
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, (void *)p);
	p[0] = 0x31;
	p[len - page] = 0x32;
	/* The node in an epoll set: nothing to report while the device is bound. */
	w.ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_GE(w.ep, 0);
	ASSERT_EQ(0, epoll_ctl(w.ep, EPOLL_CTL_ADD, self->fd, &ev));
	ASSERT_EQ(0, pthread_create(&t, NULL, wait_for_hup, &w));
	while (!__atomic_load_n(&w.tid, __ATOMIC_ACQUIRE))
		usleep(1000);
	ASSERT_EQ(0, sivshm_wait_until_sleeping(w.tid)) TH_LOG("the epoll waiter never blocked");

	ASSERT_EQ(0, unbind_device(bdf));
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(1, w.ret) TH_LOG("epoll_wait returned %d: removal not reported", w.ret);
	EXPECT_EQ(EPOLLHUP | EPOLLERR, w.events & (EPOLLHUP | EPOLLERR | EPOLLIN));
	EXPECT_EQ(-ENODEV, sivshm_get_info(self->fd, &info));

	/* Every page, read then written: the stand-in, never the device's data. */
	for (i = 0; i < len; i += page) {
		if (p[i] != STAND_IN_BYTE || p[i + page - 1] != STAND_IN_BYTE)
			bad++;
		p[i + 8] = (uint8_t)(i / page);
	}
	EXPECT_EQ(0, bad) TH_LOG("%d page(s) showed something else than the stand-in", bad);
	/* One page behind every address: the last write shows everywhere. */
	EXPECT_EQ((uint8_t)(len / page - 1), p[8]);
	EXPECT_EQ((uint8_t)(len / page - 1), p[len / 2 + 8]);
	munmap((void *)p, len);
	close(w.ep);

	fd2 = rebind_device(bdf, &info);
	ASSERT_GE(fd2, 0);
	q = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
	ASSERT_NE(MAP_FAILED, (void *)q);
	EXPECT_EQ(0x31, q[0]);
	EXPECT_EQ(0x32, q[len - page]);
	EXPECT_NE((uint8_t)(len / page - 1), q[8]) TH_LOG("a write after unbind reached the device");
	munmap((void *)q, len);
	close(fd2);
}

/*
 * A child inherits the mapping, and its page-table entries (fork copies
 * them for a VM_PFNMAP mapping). Unbind must zap those too: the revocation
 * reaches every process through the address space all mappings of the
 * device share, not only the one that called mmap(). The child, which
 * handles no signal, then reads the stand-in and lives on.
 */
TEST_F_TIMEOUT(dev, unbind_revokes_a_forked_childs_mapping, 60)
{
	int ready[2], go[2], status = 0;
	struct sivshm_info info;
	volatile uint8_t *p;
	pid_t child;
	char c;

	p = mmap(NULL, self->page, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, (void *)p);
	p[0] = 0x5a;
	ASSERT_EQ(0, pipe(ready));
	ASSERT_EQ(0, pipe(go));
	child = fork();
	ASSERT_GE(child, 0);
	if (child == 0) {
		/* The inherited mapping works in the child. */
		if (p[0] != 0x5a)
			_exit(2);
		p[1] = 0x6b;
		if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(3);
		/* After unbind: the stand-in, and no signal. */
		if (p[0] != STAND_IN_BYTE)
			_exit(4);
		p[2] = 0x7c;
		_exit(p[2] == 0x7c ? 0 : 5);
	}
	ASSERT_EQ(1, read(ready[0], &c, 1));
	EXPECT_EQ(0x6b, p[1]);
	ASSERT_EQ(0, unbind_device(self->e[0].bdf));
	ASSERT_EQ(1, write(go[1], "g", 1));
	ASSERT_EQ(child, waitpid(child, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
		TH_LOG("child status %#x: it saw the device after unbind, or died", status);
	/* The child's write is in the stand-in this process sees too. */
	EXPECT_EQ(0x7c, p[2]);
	EXPECT_EQ(STAND_IN_BYTE, p[0]);
	munmap((void *)p, self->page);
	status = rebind_device(self->e[0].bdf, &info);
	ASSERT_GE(status, 0);
	close(status);
}

/*
 * Revocation is per device: unbinding one leaves another device's files,
 * mappings and eventfds working, in both directions, and each device's
 * stand-in is its own.
 */
TEST_F_TIMEOUT(dev, unbinding_one_device_leaves_the_other_working, 90)
{
	const char *pbdf = self->e[0].bdf, *dbdf = NULL;
	volatile uint8_t *p, *d, *d2, *p2, *p3;
	struct sivshm_info dinfo, info;
	int i, fdd, fdp2, other, efd;
	size_t page = self->page;

	for (i = 1; i < self->n; i++)
		if (self->e[i].peer != SIVSHM_PEER_ID_NONE)
			dbdf = self->e[i].bdf;
	if (!dbdf)
		SKIP(return, "no doorbell device besides the first one");
	fdd = sivshm_open_bdf(dbdf, &dinfo);
	ASSERT_GE(fdd, 0);
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ASSERT_GE(efd, 0);
	ASSERT_EQ(0, sivshm_bind(fdd, efd, 0));
	p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, (void *)p);
	d = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fdd, 0);
	ASSERT_NE(MAP_FAILED, (void *)d);
	p[0] = 0x01;
	d[0] = 0x02;

	/* The plain device goes; the doorbell device stays. */
	ASSERT_EQ(0, unbind_device(pbdf));
	EXPECT_EQ(STAND_IN_BYTE, p[0]);
	p[16] = 0x55;
	EXPECT_EQ(-ENODEV, sivshm_get_info(self->fd, &info));
	EXPECT_EQ(0, sivshm_get_info(fdd, &info));
	d[8] = 0x99;
	d2 = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fdd, 0);
	ASSERT_NE(MAP_FAILED, (void *)d2);
	EXPECT_EQ(0x02, d2[0]);
	EXPECT_EQ(0x99, d2[8]);
	EXPECT_NE(0x55, d2[16]) TH_LOG("the stand-in of one device shows in another");
	EXPECT_EQ(0, sivshm_take(efd)) TH_LOG("another device's unbind signalled this eventfd");
	EXPECT_EQ(0, sivshm_ring(fdd, dinfo.peer_id, 0));
	EXPECT_EQ(1, sivshm_wait_take(efd, 5000));
	other = sivshm_open_bdf(dbdf, &info);
	EXPECT_GE(other, 0);
	close(other);
	fdp2 = rebind_device(pbdf, &info);
	ASSERT_GE(fdp2, 0);
	p2 = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fdp2, 0);
	ASSERT_NE(MAP_FAILED, (void *)p2);
	EXPECT_EQ(0x01, p2[0]);
	EXPECT_NE(0x55, p2[16]) TH_LOG("a write after unbind reached the device");

	/* Now the doorbell device goes; the plain one stays. */
	ASSERT_EQ(0, unbind_device(dbdf));
	/* Its bound eventfd is signalled once more, so that a waiter would wake. */
	EXPECT_EQ(1, sivshm_wait_take(efd, 5000));
	EXPECT_EQ(STAND_IN_BYTE, d[0]);
	EXPECT_EQ(STAND_IN_BYTE, d2[8]);
	EXPECT_EQ(-ENODEV, sivshm_get_info(fdd, &info));
	EXPECT_EQ(0, sivshm_get_info(fdp2, &info));
	p2[8] = 0x99;
	p3 = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fdp2, 0);
	ASSERT_NE(MAP_FAILED, (void *)p3);
	EXPECT_EQ(0x99, p3[8]);
	EXPECT_EQ(0x01, p3[0]);
	other = rebind_device(dbdf, &info);
	ASSERT_GE(other, 0);
	close(other);
	munmap((void *)p, page);
	munmap((void *)p2, page);
	munmap((void *)p3, page);
	munmap((void *)d, page);
	munmap((void *)d2, page);
	close(fdp2);
	close(fdd);
	close(efd);
}

TEST_F(dev, plain_device_has_no_doorbell_or_interrupts)
{
	uint64_t counts[SIVSHM_MAX_VECTORS];
	struct sivshm_ring r = { 0 };
	int efd = eventfd(0, EFD_CLOEXEC);

	if (self->info.flags & SIVSHM_INFO_F_DOORBELL)
		SKIP(return, "the first device has a doorbell");
	EXPECT_EQ(0, self->info.nr_vectors);
	EXPECT_EQ(-EOPNOTSUPP, sivshm_ring(self->fd, 0, 0));
	EXPECT_EQ(-1, ioctl(self->fd, SIVSHM_IOCTL_RING, &r));
	EXPECT_EQ(EOPNOTSUPP, errno);
	EXPECT_EQ(-EOPNOTSUPP, sivshm_bind(self->fd, efd, 0));
	EXPECT_EQ(-EOPNOTSUPP, sivshm_bind(self->fd, -1, 0));
	/* No MSI-X vector of the device is in use. */
	EXPECT_EQ(0, sivshm_irq_counts(self->e[0].bdf, counts, SIVSHM_MAX_VECTORS));
	close(efd);
}

/* The doorbell device and an eventfd (non-blocking) per vector, not yet bound. */
FIXTURE(db) {
	struct expect e[8];
	int n;
	char bdf[24];
	struct sivshm_info info;
	int fd;
	int efd[SIVSHM_MAX_VECTORS];
};

FIXTURE_SETUP(db)
{
	uint64_t counts[SIVSHM_MAX_VECTORS];
	int i;

	self->fd = -1;
	self->n = parse_expect(self->e, 8);
	for (i = 0; i < self->n; i++)
		if (self->e[i].peer != SIVSHM_PEER_ID_NONE)
			break;
	if (i >= self->n)
		SKIP(return, "no doorbell device attached");
	strcpy(self->bdf, self->e[i].bdf);
	self->fd = sivshm_open_bdf(self->bdf, &self->info);
	ASSERT_GE(self->fd, 0);
	ASSERT_EQ(self->e[i].vectors, self->info.nr_vectors);
	ASSERT_GE(self->info.nr_vectors, 2);
	for (i = 0; i < self->info.nr_vectors; i++) {
		self->efd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		ASSERT_GE(self->efd[i], 0);
	}
	ASSERT_EQ(self->info.nr_vectors, sivshm_irq_counts(self->bdf, counts, SIVSHM_MAX_VECTORS))
		TH_LOG("/proc/interrupts does not list the MSI-X vectors of %s", self->bdf);
}

FIXTURE_TEARDOWN_PARENT(db)
{
	rebind_all(self->e, self->n);
}

/*
 * Paced rings: each ring waits for its delivery before the next, so none can
 * be coalesced in the hypervisor (QEMU turns each write of its eventfd that
 * it reads into one MSI-X message; a second ring before the read would merge
 * with the first). So every ring on vector v is exactly one interrupt on v:
 * v's eventfd must count 1 each time and nothing later, no other eventfd
 * anything, and the IRQ core exactly the rings on v and none elsewhere.
 */
#define PACED_RINGS 32

TEST_F(db, each_ring_signals_exactly_its_vectors_eventfd_once)
{
	uint64_t before[SIVSHM_MAX_VECTORS], after[SIVSHM_MAX_VECTORS], got;
	unsigned int v, o, n = self->info.nr_vectors;
	int i;

	for (v = 0; v < n; v++)
		ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[v], v));
	for (v = 0; v < n; v++) {
		ASSERT_EQ(n, sivshm_irq_counts(self->bdf, before, n));
		for (i = 0; i < PACED_RINGS; i++) {
			ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, v));
			got = sivshm_wait_take(self->efd[v], 5000);
			ASSERT_EQ(1, got) TH_LOG("vector %u, ring %d: eventfd counted %lu", v, i, got);
		}
		usleep(50000);
		EXPECT_EQ(0, sivshm_take(self->efd[v])) TH_LOG("vector %u: a late extra count", v);
		for (o = 0; o < n; o++)
			if (o != v)
				EXPECT_EQ(0, sivshm_take(self->efd[o]))
					TH_LOG("ringing vector %u signalled eventfd %u", v, o);
		ASSERT_EQ(n, sivshm_irq_counts(self->bdf, after, n));
		for (o = 0; o < n; o++)
			EXPECT_EQ(o == v ? PACED_RINGS : 0, after[o] - before[o])
				TH_LOG("ringing vector %u: the IRQ core counted %lu on %u", v,
				       after[o] - before[o], o);
	}
}

/*
 * A burst: rings as fast as the ioctl goes, round-robin over the vectors.
 * The hypervisor may coalesce rings (never multiply them), so each vector
 * receives between 1 and its number of rings; whatever arrived, the IRQ core
 * counted it, and the vector's eventfd must hold exactly that count: fewer
 * is a lost interrupt, more a duplicated or misrouted one.
 */
#define BURST_RINGS 4000

TEST_F_TIMEOUT(db, a_burst_reaches_each_eventfd_exactly_as_often_as_the_irq_core_counts, 90)
{
	uint64_t before[SIVSHM_MAX_VECTORS], after[SIVSHM_MAX_VECTORS];
	uint64_t sent[SIVSHM_MAX_VECTORS] = { 0 }, got, irqs;
	unsigned int v, n = self->info.nr_vectors;
	int i;

	for (v = 0; v < n; v++)
		ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[v], v));
	ASSERT_EQ(n, sivshm_settled_irq_counts(self->bdf, before, n, 500));
	for (v = 0; v < n; v++)
		sivshm_take(self->efd[v]);
	for (i = 0; i < BURST_RINGS; i++) {
		v = i % n;
		ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, v));
		sent[v]++;
	}
	ASSERT_EQ(n, sivshm_settled_irq_counts(self->bdf, after, n, 500));
	for (v = 0; v < n; v++) {
		got = sivshm_take(self->efd[v]);
		irqs = after[v] - before[v];
		TH_LOG("vector %u: %lu rings, %lu interrupts, eventfd %lu", v, sent[v], irqs, got);
		EXPECT_EQ(irqs, got);
		EXPECT_GE(irqs, 1);
		EXPECT_LE(irqs, sent[v]);
	}
}

TEST_F(db, ring_bad_arguments_get_their_errno_and_deliver_nothing)
{
	uint64_t before[SIVSHM_MAX_VECTORS], after[SIVSHM_MAX_VECTORS];
	struct sivshm_ring r = { .peer_id = self->info.peer_id };
	unsigned int v, n = self->info.nr_vectors;

	for (v = 0; v < n; v++)
		ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[v], v));
	ASSERT_EQ(n, sivshm_irq_counts(self->bdf, before, n));
	EXPECT_EQ(-EINVAL, sivshm_ring(self->fd, 0x10000, 0));
	EXPECT_EQ(-EINVAL, sivshm_ring(self->fd, 0xffffffff, 0));
	EXPECT_EQ(-EINVAL, sivshm_ring(self->fd, self->info.peer_id, n));
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
	usleep(200000);
	ASSERT_EQ(n, sivshm_irq_counts(self->bdf, after, n));
	for (v = 0; v < n; v++) {
		EXPECT_EQ(before[v], after[v]) TH_LOG("vector %u was interrupted", v);
		EXPECT_EQ(0, sivshm_take(self->efd[v]));
	}
	/* The path works: one valid ring is exactly one delivery, so the above proved something. */
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(1, sivshm_wait_take(self->efd[0], 5000));
	EXPECT_EQ(1, wait_irqs(self->bdf, after, n, 0, 1));
}

TEST_F(db, bind_bad_arguments_get_their_errno)
{
	struct sivshm_eventfd b = { .fd = self->efd[0] };
	int pipefd[2];

	ASSERT_EQ(0, pipe(pipefd));
	EXPECT_EQ(-EINVAL, sivshm_bind(self->fd, self->efd[0], self->info.nr_vectors));
	EXPECT_EQ(-EINVAL, sivshm_bind(self->fd, -1, self->info.nr_vectors));
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
	uint64_t before[SIVSHM_MAX_VECTORS];
	unsigned int n = self->info.nr_vectors;

	ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[0], 0));
	ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[1], 0));
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(1, sivshm_wait_take(self->efd[1], 5000));
	EXPECT_EQ(0, sivshm_take(self->efd[0])) TH_LOG("the replaced eventfd fired");
	ASSERT_EQ(0, sivshm_bind(self->fd, -1, 0));
	/* Removing a binding that does not exist succeeds. */
	EXPECT_EQ(0, sivshm_bind(self->fd, -1, 0));
	EXPECT_EQ(0, sivshm_bind(self->fd, -1, 1));
	/* The interrupt arrives (the IRQ core counts it) but signals nobody. */
	ASSERT_EQ(n, sivshm_irq_counts(self->bdf, before, n));
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(1, wait_irqs(self->bdf, before, n, 0, 1));
	EXPECT_EQ(0, sivshm_take(self->efd[1]));
	EXPECT_EQ(0, sivshm_take(self->efd[0]));
}

TEST_F(db, closing_the_binding_file_releases_its_eventfds)
{
	uint64_t before[SIVSHM_MAX_VECTORS];
	unsigned int n = self->info.nr_vectors;
	char path[32];
	int other;

	node_path(&self->info, path, sizeof(path));
	other = open(path, O_RDWR);
	ASSERT_GE(other, 0);
	ASSERT_EQ(0, sivshm_bind(other, self->efd[1], 1));
	close(other);
	ASSERT_EQ(n, sivshm_irq_counts(self->bdf, before, n));
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 1));
	EXPECT_EQ(1, wait_irqs(self->bdf, before, n, 1, 1));
	EXPECT_EQ(0, sivshm_take(self->efd[1])) TH_LOG("a closed file's binding fired");
	/* The vector is free for another file. */
	EXPECT_EQ(0, sivshm_bind(self->fd, self->efd[1], 1));
}

/*
 * A binding belongs to the open file (not the descriptor) that made it:
 * another open file can neither take nor remove it (EBUSY), the owner, or a
 * dup of it, can replace and remove it, and it is released when the owner's
 * last descriptor is closed.
 */
TEST_F(db, a_vector_bound_by_another_file_is_ebusy_until_its_owner_lets_go)
{
	uint64_t before[SIVSHM_MAX_VECTORS];
	unsigned int n = self->info.nr_vectors;
	int a, a2, b, e0 = self->efd[0], e1 = self->efd[1];
	char path[32];

	node_path(&self->info, path, sizeof(path));
	a = open(path, O_RDWR);
	b = open(path, O_RDWR);
	ASSERT_GE(a, 0);
	ASSERT_GE(b, 0);
	ASSERT_EQ(0, sivshm_bind(a, e0, 0));
	EXPECT_EQ(-EBUSY, sivshm_bind(b, e1, 0));
	EXPECT_EQ(-EBUSY, sivshm_bind(b, -1, 0));
	EXPECT_EQ(-EBUSY, sivshm_bind(self->fd, e0, 0));
	/* a's binding is untouched by the refused calls. */
	ASSERT_EQ(0, sivshm_ring(b, self->info.peer_id, 0));
	EXPECT_EQ(1, sivshm_wait_take(e0, 5000));
	EXPECT_EQ(0, sivshm_take(e1));

	/* A dup of the owner is the owner: it replaces the eventfd. */
	a2 = dup(a);
	ASSERT_GE(a2, 0);
	ASSERT_EQ(0, sivshm_bind(a2, e1, 0));
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(1, sivshm_wait_take(e1, 5000));
	EXPECT_EQ(0, sivshm_take(e0));

	/* The owner removes it; then removing an unbound vector succeeds for anybody. */
	EXPECT_EQ(0, sivshm_bind(a, -1, 0));
	EXPECT_EQ(0, sivshm_bind(b, -1, 0));
	/* Now b owns the vector, and a is the one refused. */
	ASSERT_EQ(0, sivshm_bind(b, e0, 0));
	EXPECT_EQ(-EBUSY, sivshm_bind(a, e1, 0));
	EXPECT_EQ(-EBUSY, sivshm_bind(a2, -1, 0));
	/* Closing the owner frees the vector for the others. */
	close(b);
	ASSERT_EQ(0, sivshm_bind(a, e1, 0));
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(1, sivshm_wait_take(e1, 5000));
	EXPECT_EQ(0, sivshm_take(e0)) TH_LOG("the closed file's binding fired");

	/* Closing one of two descriptors of the owner keeps the binding ... */
	close(a);
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(1, sivshm_wait_take(e1, 5000));
	/* ... closing the last releases it: the interrupt arrives and signals nobody. */
	close(a2);
	ASSERT_EQ(n, sivshm_irq_counts(self->bdf, before, n));
	ASSERT_EQ(0, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(1, wait_irqs(self->bdf, before, n, 0, 1));
	EXPECT_EQ(0, sivshm_take(e1));
	EXPECT_EQ(0, sivshm_bind(self->fd, e0, 0));
}

/*
 * Ringing and binding act on the device and need a file opened for writing
 * (EBADF, as write() answers); a read-only file may still ask GET_INFO and
 * map the memory read-only. A write-only file may ring and bind.
 */
TEST_F(db, read_only_file_cannot_ring_or_bind_but_may_query_and_map)
{
	uint64_t before[SIVSHM_MAX_VECTORS], after[SIVSHM_MAX_VECTORS];
	unsigned int v, n = self->info.nr_vectors;
	struct sivshm_info info;
	volatile uint8_t *m;
	char path[32];
	int ro, wo;

	node_path(&self->info, path, sizeof(path));
	ro = open(path, O_RDONLY);
	ASSERT_GE(ro, 0);
	ASSERT_EQ(0, sivshm_get_info(ro, &info));
	EXPECT_EQ(0, memcmp(&info, &self->info, sizeof(info)));
	m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, ro, 0);
	ASSERT_NE(MAP_FAILED, (void *)m);
	(void)m[0];
	munmap((void *)m, 4096);

	ASSERT_EQ(n, sivshm_irq_counts(self->bdf, before, n));
	EXPECT_EQ(-EBADF, sivshm_ring(ro, self->info.peer_id, 0));
	EXPECT_EQ(-EBADF, sivshm_bind(ro, self->efd[0], 0));
	EXPECT_EQ(-EBADF, sivshm_bind(ro, -1, 0));
	usleep(200000);
	ASSERT_EQ(n, sivshm_irq_counts(self->bdf, after, n));
	for (v = 0; v < n; v++)
		EXPECT_EQ(before[v], after[v]) TH_LOG("vector %u was interrupted", v);
	/* The refused bind bound nothing: the vector is free for another file. */
	EXPECT_EQ(0, sivshm_bind(self->fd, self->efd[1], 0));
	EXPECT_EQ(0, sivshm_bind(self->fd, -1, 0));

	wo = open(path, O_WRONLY);
	ASSERT_GE(wo, 0);
	EXPECT_EQ(0, sivshm_bind(wo, self->efd[0], 0));
	EXPECT_EQ(0, sivshm_ring(wo, self->info.peer_id, 0));
	EXPECT_EQ(1, sivshm_wait_take(self->efd[0], 5000));
	close(wo);
	close(ro);
}

/*
 * The node has no poll: poll() reports such a file always ready (the VFS's
 * DEFAULT_POLLMASK), which says nothing, and epoll refuses it (EPERM). The
 * bound eventfds are what to wait on: epoll_wait() on one sleeps until the
 * interrupt, here a ring from another process.
 */
/*
 * The node polls nothing while the device is bound (so it can sit in an
 * epoll set beside the eventfds without waking it), and interrupts arrive
 * on the bound eventfd only.
 */
TEST_F(db, node_polls_nothing_while_bound_and_a_bound_eventfd_wakes)
{
	struct epoll_event ev = { .events = EPOLLIN }, out;
	struct pollfd pfd = { .fd = self->fd, .events = POLLIN | POLLOUT };
	int ep = epoll_create1(EPOLL_CLOEXEC), status = 0;
	pid_t child;

	ASSERT_GE(ep, 0);
	ev.data.fd = self->fd;
	ASSERT_EQ(0, epoll_ctl(ep, EPOLL_CTL_ADD, self->fd, &ev));
	EXPECT_EQ(0, poll(&pfd, 1, 0));
	EXPECT_EQ(0, pfd.revents);

	ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[1], 1));
	ev.data.fd = self->efd[1];
	ASSERT_EQ(0, epoll_ctl(ep, EPOLL_CTL_ADD, self->efd[1], &ev));
	EXPECT_EQ(0, epoll_wait(ep, &out, 1, 100)) TH_LOG("ready before any interrupt");
	child = fork();
	ASSERT_GE(child, 0);
	if (child == 0) {
		usleep(300000);
		_exit(sivshm_ring(self->fd, self->info.peer_id, 1) ? 1 : 0);
	}
	ASSERT_EQ(1, epoll_wait(ep, &out, 1, 5000));
	EXPECT_EQ(self->efd[1], out.data.fd) TH_LOG("the node, not the eventfd, woke the set");
	EXPECT_EQ(1, sivshm_take(self->efd[1]));
	EXPECT_EQ(0, epoll_wait(ep, &out, 1, 0));
	ASSERT_EQ(child, waitpid(child, &status, 0));
	EXPECT_EQ(0, status);
	close(ep);
}

/* A reader asleep in a blocking read() of a bound eventfd is woken by the interrupt. */
TEST_F(db, a_blocked_eventfd_reader_wakes_on_an_interrupt)
{
	int efd = eventfd(0, EFD_CLOEXEC), status = 0;
	uint64_t v = 0;
	pid_t child;

	ASSERT_GE(efd, 0);
	ASSERT_EQ(0, sivshm_bind(self->fd, efd, 1));
	child = fork();
	ASSERT_GE(child, 0);
	if (child == 0) {
		usleep(300000);
		_exit(sivshm_ring(self->fd, self->info.peer_id, 1) ? 1 : 0);
	}
	ASSERT_EQ(sizeof(v), read(efd, &v, sizeof(v)));
	EXPECT_EQ(1, v);
	ASSERT_EQ(child, waitpid(child, &status, 0));
	EXPECT_EQ(0, status);
	close(efd);
}

struct poller {
	int efd;
	pid_t tid;
	int ret;
	short revents;
};

static void *poll_eventfd(void *arg)
{
	struct poller *w = arg;
	struct pollfd p = { .fd = w->efd, .events = POLLIN };

	__atomic_store_n(&w->tid, gettid(), __ATOMIC_RELEASE);
	w->ret = poll(&p, 1, 20000);
	w->revents = p.revents;
	return NULL;
}

/*
 * Unbind while a thread waits in poll() on a bound eventfd: every bound
 * eventfd is signalled once more, so the waiter wakes, and its next call on
 * the node learns that the device is gone (ENODEV; unknown numbers stay
 * ENOTTY). The bindings are released: after a rebind the new device signals
 * none of the old eventfds, and their vectors are free.
 */
TEST_F_TIMEOUT(db, unbind_wakes_a_poller_of_a_bound_eventfd_then_calls_get_enodev, 60)
{
	struct poller w = { .efd = self->efd[0] };
	struct pollfd pn = { .events = POLLIN };
	uint64_t before[SIVSHM_MAX_VECTORS];
	unsigned int n = self->info.nr_vectors;
	struct sivshm_info info;
	uint8_t arg[sizeof(struct sivshm_info)] = { 0 };
	char path[32];
	pthread_t t;
	int other, fd;

	node_path(&self->info, path, sizeof(path));
	other = open(path, O_RDWR);
	ASSERT_GE(other, 0);
	pn.fd = other;
	ASSERT_EQ(0, sivshm_bind(self->fd, self->efd[0], 0));
	ASSERT_EQ(0, sivshm_bind(other, self->efd[1], 1));
	ASSERT_EQ(0, pthread_create(&t, NULL, poll_eventfd, &w));
	while (!__atomic_load_n(&w.tid, __ATOMIC_ACQUIRE))
		usleep(1000);
	ASSERT_EQ(0, sivshm_wait_until_sleeping(w.tid)) TH_LOG("the poller never blocked");
	ASSERT_EQ(0, unbind_device(self->bdf));
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(1, w.ret) TH_LOG("poll() returned %d: the waiter was not woken", w.ret);
	EXPECT_EQ(POLLIN, w.revents & POLLIN);
	/* Signalled exactly once, and the other file's binding too. */
	EXPECT_EQ(1, sivshm_take(self->efd[0]));
	EXPECT_EQ(1, sivshm_take(self->efd[1]));

	EXPECT_EQ(-ENODEV, sivshm_get_info(self->fd, &info));
	EXPECT_EQ(-ENODEV, sivshm_get_info(other, &info));
	/* The node now polls hang-up and error, at once and for good. */
	EXPECT_EQ(1, poll(&pn, 1, 0));
	EXPECT_EQ(POLLHUP | POLLERR, pn.revents);
	EXPECT_EQ(-ENODEV, sivshm_ring(self->fd, self->info.peer_id, 0));
	EXPECT_EQ(-ENODEV, sivshm_bind(self->fd, self->efd[0], 0));
	EXPECT_EQ(-ENODEV, sivshm_bind(self->fd, -1, 0));
	EXPECT_EQ(-1, ioctl(self->fd, _IO(SIVSHM_IOCTL_TYPE, 0x7f), arg));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IO(SIVSHM_IOCTL_TYPE, 0x00), arg));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(MAP_FAILED, mmap(NULL, 4096, PROT_READ, MAP_SHARED, self->fd, 0));
	EXPECT_EQ(ENODEV, errno);

	fd = rebind_device(self->bdf, &info);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(self->info.nr_vectors, info.nr_vectors);
	EXPECT_EQ(self->info.peer_id, info.peer_id);
	/* The lowest free index: the one it had. */
	EXPECT_EQ(self->info.index, info.index);
	/* The old bindings are gone, though their files are still open. */
	ASSERT_EQ(n, sivshm_irq_counts(self->bdf, before, n));
	ASSERT_EQ(0, sivshm_ring(fd, info.peer_id, 0));
	EXPECT_EQ(1, wait_irqs(self->bdf, before, n, 0, 1));
	EXPECT_EQ(0, sivshm_take(self->efd[0]));
	ASSERT_EQ(0, sivshm_bind(fd, self->efd[1], 1));
	ASSERT_EQ(0, sivshm_ring(fd, info.peer_id, 1));
	EXPECT_EQ(1, sivshm_wait_take(self->efd[1], 5000));
	close(fd);
	close(other);
}

/* Loads the module again and waits for every expected device. */
static int reload_module(const struct expect *e, int n)
{
	struct sivshm_info info;
	int modfd, i, fd, ret;

	modfd = open(SIVSHM_MODULE_PATH, O_RDONLY | O_CLOEXEC);
	if (modfd < 0)
		return -errno;
	ret = syscall(SYS_finit_module, modfd, "", 0) ? -errno : 0;
	close(modfd);
	for (i = 0; i < n && !ret; i++) {
		fd = wait_for_bdf(e[i].bdf, &info);
		if (fd < 0)
			ret = -ENODEV;
		else
			close(fd);
	}
	return ret;
}

TEST(rmmod_is_refused_while_open_then_reload_works)
{
	struct sivshm_info info;
	struct expect e[8];
	int fd, n;

	n = parse_expect(e, 8);
	ASSERT_GT(n, 0);
	fd = sivshm_open_bdf(e[0].bdf, &info);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(-1, syscall(SYS_delete_module, "sivshm", O_NONBLOCK));
	EXPECT_EQ(EWOULDBLOCK, errno);
	close(fd);
	ASSERT_EQ(0, syscall(SYS_delete_module, "sivshm", O_NONBLOCK)) TH_LOG("rmmod: %s", strerror(errno));
	EXPECT_NE(0, access("/dev/sivshm0", F_OK));
	ASSERT_EQ(0, reload_module(e, n));
}

/*
 * A mapping holds its file, and the file the module: with the descriptor
 * closed and only the mapping left, rmmod is still refused (and the mapping
 * still works); after munmap it succeeds.
 */
TEST(rmmod_is_refused_while_only_a_mapping_is_left)
{
	struct sivshm_info info;
	volatile uint8_t *p;
	struct expect e[8];
	int fd, n;

	n = parse_expect(e, 8);
	ASSERT_GT(n, 0);
	fd = sivshm_open_bdf(e[0].bdf, &info);
	ASSERT_GE(fd, 0);
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, (void *)p);
	close(fd);
	EXPECT_EQ(-1, syscall(SYS_delete_module, "sivshm", O_NONBLOCK));
	EXPECT_EQ(EWOULDBLOCK, errno);
	p[3] = 0x3d;
	EXPECT_EQ(0x3d, p[3]);
	munmap((void *)p, 4096);
	ASSERT_EQ(0, syscall(SYS_delete_module, "sivshm", O_NONBLOCK)) TH_LOG("rmmod: %s", strerror(errno));
	EXPECT_NE(0, access("/dev/sivshm0", F_OK));
	ASSERT_EQ(0, reload_module(e, n));
}

TEST_HARNESS_MAIN
