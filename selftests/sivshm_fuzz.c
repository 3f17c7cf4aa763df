// SPDX-License-Identifier: GPL-2.0
/*
 * sivshm_fuzz: random, concurrent use of every entry point of the sivshm
 * driver, checked against the results Documentation/uapi.rst promises.
 *
 *   sivshm_fuzz [--seed N] [--ops N] [--seconds N] [--threads N] [--chaos]
 *   sivshm_fuzz --lifecycle CYCLES [--seed N]
 *
 * Fuzz mode: each thread runs a seeded random sequence of open/close (every
 * access mode, O_NONBLOCK), mmap/munmap/mremap/mprotect/madvise/msync over
 * random offsets and lengths, accesses to its mappings, fork with live
 * mappings (the child touches them), /proc/self/mem reads of a mapping,
 * copies between the mapping and a tmpfs file or a pipe, page pinning of the
 * mapping (vmsplice, process_vm_readv, a shared futex), ioctls with random
 * numbers, sizes and argument bytes, read()/write() on the node, eventfds
 * bound and then closed while bound, and doorbell rings; a signal thread
 * interrupts the workers all along. With --chaos a thread unbinds and binds
 * the devices through sysfs and tries rmmod and insmod meanwhile.
 *
 * Every call's result is compared with the set the UAPI documents for what
 * the call asked. Where a concurrent unbind may have revoked the file, the
 * answers of a revoked file (ENODEV; on touch, the driver's stand-in page)
 * are also accepted, and only then. No SIGBUS handler is installed: a removal
 * must never raise one, and one that does ends the fuzzer (a failure). The seed is printed; the same seed replays every thread's
 * sequence of calls (the interleaving of threads is the scheduler's).
 *
 * Lifecycle mode: CYCLES rounds of unbind and bind with mappings live, a
 * reader blocked in read() on an eventfd bound to every vector and rmmod
 * attempts with files open; every tenth round (and the last) all is closed
 * and the module unloaded and loaded again.
 *
 * Output is TAP; the exit code is 0 only if every check passed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sivshm_lib.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

#define DRIVER_DIR "/sys/bus/pci/drivers/sivshm"
#define MODULE_PATH "/lib/modules/sivshm.ko"
#define MAX_DEVS 8
#define MAX_THREADS 8
#define MAX_FILES 6
#define MAX_MAPS 8
#define MAX_EFDS 4
#define PAGE 4096UL

struct fz_dev {
	char bdf[24];
	uint64_t size;
	uint32_t vectors;
	bool doorbell;
};

static struct fz_dev devs[MAX_DEVS];
static int ndevs;

/* Options. */
static uint64_t seed;
static long max_ops = 5000, max_seconds = 30, nthreads = 4, lifecycle;
static bool chaos;

/*
 * Bumped before and after every unbind, rebind, rmmod or insmod: odd while
 * one is in progress. A file opened at an even epoch that is still the
 * current one cannot have been revoked.
 */
static atomic_uint epoch_private;
/*
 * In a page shared with fork children, so that a child sees the unbinds that happen while it
 * runs (main() points it there before any thread starts).
 */
static atomic_uint *epoch_p = &epoch_private;

/*
 * Whether the kernel has madvise() (CONFIG_ADVISE_SYSCALLS) and process_vm_readv()
 * (CONFIG_CROSS_MEMORY_ATTACH): tinyconfig has neither; without them every call is ENOSYS.
 */
static bool have_madvise, have_process_vm;
static atomic_long ops_done, failures, touches_after_revocation, signals_seen;
static atomic_bool stop;
static struct timespec t_start;

/* --- helpers ------------------------------------------------------------ */

static double since_start(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t_start.tv_sec) + (t.tv_nsec - t_start.tv_nsec) / 1e9;
}

static bool may_be_dead(unsigned int e0)
{
	return (e0 & 1) || atomic_load(epoch_p) != e0;
}

static void fail(const char *fmt, ...)
{
	va_list ap;

	if (atomic_fetch_add(&failures, 1) >= 100)
		return;
	va_start(ap, fmt);
	printf("# UNEXPECTED: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	fflush(stdout);
}

static bool is_bound(const char *bdf)
{
	char path[400];

	snprintf(path, sizeof(path), DRIVER_DIR "/%s", bdf);
	return !access(path, F_OK);
}

static int insmod(void)
{
	int fd = open(MODULE_PATH, O_RDONLY | O_CLOEXEC), ret;

	if (fd < 0)
		return -errno;
	ret = syscall(SYS_finit_module, fd, "", 0) ? -errno : 0;
	close(fd);
	return ret;
}

static int rmmod(void)
{
	return syscall(SYS_delete_module, "sivshm", O_NONBLOCK) ? -errno : 0;
}

/* Waits up to 10 s until every device is bound again. */
static bool all_bound(void)
{
	int i, tries;

	for (tries = 0; tries < 1000; tries++) {
		for (i = 0; i < ndevs && is_bound(devs[i].bdf); i++)
			;
		if (i == ndevs)
			return true;
		usleep(10000);
	}
	return false;
}

/* Finds every /dev/sivshmN and what it is. */
static int discover(void)
{
	struct sivshm_info info;
	char path[32];
	int i, fd;

	for (i = 0; i < 64 && ndevs < MAX_DEVS; i++) {
		snprintf(path, sizeof(path), "/dev/sivshm%d", i);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (!sivshm_get_info(fd, &info)) {
			sivshm_bdf(&info, devs[ndevs].bdf, sizeof(devs[ndevs].bdf));
			devs[ndevs].size = info.shm_size;
			devs[ndevs].vectors = info.nr_vectors;
			devs[ndevs].doorbell = info.flags & SIVSHM_INFO_F_DOORBELL;
			ndevs++;
		}
		close(fd);
	}
	return ndevs;
}

/* Opens the node of @bdf (looked up by GET_INFO); -errno if there is none. */
static int open_bdf(const char *bdf, int flags, struct sivshm_info *info)
{
	char path[32], name[24];
	int i, fd, last = -ENOENT;

	for (i = 0; i < 64; i++) {
		snprintf(path, sizeof(path), "/dev/sivshm%d", i);
		fd = open(path, flags | O_CLOEXEC);
		if (fd < 0) {
			if (errno != ENOENT)
				last = -errno;
			continue;
		}
		if (!sivshm_get_info(fd, info)) {
			sivshm_bdf(info, name, sizeof(name));
			if (!strcmp(name, bdf))
				return fd;
		}
		close(fd);
	}
	return last;
}

/* --- faults ------------------------------------------------------------- */

static __thread sigjmp_buf fault_jmp;
static __thread volatile int fault_armed;

static void on_fault(int sig)
{
	if (!fault_armed) {
		/* A fault outside a probe: die of it, so that it is seen. */
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	siglongjmp(fault_jmp, sig);
}

static void on_usr1(int sig)
{
	(void)sig;
	atomic_fetch_add(&signals_seen, 1);
}

/*
 * Reads (or, with @write, writes @val to) @len bytes at @p; returns the
 * signal it raised, or 0.
 */
static int probe(volatile uint8_t *p, size_t len, bool write, uint8_t val)
{
	volatile uint64_t sum = 0;
	int sig;
	size_t i;

	sig = sigsetjmp(fault_jmp, 1);
	if (!sig) {
		fault_armed = 1;
		for (i = 0; i < len; i++) {
			if (write)
				p[i] = val;
			else
				sum += p[i];
		}
	}
	fault_armed = 0;
	return sig;
}

/* Copies @n bytes to @dst, which may be a mapping revoked meanwhile; returns the signal, or 0. */
static int copy_in(volatile uint8_t *dst, const uint8_t *src, size_t n)
{
	int sig;
	size_t i;

	sig = sigsetjmp(fault_jmp, 1);
	if (!sig) {
		fault_armed = 1;
		for (i = 0; i < n; i++)
			dst[i] = src[i];
	}
	fault_armed = 0;
	return sig;
}

/* --- per-thread state ---------------------------------------------------- */

struct ffile {
	int fd;
	int mode;		/* O_RDONLY, O_WRONLY or O_RDWR */
	unsigned int epoch;	/* at open */
	bool known;		/* info valid (GET_INFO answered at open) */
	struct sivshm_info info;
};

struct fmap {
	uint8_t *addr;
	size_t len;
	int prot;
	bool file_writable;
	bool dontfork;
	unsigned int epoch;	/* of its file */
};

enum op {
	OP_OPEN, OP_CLOSE, OP_MMAP, OP_MUNMAP, OP_MREMAP, OP_MPROTECT, OP_MADVISE, OP_MSYNC,
	OP_TOUCH, OP_FORK, OP_PROCMEM, OP_PIN, OP_COPY, OP_IOCTL, OP_RW, OP_BIND, OP_RING,
	OP_EFD, NR_OPS
};

static const char *const op_name[NR_OPS] = {
	"open", "close", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync",
	"touch", "fork", "procmem", "pin", "copy", "ioctl", "rw", "bind", "ring", "eventfd",
};

static const int op_weight[NR_OPS] = {
	[OP_OPEN] = 10, [OP_CLOSE] = 5, [OP_MMAP] = 12, [OP_MUNMAP] = 4, [OP_MREMAP] = 4,
	[OP_MPROTECT] = 4, [OP_MADVISE] = 5, [OP_MSYNC] = 3, [OP_TOUCH] = 12, [OP_FORK] = 1,
	[OP_PROCMEM] = 2, [OP_PIN] = 3, [OP_COPY] = 3, [OP_IOCTL] = 16, [OP_RW] = 3,
	[OP_BIND] = 8, [OP_RING] = 5, [OP_EFD] = 2,
};

static atomic_long op_count[NR_OPS];

struct thr {
	int id;
	pthread_t pt;
	pid_t tid;
	uint64_t rng;
	long n;			/* ops done by this thread */
	struct ffile f[MAX_FILES];
	int nf;
	struct fmap m[MAX_MAPS];
	int nm;
	int efd[MAX_EFDS];
	int tmpfd, pipefd[2], memfd;
	uint8_t *guard;		/* two pages: read-write, then PROT_NONE */
	uint8_t *rdonly;	/* one read-only page */
};

static struct thr thr[MAX_THREADS];

static uint64_t rnd(struct thr *t)
{
	return sivshm_prng(&t->rng);
}

static uint64_t below(struct thr *t, uint64_t n)
{
	return n ? rnd(t) % n : 0;
}

static bool chance(struct thr *t, int percent)
{
	return below(t, 100) < (uint64_t)percent;
}

#define CHECK(t, cond, ...)						\
	do {								\
		if (!(cond))						\
			fail("thread %d op %ld: " __VA_ARGS__);		\
	} while (0)

/* A result against the live answer @live and, if the file may be revoked, @dead too. */
static void expect_err(struct thr *t, const char *what, int got, int live, int dead, bool maybe_dead)
{
	if (got == live || (maybe_dead && got == dead))
		return;
	fail("thread %d op %ld: %s: got %d (%s), wanted %d%s%d", t->id, t->n, what, got,
	     got < 0 ? strerror(-got) : "ok", live, maybe_dead ? " or " : "", maybe_dead ? dead : 0);
}

static struct ffile *pick_file(struct thr *t)
{
	return t->nf ? &t->f[below(t, t->nf)] : NULL;
}

static struct fmap *pick_map(struct thr *t)
{
	return t->nm ? &t->m[below(t, t->nm)] : NULL;
}

static void drop_map(struct thr *t, struct fmap *m)
{
	*m = t->m[--t->nm];
}

/* --- operations ----------------------------------------------------------- */

static void do_close(struct thr *t, struct ffile *f)
{
	CHECK(t, close(f->fd) == 0, "close: %s", t->id, t->n, strerror(errno));
	*f = t->f[--t->nf];
}

static void do_open(struct thr *t)
{
	static const int modes[] = { O_RDWR, O_RDWR, O_RDONLY, O_WRONLY };
	struct ffile *f;
	struct fz_dev *d = &devs[below(t, ndevs)];
	int mode = modes[below(t, 4)], flags = mode;
	unsigned int e0 = atomic_load(epoch_p);
	int fd, r;

	if (t->nf == MAX_FILES)
		do_close(t, pick_file(t));
	if (chance(t, 30))
		flags |= O_NONBLOCK;
	f = &t->f[t->nf];
	fd = open_bdf(d->bdf, flags, &f->info);
	if (fd < 0) {
		/* The node is gone (unbind, rmmod) or going (ENODEV from open). */
		if (!may_be_dead(e0) || (fd != -ENOENT && fd != -ENODEV))
			fail("thread %d op %ld: open %s: %s", t->id, t->n, d->bdf, strerror(-fd));
		return;
	}
	/* open_bdf() found it with an O_RDWR-capable GET_INFO; GET_INFO works in any mode. */
	f->fd = fd;
	f->mode = mode;
	f->epoch = e0;
	f->known = true;
	r = sivshm_get_info(fd, &f->info);
	if (r) {
		expect_err(t, "GET_INFO after open", r, 0, -ENODEV, may_be_dead(e0));
		f->known = false;
	} else if (f->info.shm_size != d->size || f->info.nr_vectors != d->vectors ||
		   f->info.argsz != sizeof(struct sivshm_info) || f->info.__pad0 || f->info.__pad1) {
		fail("thread %d op %ld: GET_INFO of %s: size %llu vectors %u argsz %u", t->id, t->n,
		     d->bdf, (unsigned long long)f->info.shm_size, f->info.nr_vectors,
		     f->info.argsz);
	}
	t->nf++;
}

static void do_mmap(struct thr *t)
{
	struct ffile *f = pick_file(t);
	int kind = below(t, 10), prot, flags = MAP_SHARED, want, r;
	uint64_t size, pages, off, len;
	bool driver_level = true, maybe_dead;
	void *p;

	if (!f || t->nm == MAX_MAPS)
		return;
	size = f->known ? f->info.shm_size : 1 << 20;
	pages = size / PAGE;
	off = below(t, pages) * PAGE;
	len = (1 + below(t, (pages - off / PAGE) < 64 ? pages - off / PAGE : 64)) * PAGE;
	if (chance(t, 10))
		len = size - off;
	prot = PROT_READ | (f->mode == O_RDONLY || chance(t, 20) ? 0 : PROT_WRITE);
	want = 0;
	switch (kind) {
	case 6: /* beyond the BAR */
		len = size - off + (1 + below(t, 16)) * PAGE;
		want = -EINVAL;
		break;
	case 7:
		flags = MAP_PRIVATE;
		want = -EINVAL;
		break;
	case 8:
		prot |= PROT_EXEC;
		want = -EPERM;
		break;
	case 9:
		switch (below(t, 3)) {
		case 0:
			len = 0;
			want = -EINVAL;
			driver_level = false;
			break;
		case 1:
			off += 1 + below(t, PAGE - 1);
			want = -EINVAL;
			driver_level = false;
			break;
		default:
			/* Wraps around 2^64: the mm core refuses it. */
			off = (UINT64_MAX & ~(PAGE - 1)) - below(t, 4) * PAGE;
			len = 64 * PAGE;
			want = -EOVERFLOW;
			driver_level = false;
			break;
		}
		break;
	}
	/* The mm core checks the file's mode before the driver sees the call. */
	if (driver_level && (f->mode == O_WRONLY || (flags == MAP_SHARED &&
						    (prot & PROT_WRITE) && f->mode == O_RDONLY)))
		want = -EACCES;
	if (driver_level && !f->known && want == 0)
		want = -ENODEV;
	p = mmap(NULL, len, prot, flags, f->fd, off);
	r = p == MAP_FAILED ? -errno : 0;
	/* After the call: an unbind that began during it bumped the epoch before it began. */
	maybe_dead = may_be_dead(f->epoch);
	if (r == 0 && want != 0 && !(maybe_dead && want == -ENODEV)) {
		fail("thread %d op %ld: mmap kind %d off %#llx len %#llx prot %d mode %d succeeded, wanted %d",
		     t->id, t->n, kind, (unsigned long long)off, (unsigned long long)len, prot, f->mode,
		     want);
		munmap(p, len);
		return;
	}
	expect_err(t, "mmap", r, want, driver_level && (want == 0 || want == -EINVAL ||
					want == -EPERM) ? -ENODEV : want, maybe_dead);
	if (r == 0) {
		struct fmap *m = &t->m[t->nm++];

		m->addr = p;
		m->len = len;
		m->prot = prot;
		m->file_writable = f->mode != O_RDONLY;
		m->dontfork = false;
		m->epoch = f->epoch;
	}
}

static void do_munmap(struct thr *t)
{
	struct fmap *m = pick_map(t);
	size_t keep;

	if (!m)
		return;
	keep = below(t, m->len / PAGE) * PAGE;
	CHECK(t, munmap(m->addr + keep, m->len - keep) == 0, "munmap: %s", t->id, t->n,
	      strerror(errno));
	if (!keep)
		drop_map(t, m);
	else
		m->len = keep;
}

static void do_mremap(struct thr *t)
{
	struct fmap *m = pick_map(t);
	void *p, *target;
	size_t nlen;

	if (!m)
		return;
	switch (below(t, 5)) {
	case 0: /* shrink in place */
		if (m->len <= PAGE)
			return;
		nlen = (1 + below(t, m->len / PAGE - 1)) * PAGE;
		p = mremap(m->addr, m->len, nlen, 0);
		CHECK(t, p == m->addr, "mremap shrink: %s", t->id, t->n, strerror(errno));
		if (p == m->addr)
			m->len = nlen;
		break;
	case 1: /* grow: never for this mapping */
		nlen = m->len + (1 + below(t, 4)) * PAGE;
		p = mremap(m->addr, m->len, nlen, chance(t, 50) ? MREMAP_MAYMOVE : 0);
		if (p != MAP_FAILED) {
			fail("thread %d op %ld: mremap grew a sivshm mapping", t->id, t->n);
			munmap(p, nlen);
			drop_map(t, m);
			return;
		}
		expect_err(t, "mremap grow", -errno, -EFAULT, -EFAULT, false);
		break;
	case 2: /* move elsewhere, same size: the page tables move with it */
		target = mmap(NULL, m->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (target == MAP_FAILED)
			return;
		p = mremap(m->addr, m->len, m->len, MREMAP_MAYMOVE | MREMAP_FIXED, target);
		if (p == MAP_FAILED) {
			expect_err(t, "mremap move", -errno, 0, 0, false);
			munmap(target, m->len);
			return;
		}
		m->addr = p;
		break;
	case 3: /* move and keep the old range: not for VM_PFNMAP */
		p = mremap(m->addr, m->len, m->len, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
		if (p != MAP_FAILED) {
			fail("thread %d op %ld: mremap(MREMAP_DONTUNMAP) of a sivshm mapping worked",
			     t->id, t->n);
			munmap(p, m->len);
			return;
		}
		expect_err(t, "mremap dontunmap", -errno, -EINVAL, -EINVAL, false);
		break;
	default: /* duplicate (old size 0): a growth, refused */
		p = mremap(m->addr, 0, PAGE, MREMAP_MAYMOVE);
		if (p != MAP_FAILED) {
			fail("thread %d op %ld: mremap duplicated a sivshm mapping", t->id, t->n);
			munmap(p, PAGE);
			return;
		}
		expect_err(t, "mremap duplicate", -errno, -EFAULT, -EFAULT, false);
		break;
	}
}

static void do_mprotect(struct thr *t)
{
	static const int prots[] = { PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE,
				     PROT_READ | PROT_EXEC };
	struct fmap *m = pick_map(t);
	int prot = prots[below(t, 4)], want = 0, r;

	if (!m)
		return;
	if ((prot & PROT_EXEC) || ((prot & PROT_WRITE) && !m->file_writable))
		want = -EACCES;
	r = mprotect(m->addr, m->len, prot) ? -errno : 0;
	expect_err(t, "mprotect", r, want, want, false);
	if (!r)
		m->prot = prot;
}

struct advice {
	int advice;
	const char *name;
	int want;	/* for a mapping of a file opened for writing */
};

/* What the mm core answers for a VM_IO | VM_PFNMAP shared file mapping. */
static const struct advice advices[] = {
	{ MADV_NORMAL, "NORMAL", 0 },
	{ MADV_RANDOM, "RANDOM", 0 },
	{ MADV_SEQUENTIAL, "SEQUENTIAL", 0 },
	{ MADV_WILLNEED, "WILLNEED", 0 },
	{ MADV_DONTNEED, "DONTNEED", -EINVAL },
	{ MADV_FREE, "FREE", -EINVAL },
	{ MADV_REMOVE, "REMOVE", -ENODEV },
	{ MADV_DONTFORK, "DONTFORK", 0 },
	{ MADV_DOFORK, "DOFORK", -EINVAL },
	{ MADV_DONTDUMP, "DONTDUMP", 0 },
	{ MADV_DODUMP, "DODUMP", -EINVAL },
	{ MADV_COLD, "COLD", -EINVAL },
	{ MADV_PAGEOUT, "PAGEOUT", -EINVAL },
	{ MADV_WIPEONFORK, "WIPEONFORK", -EINVAL },
	{ MADV_KEEPONFORK, "KEEPONFORK", 0 },
	/*
	 * Population goes through get_user_pages, which refuses VM_IO | VM_PFNMAP; madvise
	 * reports that as EINVAL (madvise(2); measured on the KASAN kernel, which has madvise).
	 */
	{ MADV_POPULATE_READ, "POPULATE_READ", -EINVAL },
	{ MADV_POPULATE_WRITE, "POPULATE_WRITE", -EINVAL },
	{ MADV_GUARD_INSTALL, "GUARD_INSTALL", -EINVAL },
	{ MADV_HUGEPAGE, "HUGEPAGE", -EINVAL },
	{ MADV_MERGEABLE, "MERGEABLE", -EINVAL },
};

static void do_madvise(struct thr *t)
{
	const struct advice *a = &advices[below(t, sizeof(advices) / sizeof(advices[0]))];
	struct fmap *m = pick_map(t);
	size_t off, len;
	int r, want = a->want;

	if (!m)
		return;
	off = below(t, m->len / PAGE) * PAGE;
	len = (1 + below(t, (m->len - off) / PAGE)) * PAGE;
	if (a->advice == MADV_REMOVE && !m->file_writable)
		want = -EACCES;
	if (!have_madvise)
		want = -ENOSYS;
	r = madvise(m->addr + off, len, a->advice) ? -errno : 0;
	if (r != want)
		fail("thread %d op %ld: madvise(%s) on a mapping (file %s, prot %d): %d (%s), wanted %d",
		     t->id, t->n, a->name, m->file_writable ? "rw" : "ro", m->prot, r,
		     r ? strerror(-r) : "ok", want);
	/* A partial DONTFORK splits the vma; track the whole mapping only. */
	if (!r && a->advice == MADV_DONTFORK && off == 0 && len == m->len)
		m->dontfork = true;
	else if (!r && a->advice == MADV_DONTFORK)
		m->dontfork = true;	/* at least part of it: the child must not touch it */
}

static void do_msync(struct thr *t)
{
	struct fmap *m = pick_map(t);
	int flags, want = 0, r;
	size_t off, len;

	if (!m)
		return;
	off = below(t, m->len / PAGE) * PAGE;
	len = (1 + below(t, (m->len - off) / PAGE)) * PAGE;
	switch (below(t, 4)) {
	case 0:
		flags = MS_ASYNC;
		break;
	case 1:
		/*
		 * The node has no fsync: EINVAL, where the mm core asks for it, for a writable
		 * shared mapping (a read-only file's has VM_MAYSHARE without VM_SHARED).
		 */
		flags = MS_SYNC;
		want = m->file_writable ? -EINVAL : 0;
		break;
	case 2:
		flags = MS_INVALIDATE;
		break;
	default:
		flags = MS_SYNC | MS_ASYNC;
		want = -EINVAL;
		break;
	}
	r = msync(m->addr + off, len, flags) ? -errno : 0;
	expect_err(t, "msync", r, want, want, false);
}

static void do_touch(struct thr *t)
{
	struct fmap *m = pick_map(t);
	size_t off, len;
	bool write;
	int sig;

	if (!m || !(m->prot & PROT_READ))
		return;
	off = below(t, m->len);
	len = 1 + below(t, m->len - off < 256 ? m->len - off : 256);
	write = (m->prot & PROT_WRITE) && chance(t, 50);
	sig = probe(m->addr + off, len, write, rnd(t));
	if (may_be_dead(m->epoch))
		atomic_fetch_add(&touches_after_revocation, 1);
	CHECK(t, sig == 0, "touch %s at +%#zx of a mapping of %#zx: signal %d", t->id, t->n,
	      write ? "write" : "read", off, m->len, sig);
}

static void do_fork(struct thr *t)
{
	int status, i, sig, bad = 0, r;
	struct sivshm_info info;
	pid_t pid;

	pid = fork();
	if (pid < 0) {
		fail("thread %d op %ld: fork: %s", t->id, t->n, strerror(errno));
		return;
	}
	if (!pid) {
		for (i = 0; i < t->nm; i++) {
			struct fmap *m = &t->m[i];

			if (!(m->prot & PROT_READ))
				continue;
			sig = probe(m->addr, 1, false, 0);
			if (m->dontfork) {
				/* Not inherited (if all of it was advised): SIGSEGV or still there. */
				continue;
			}
			/* Revoked or not, an inherited mapping never faults. */
			if (sig) {
				bad = 10 + sig;
				break;
			}
			if (m->prot & PROT_WRITE) {
				sig = probe(m->addr + m->len - 1, 1, true, 0x5a);
				if (sig) {
					bad = 80 + sig;
					break;
				}
			}
		}
		for (i = 0; i < t->nf && !bad; i++) {
			r = sivshm_get_info(t->f[i].fd, &info);
			if (r && !(r == -ENODEV && may_be_dead(t->f[i].epoch)))
				bad = 3;
		}
		_exit(bad);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	CHECK(t, WIFEXITED(status) && !WEXITSTATUS(status),
	      "fork: child with %d live mapping(s) ended with status %#x", t->id, t->n, t->nm,
	      status);
}

static void do_procmem(struct thr *t)
{
	struct fmap *m = pick_map(t);
	char buf[64];
	ssize_t r;
	size_t off;

	if (!m)
		return;
	off = below(t, m->len);
	if (chance(t, 70))
		r = pread(t->memfd, buf, 1 + below(t, sizeof(buf)), (off_t)(uintptr_t)(m->addr + off));
	else
		r = pwrite(t->memfd, buf, 1 + below(t, sizeof(buf)),
			   (off_t)(uintptr_t)(m->addr + off));
	expect_err(t, "/proc/self/mem on a mapping", r < 0 ? -errno : (int)r, -EIO, -EIO, false);
}

static void do_pin(struct thr *t)
{
	struct fmap *m = pick_map(t);
	struct iovec local, remote;
	char buf[256];
	size_t off, len;
	long r;

	if (!m || !(m->prot & PROT_READ))
		return;
	off = below(t, m->len);
	len = 1 + below(t, m->len - off < sizeof(buf) ? m->len - off : sizeof(buf));
	switch (below(t, 3)) {
	case 0:
		remote.iov_base = m->addr + off;
		remote.iov_len = len;
		r = vmsplice(t->pipefd[1], &remote, 1, SPLICE_F_NONBLOCK);
		expect_err(t, "vmsplice from a mapping", r < 0 ? -errno : (int)r, -EFAULT, -EFAULT,
			   false);
		break;
	case 1:
		local.iov_base = buf;
		local.iov_len = len;
		remote.iov_base = m->addr + off;
		remote.iov_len = len;
		r = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
		expect_err(t, "process_vm_readv of a mapping", r < 0 ? -errno : (int)r,
			   have_process_vm ? -EFAULT : -ENOSYS, -EFAULT, false);
		break;
	default:
		/* A futex in the shared memory: its key needs the page, which cannot be had. */
		r = syscall(SYS_futex, (uint32_t *)(m->addr + (off & ~3UL)), FUTEX_WAKE, 1, NULL,
			    NULL, 0);
		expect_err(t, "shared futex in a mapping", r < 0 ? -errno : (int)r, -EFAULT,
			   -EFAULT, false);
		break;
	}
}

static void do_copy(struct thr *t)
{
	struct fmap *m = pick_map(t);
	char drain[4096];
	size_t off, len;
	ssize_t r;
	bool dead;

	if (!m || !(m->prot & PROT_READ))
		return;
	off = below(t, m->len);
	len = 1 + below(t, m->len - off < sizeof(drain) ? m->len - off : sizeof(drain));
	/*
	 * Each case judges by the epoch after its call, as the others do: an unbind that
	 * began during the call (and revoked the mapping under the copy) bumped it first.
	 */
	switch (below(t, 3)) {
	case 0:
		r = write(t->pipefd[1], m->addr + off, len);
		dead = may_be_dead(m->epoch);
		/* A pipe may take less than all; a revoked mapping faults in the copy. */
		if (!(r > 0 || (r < 0 && (errno == EAGAIN || (dead && errno == EFAULT)))))
			fail("thread %d op %ld: write(pipe, mapping, %zu): %zd %s", t->id, t->n, len,
			     r, r < 0 ? strerror(errno) : "");
		while (read(t->pipefd[0], drain, sizeof(drain)) > 0)
			;
		break;
	case 1:
		r = pwrite(t->tmpfd, m->addr + off, len, below(t, 1 << 20));
		dead = may_be_dead(m->epoch);
		if (!(r == (ssize_t)len || (dead && ((r < 0 && errno == EFAULT) ||
						     (r >= 0 && r < (ssize_t)len)))))
			fail("thread %d op %ld: pwrite(tmpfs, mapping, %zu): %zd %s", t->id, t->n,
			     len, r, r < 0 ? strerror(errno) : "");
		break;
	default:
		if (!(m->prot & PROT_WRITE))
			return;
		memset(drain, 0x6b, len);
		if (pwrite(t->tmpfd, drain, len, 0) != (ssize_t)len)
			return;
		r = pread(t->tmpfd, m->addr + off, len, 0);
		dead = may_be_dead(m->epoch);
		if (!(r == (ssize_t)len || (dead && ((r < 0 && errno == EFAULT) ||
						     (r >= 0 && r < (ssize_t)len)))))
			fail("thread %d op %ld: pread(tmpfs, into mapping, %zu): %zd %s", t->id,
			     t->n, len, r, r < 0 ? strerror(errno) : "");
		break;
	}
}

/* Random value, mostly small. */
static uint32_t biased(struct thr *t, uint32_t small)
{
	switch (below(t, 10)) {
	case 0:
		return rnd(t);
	case 1:
		return 0xffffffffu - below(t, 3);
	case 2:
		return 0x10000 + below(t, 4);
	default:
		return below(t, small);
	}
}

/* A descriptor for BIND: what it is decides the answer. */
static int bind_fd(struct thr *t, struct ffile *f, int *want)
{
	int e;

	switch (below(t, 7)) {
	case 0:
		*want = 0;
		return -1;
	case 1:
		*want = -EBADF;
		return 100000 + below(t, 1000);
	case 2:
		*want = -EBADF;
		return -2 - (int)below(t, 100);
	case 3:
		*want = -EINVAL;
		return t->tmpfd;
	case 4:
		*want = -EINVAL;
		return f->fd;
	default:
		e = below(t, MAX_EFDS);
		*want = 0;
		return t->efd[e];
	}
}

enum ptr_kind { PTR_BUF, PTR_NULL, PTR_KERNEL, PTR_GUARD, PTR_RDONLY, PTR_MAP, NR_PTR };

static void do_ioctl(struct thr *t)
{
	struct ffile *f = pick_file(t);
	uint8_t buf[256], *arg;
	struct sivshm_info *info;
	struct sivshm_ring *ring;
	struct sivshm_eventfd *bind;
	int kind = below(t, 6), pk = below(t, NR_PTR), want = 0, dead_want = -ENODEV, r;
	unsigned int map_epoch = 0;
	bool writable, maybe_dead, readable_arg = true, writable_arg = true;
	unsigned long cmd;
	uint32_t type, nr, size;
	unsigned int i;

	if (!f)
		return;
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = rnd(t);
	writable = f->mode != O_RDONLY;
	arg = buf;
	switch (pk) {
	case PTR_NULL:
		arg = NULL;
		readable_arg = writable_arg = false;
		break;
	case PTR_KERNEL:
		arg = (uint8_t *)0xffffffff81000000UL;
		readable_arg = writable_arg = false;
		break;
	case PTR_GUARD:
		/* The struct straddles the end of a page and an inaccessible one. */
		arg = t->guard + PAGE - 8;
		readable_arg = writable_arg = false;
		break;
	case PTR_RDONLY:
		arg = t->rdonly;
		writable_arg = false;
		break;
	case PTR_MAP:
		/* A pointer into a live shared mapping; only if one exists, read-write. */
		for (i = 0; i < (unsigned int)t->nm; i++)
			if ((t->m[i].prot & PROT_WRITE) && t->m[i].len >= 64 &&
			    !may_be_dead(t->m[i].epoch))
				break;
		if (i == (unsigned int)t->nm)
			break;
		arg = t->m[i].addr;
		map_epoch = t->m[i].epoch;
		break;
	}
	info = (struct sivshm_info *)buf;
	ring = (struct sivshm_ring *)buf;
	bind = (struct sivshm_eventfd *)buf;
	switch (kind) {
	case 0:
		cmd = SIVSHM_IOCTL_GET_INFO;
		info->argsz = biased(t, 200);
		break;
	case 1:
		cmd = SIVSHM_IOCTL_RING;
		ring->peer_id = biased(t, 8);
		ring->vector = biased(t, 4);
		ring->flags = chance(t, 85) ? 0 : biased(t, 4);
		ring->__reserved = chance(t, 85) ? 0 : biased(t, 4);
		break;
	case 2:
		cmd = SIVSHM_IOCTL_BIND_EVENTFD;
		bind->fd = bind_fd(t, f, &want);
		bind->vector = biased(t, 4);
		bind->flags = chance(t, 85) ? 0 : biased(t, 4);
		bind->__reserved = chance(t, 85) ? 0 : biased(t, 4);
		break;
	case 3:
		/* The driver's type, an unknown number or a known one with another size or direction. */
		nr = chance(t, 50) ? 3 + below(t, 253) : below(t, 3);
		size = below(t, 1 << 14);
		cmd = _IOC(below(t, 4), SIVSHM_IOCTL_TYPE, nr, size);
		if (cmd == SIVSHM_IOCTL_GET_INFO || cmd == SIVSHM_IOCTL_RING ||
		    cmd == SIVSHM_IOCTL_BIND_EVENTFD)
			return;
		want = -ENOTTY;
		dead_want = -ENOTTY;
		break;
	default:
		/* Anything, but not the types the VFS answers itself (FIONBIO, FICLONE, ...). */
		cmd = (uint32_t)rnd(t);
		type = _IOC_TYPE(cmd);
		if (type == 0 || type == 'T' || type == 'X' || type == 'f' || type == 0x94 ||
		    type == 0x12 || type == 0x15 || type == SIVSHM_IOCTL_TYPE)
			return;
		want = -ENOTTY;
		dead_want = -ENOTTY;
		break;
	}
	/* Put the argument where the pointer points. */
	if (pk == PTR_RDONLY) {
		if (mprotect(t->rdonly, PAGE, PROT_READ | PROT_WRITE))
			return;
		memcpy(t->rdonly, buf, 64);
		mprotect(t->rdonly, PAGE, PROT_READ);
	} else if (pk == PTR_GUARD) {
		memcpy(arg, buf, 8);
	} else if (pk == PTR_MAP && arg != buf) {
		if (copy_in(arg, buf, 64))
			return;
	} else if (pk == PTR_MAP) {
		pk = PTR_BUF;
	}

	/* The driver's order: mode, liveness, argument, then its fields. */
	if (kind == 0) {
		/* argsz, the first 4 bytes, is readable just before the guard page. */
		if (!readable_arg && pk != PTR_GUARD)
			want = -EFAULT;
		else if (info->argsz < SIVSHM_INFO_ARGSZ_V1)
			want = -EINVAL;
		else if (!writable_arg)
			want = -EFAULT;
		else
			want = 0;
	} else if (kind == 1) {
		if (!writable)
			want = dead_want = -EBADF;
		else if (!readable_arg)
			want = -EFAULT;
		else if (ring->flags || ring->__reserved)
			want = -EINVAL;
		else if (!f->known)
			want = -ENODEV;
		else if (!(f->info.flags & SIVSHM_INFO_F_DOORBELL))
			want = -EOPNOTSUPP;
		else if (ring->peer_id > 0xffff || ring->vector >= f->info.nr_vectors)
			want = -EINVAL;
		else
			want = 0;
	} else if (kind == 2) {
		int fd_want = want;

		if (!writable)
			want = dead_want = -EBADF;
		else if (!readable_arg)
			want = -EFAULT;
		else if (bind->flags || bind->__reserved)
			want = -EINVAL;
		else if (!f->known)
			want = -ENODEV;
		else if (!f->info.nr_vectors)
			want = -EOPNOTSUPP;
		else if (bind->vector >= f->info.nr_vectors)
			want = -EINVAL;
		else
			want = fd_want;
	}
	r = ioctl(f->fd, cmd, arg) ? -errno : 0;
	maybe_dead = may_be_dead(f->epoch);
	/* Another file of another thread may own the vector. */
	if (kind == 2 && want == 0 && r == -EBUSY)
		return;
	/* A pointer into a mapping revoked meanwhile faults. */
	if (pk == PTR_MAP && may_be_dead(map_epoch) && r == -EFAULT)
		return;
	/*
	 * Other threads write the same shared memory: an argument there that changed under the
	 * call was not the one the answer is computed for.
	 */
	if (pk == PTR_MAP && r != want) {
		uint8_t now[16];

		/* (A fault here is a revocation, which the checks below allow for.) */
		if (!copy_in(now, arg, sizeof(now)) && memcmp(now, buf, sizeof(now)))
			return;
	}
	if (r != want && !(maybe_dead && r == dead_want))
		fail("thread %d op %ld: ioctl %#lx (ptr kind %d, file mode %d) = %d (%s), wanted %d%s",
		     t->id, t->n, cmd, pk, f->mode, r, r ? strerror(-r) : "ok", want,
		     maybe_dead ? " or the revoked answer" : "");
	if (kind == 0 && r == 0 && arg == buf) {
		uint32_t asz = ((uint32_t *)buf)[0];

		CHECK(t, asz == sizeof(struct sivshm_info), "GET_INFO argsz out %u", t->id, t->n,
		      asz);
	}
}

static void do_rw(struct thr *t)
{
	struct ffile *f = pick_file(t);
	char buf[256];
	struct iovec iov = { .iov_base = buf };
	int rd_want, wr_want;
	ssize_t r;
	size_t len;

	if (!f)
		return;
	len = below(t, sizeof(buf) + 1);
	iov.iov_len = len;
	/* The VFS: no read or write method is EINVAL, a file not opened for it EBADF. */
	rd_want = f->mode == O_WRONLY ? -EBADF : -EINVAL;
	wr_want = f->mode == O_RDONLY ? -EBADF : -EINVAL;
	switch (below(t, 5)) {
	case 0:
		r = read(f->fd, buf, len);
		expect_err(t, "read on the node", r < 0 ? -errno : (int)r, rd_want, rd_want, false);
		break;
	case 1:
		r = write(f->fd, buf, len);
		expect_err(t, "write on the node", r < 0 ? -errno : (int)r, wr_want, wr_want, false);
		break;
	case 2:
		r = pread(f->fd, buf, len, below(t, 1 << 20));
		expect_err(t, "pread on the node", r < 0 ? -errno : (int)r, rd_want, rd_want, false);
		break;
	case 3:
		r = preadv2(f->fd, &iov, 1, -1, chance(t, 50) ? RWF_NOWAIT : RWF_HIPRI);
		expect_err(t, "preadv2 on the node", r < 0 ? -errno : (int)r, rd_want, rd_want,
			   false);
		break;
	default:
		r = pwritev2(f->fd, &iov, 1, -1, chance(t, 50) ? RWF_NOWAIT : RWF_DSYNC);
		expect_err(t, "pwritev2 on the node", r < 0 ? -errno : (int)r, wr_want, wr_want,
			   false);
		break;
	}
}

/* Binds one of our eventfds, sometimes closes it while bound, sometimes rings to fire it. */
static void do_bind(struct thr *t)
{
	struct ffile *f = pick_file(t);
	int e = below(t, MAX_EFDS), r, want = 0;
	uint32_t vector;
	bool maybe_dead;

	if (!f || !f->known || !f->info.nr_vectors || f->mode == O_RDONLY)
		return;
	vector = below(t, f->info.nr_vectors);
	r = sivshm_bind(f->fd, chance(t, 20) ? -1 : t->efd[e], vector);
	maybe_dead = may_be_dead(f->epoch);
	if (r == -EBUSY)
		return;
	expect_err(t, "bind", r, want, -ENODEV, maybe_dead);
	if (r)
		return;
	if (chance(t, 40)) {
		/* The binding keeps the eventfd's context: close our descriptor while bound. */
		close(t->efd[e]);
		t->efd[e] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	}
	if (chance(t, 50)) {
		r = sivshm_ring(f->fd, f->info.peer_id, vector);
		expect_err(t, "ring own vector", r, 0, -ENODEV, may_be_dead(f->epoch));
	}
}

static void do_ring(struct thr *t)
{
	struct ffile *f = pick_file(t);
	int r, want;
	uint32_t peer, vector;

	if (!f || !f->known)
		return;
	/* Ourselves, or any peer id: one the host did not wire is dropped by the hypervisor. */
	peer = chance(t, 60) ? f->info.peer_id : below(t, 0x10000);
	vector = below(t, f->info.nr_vectors + 2);
	if (f->mode == O_RDONLY)
		want = -EBADF;
	else if (!(f->info.flags & SIVSHM_INFO_F_DOORBELL))
		want = -EOPNOTSUPP;
	else if (vector >= f->info.nr_vectors)
		want = -EINVAL;
	else
		want = 0;
	r = sivshm_ring(f->fd, peer, vector);
	expect_err(t, "ring", r, want, want == -EBADF ? -EBADF : -ENODEV, may_be_dead(f->epoch));
}

static void do_efd(struct thr *t)
{
	uint64_t v;
	ssize_t r = read(t->efd[below(t, MAX_EFDS)], &v, sizeof(v));

	if (!(r == sizeof(v) || (r < 0 && errno == EAGAIN)))
		fail("thread %d op %ld: eventfd read: %zd %s", t->id, t->n, r, strerror(errno));
}

static void run_op(struct thr *t, enum op op)
{
	atomic_fetch_add(&op_count[op], 1);
	switch (op) {
	case OP_OPEN: do_open(t); break;
	case OP_CLOSE: if (t->nf) do_close(t, pick_file(t)); break;
	case OP_MMAP: do_mmap(t); break;
	case OP_MUNMAP: do_munmap(t); break;
	case OP_MREMAP: do_mremap(t); break;
	case OP_MPROTECT: do_mprotect(t); break;
	case OP_MADVISE: do_madvise(t); break;
	case OP_MSYNC: do_msync(t); break;
	case OP_TOUCH: do_touch(t); break;
	case OP_FORK: do_fork(t); break;
	case OP_PROCMEM: do_procmem(t); break;
	case OP_PIN: do_pin(t); break;
	case OP_COPY: do_copy(t); break;
	case OP_IOCTL: do_ioctl(t); break;
	case OP_RW: do_rw(t); break;
	case OP_BIND: do_bind(t); break;
	case OP_RING: do_ring(t); break;
	case OP_EFD: do_efd(t); break;
	default: break;
	}
}

static enum op pick_op(struct thr *t)
{
	int total = 0, i, x;

	for (i = 0; i < NR_OPS; i++)
		total += op_weight[i];
	x = below(t, total);
	for (i = 0; i < NR_OPS; i++) {
		x -= op_weight[i];
		if (x < 0)
			return i;
	}
	return OP_TOUCH;
}

static void *fuzz_thread(void *arg)
{
	struct thr *t = arg;
	char path[64];
	int i;

	t->tid = gettid();
	t->rng = seed ^ (0x9e3779b97f4a7c15ULL * (t->id + 1));
	if (!t->rng)
		t->rng = 1;
	for (i = 0; i < MAX_EFDS; i++)
		t->efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	snprintf(path, sizeof(path), "/tmp/fuzz-%d", t->id);
	t->tmpfd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	t->memfd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	if (t->tmpfd < 0 || t->memfd < 0 || pipe2(t->pipefd, O_NONBLOCK | O_CLOEXEC)) {
		fail("thread %d: setup: %s", t->id, strerror(errno));
		return NULL;
	}
	t->guard = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	t->rdonly = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->guard == MAP_FAILED || t->rdonly == MAP_FAILED ||
	    mprotect(t->guard + PAGE, PAGE, PROT_NONE)) {
		fail("thread %d: setup mmap: %s", t->id, strerror(errno));
		return NULL;
	}
	while (!atomic_load(&stop)) {
		if (atomic_fetch_add(&ops_done, 1) >= max_ops || since_start() > max_seconds) {
			atomic_store(&stop, true);
			break;
		}
		t->n++;
		run_op(t, pick_op(t));
	}
	for (i = 0; i < t->nm; i++)
		munmap(t->m[i].addr, t->m[i].len);
	t->nm = 0;
	while (t->nf)
		do_close(t, &t->f[0]);
	for (i = 0; i < MAX_EFDS; i++)
		close(t->efd[i]);
	close(t->tmpfd);
	close(t->memfd);
	close(t->pipefd[0]);
	close(t->pipefd[1]);
	unlink(path);
	return NULL;
}

/* --- chaos ---------------------------------------------------------------- */

static long unbinds, rebinds, rmmod_refused, reloads, insmod_refused;

static void *chaos_thread(void *arg)
{
	uint64_t rng = seed ^ 0xc4a05c4a05ULL;
	int r, i;

	(void)arg;
	while (!atomic_load(&stop)) {
		int what = sivshm_prng(&rng) % 10;
		struct fz_dev *d = &devs[sivshm_prng(&rng) % ndevs];

		atomic_fetch_add(epoch_p, 1);
		if (what < 7) {
			r = sivshm_write_sysfs(DRIVER_DIR "/unbind", d->bdf);
			if (r)
				fail("chaos: unbind %s: %s", d->bdf, strerror(-r));
			else
				unbinds++;
			usleep(sivshm_prng(&rng) % 20000);
			r = sivshm_write_sysfs(DRIVER_DIR "/bind", d->bdf);
			if (r || !is_bound(d->bdf))
				fail("chaos: bind %s: %s", d->bdf, strerror(-r));
			else
				rebinds++;
		} else if (what < 9) {
			r = rmmod();
			if (r == -EWOULDBLOCK) {
				rmmod_refused++;
			} else if (r) {
				fail("chaos: rmmod: %s", strerror(-r));
			} else {
				usleep(sivshm_prng(&rng) % 20000);
				r = insmod();
				if (r)
					fail("chaos: insmod after rmmod: %s", strerror(-r));
				else if (!all_bound())
					fail("chaos: devices missing after insmod");
				else
					reloads++;
			}
		} else {
			r = insmod();
			if (r == -EEXIST)
				insmod_refused++;
			else
				fail("chaos: insmod of a loaded module: %s", r ? strerror(-r) : "ok");
		}
		atomic_fetch_add(epoch_p, 1);
		usleep(1000 + sivshm_prng(&rng) % 30000);
	}
	/* Leave everything as found. */
	for (i = 0; i < ndevs; i++)
		if (!is_bound(devs[i].bdf))
			sivshm_write_sysfs(DRIVER_DIR "/bind", devs[i].bdf);
	return NULL;
}

static void *signal_thread(void *arg)
{
	uint64_t rng = seed ^ 0x516a1ULL;

	(void)arg;
	while (!atomic_load(&stop)) {
		struct thr *t = &thr[sivshm_prng(&rng) % nthreads];

		if (t->tid)
			syscall(SYS_tgkill, getpid(), t->tid, SIGUSR1);
		usleep(200 + sivshm_prng(&rng) % 2000);
	}
	return NULL;
}

/* Every device works after the run: open, info, map, write, read back, ring itself. */
static int final_check(void)
{
	struct sivshm_info info;
	int i, bad = 0;

	for (i = 0; i < ndevs; i++) {
		int fd = open_bdf(devs[i].bdf, O_RDWR, &info), efd;
		volatile uint8_t *p;

		if (fd < 0) {
			printf("# %s: no node after the run\n", devs[i].bdf);
			bad++;
			continue;
		}
		p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED || probe(p, 1, true, 0xa7) || p[0] != 0xa7) {
			printf("# %s: mapping does not work after the run\n", devs[i].bdf);
			bad++;
		}
		if (p != MAP_FAILED)
			munmap((void *)p, PAGE);
		if (devs[i].doorbell && devs[i].vectors) {
			efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
			if (sivshm_bind(fd, efd, 0) || sivshm_ring(fd, info.peer_id, 0) ||
			    !sivshm_wait_take(efd, 5000)) {
				printf("# %s: bind/ring/interrupt does not work after the run\n",
				       devs[i].bdf);
				bad++;
			}
			close(efd);
		}
		close(fd);
	}
	return bad;
}

static int fuzz(void)
{
	pthread_t ct, st;
	long i, before;
	int bad;

	printf("TAP version 13\n1..%d\n", chaos ? 3 : 2);
	printf("# kernel has madvise: %s, process_vm_readv: %s\n", have_madvise ? "yes" : "no (ENOSYS)",
	       have_process_vm ? "yes" : "no (ENOSYS)");
	printf("# seed %llu: replay with sivshm_fuzz --seed %llu --ops %ld --seconds %ld --threads %ld%s\n",
	       (unsigned long long)seed, (unsigned long long)seed, max_ops, max_seconds, nthreads,
	       chaos ? " --chaos" : "");
	fflush(stdout);
	clock_gettime(CLOCK_MONOTONIC, &t_start);
	for (i = 0; i < nthreads; i++) {
		thr[i].id = i;
		pthread_create(&thr[i].pt, NULL, fuzz_thread, &thr[i]);
	}
	if (chaos)
		pthread_create(&ct, NULL, chaos_thread, NULL);
	pthread_create(&st, NULL, signal_thread, NULL);
	for (i = 0; i < nthreads; i++)
		pthread_join(thr[i].pt, NULL);
	atomic_store(&stop, true);
	if (chaos)
		pthread_join(ct, NULL);
	pthread_join(st, NULL);
	if (atomic_load(&ops_done) > max_ops)
		atomic_store(&ops_done, max_ops);
	printf("# %ld operations in %.1f s by %ld threads; %ld signals, %ld touches of mappings "
	       "that may have been revoked (no SIGBUS)\n",
	       atomic_load(&ops_done), since_start(), nthreads, atomic_load(&signals_seen),
	       atomic_load(&touches_after_revocation));
	printf("#");
	for (i = 0; i < NR_OPS; i++)
		printf(" %s %ld", op_name[i], atomic_load(&op_count[i]));
	printf("\n");
	before = atomic_load(&failures);
	printf("%s 1 fuzz: every call of %ld returned a documented result (seed %llu)\n",
	       before ? "not ok" : "ok", atomic_load(&ops_done), (unsigned long long)seed);
	if (chaos) {
		printf("# chaos: %ld unbind/bind, %ld rmmod refused, %ld rmmod+insmod, %ld insmod refused\n",
		       unbinds, rmmod_refused, reloads, insmod_refused);
		printf("%s 2 fuzz: unbind, bind, rmmod and insmod under load answered as documented\n",
		       unbinds > 0 && rebinds == unbinds && rmmod_refused + reloads > 0 ? "ok" :
		       "not ok");
	}
	bad = final_check();
	printf("%s %d fuzz: every device works after the run\n", bad ? "not ok" : "ok",
	       chaos ? 3 : 2);
	return before || bad || (chaos && !(unbinds > 0 && rebinds == unbinds));
}

/* --- lifecycle -------------------------------------------------------------- */

struct reader {
	pthread_t pt;
	int efd;
	atomic_int state;	/* 1 about to read, 2 woke with a count, 3 error */
	uint64_t value;
};

static void *reader_thread(void *arg)
{
	struct reader *r = arg;
	ssize_t n;

	atomic_store(&r->state, 1);
	do
		n = read(r->efd, &r->value, sizeof(r->value));
	while (n < 0 && errno == EINTR);
	atomic_store(&r->state, n == sizeof(r->value) && r->value ? 2 : 3);
	return NULL;
}

struct held {
	int fd, rofd;
	volatile uint8_t *map, *romap;
	size_t len;
	struct reader readers[SIVSHM_MAX_VECTORS];
	unsigned int nreaders;
	uint8_t marker;
};

static int lifecycle_run(void)
{
	static struct held h[MAX_DEVS];
	long c, revoked = 0, restored = 0, refused = 0, reloaded = 0, woken = 0;
	long bad_revoke = 0, bad_restore = 0, bad_module = 0;
	uint64_t rng = seed ? seed : 1;
	struct sivshm_info info;
	int i, r;
	unsigned int v;

	printf("TAP version 13\n1..3\n# seed %llu, %ld cycles\n", (unsigned long long)seed,
	       lifecycle);
	clock_gettime(CLOCK_MONOTONIC, &t_start);
	for (c = 0; c < lifecycle; c++) {
		bool reload = (c + 1) % 10 == 0 || c + 1 == lifecycle;

		for (i = 0; i < ndevs; i++) {
			struct held *x = &h[i];

			memset(x, 0, sizeof(*x));
			x->fd = open_bdf(devs[i].bdf, O_RDWR, &info);
			x->rofd = open_bdf(devs[i].bdf, O_RDONLY, &info);
			if (x->fd < 0 || x->rofd < 0) {
				printf("# cycle %ld: %s cannot be opened\n", c, devs[i].bdf);
				bad_restore++;
				goto out;
			}
			x->len = devs[i].size < (4 << 20) ? devs[i].size : (4 << 20);
			x->map = mmap(NULL, x->len, PROT_READ | PROT_WRITE, MAP_SHARED, x->fd, 0);
			x->romap = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, x->rofd, 0);
			if (x->map == MAP_FAILED || x->romap == MAP_FAILED) {
				printf("# cycle %ld: %s cannot be mapped\n", c, devs[i].bdf);
				bad_restore++;
				goto out;
			}
			x->marker = sivshm_prng(&rng);
			/* Pages faulted in before the unbind, across the fault-around windows. */
			x->map[0] = x->marker;
			x->map[x->len - 1] = x->marker;
			(void)x->romap[0];
			for (v = 0; v < devs[i].vectors; v++) {
				struct reader *rd = &x->readers[v];

				rd->efd = eventfd(0, EFD_CLOEXEC);
				atomic_store(&rd->state, 0);
				if (sivshm_bind(x->fd, rd->efd, v) ||
				    pthread_create(&rd->pt, NULL, reader_thread, rd)) {
					printf("# cycle %ld: %s vector %u: bind failed\n", c,
					       devs[i].bdf, v);
					bad_restore++;
					close(rd->efd);
					break;
				}
				x->nreaders++;
			}
		}
		/* Let the readers block in read(). */
		for (i = 0; i < ndevs; i++)
			for (v = 0; v < h[i].nreaders; v++)
				while (!atomic_load(&h[i].readers[v].state))
					usleep(100);
		usleep(2000);
		r = rmmod();
		if (r == -EWOULDBLOCK)
			refused++;
		else
			bad_module++, printf("# cycle %ld: rmmod with files open: %d\n", c, r);

		for (i = 0; i < ndevs; i++) {
			struct held *x = &h[i];
			int sig, sig_ro, sig_w;
			void *p;

			r = sivshm_write_sysfs(DRIVER_DIR "/unbind", devs[i].bdf);
			if (r) {
				printf("# cycle %ld: unbind %s: %s\n", c, devs[i].bdf, strerror(-r));
				bad_revoke++;
				continue;
			}
			/* Every reader wakes (the driver signals each bound eventfd once more). */
			for (v = 0; v < x->nreaders; v++) {
				struct reader *rd = &x->readers[v];
				int n;

				for (n = 0; n < 1000 && atomic_load(&rd->state) < 2; n++)
					usleep(5000);
				if (atomic_load(&rd->state) == 2) {
					woken++;
					pthread_join(rd->pt, NULL);
				} else {
					printf("# cycle %ld: %s vector %u: reader not woken by unbind\n",
					       c, devs[i].bdf, v);
					bad_revoke++;
					/* Wake it ourselves so that it can be joined. */
					eventfd_write(rd->efd, 1);
					pthread_join(rd->pt, NULL);
				}
				close(rd->efd);
			}
			/*
			 * The mappings stay valid and show the stand-in (0xff), and a
			 * write lands in it; no signal (none is handled).
			 */
			sig = x->map[0] == 0xff ? 0 : 1;
			x->map[x->len - 1] = 1;
			sig_w = x->map[PAGE - 1] == 1 ? 0 : 1;
			sig_ro = x->romap[0] == 0xff ? 0 : 1;
			r = sivshm_get_info(x->fd, &info);
			p = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, x->fd, 0);
			if (sig || sig_w || sig_ro || r != -ENODEV ||
			    p != MAP_FAILED || errno != ENODEV || sivshm_ring(x->fd, 0, 0) != -ENODEV) {
				printf("# cycle %ld: %s after unbind: stand-in read/write/read-only %s/%s/%s, "
				       "GET_INFO %d, mmap %s\n",
				       c, devs[i].bdf, sig ? "wrong" : "ok", sig_w ? "wrong" : "ok",
				       sig_ro ? "wrong" : "ok", r,
				       p == MAP_FAILED ? strerror(errno) : "worked");
				bad_revoke++;
			} else {
				revoked++;
			}
			if (p != MAP_FAILED)
				munmap(p, PAGE);
			r = sivshm_write_sysfs(DRIVER_DIR "/bind", devs[i].bdf);
			if (r) {
				printf("# cycle %ld: bind %s: %s\n", c, devs[i].bdf, strerror(-r));
				bad_restore++;
			}
		}
		/* Back: the same memory through a new node; old files stay dead. */
		for (i = 0; i < ndevs; i++) {
			struct held *x = &h[i];
			volatile uint8_t *q;
			int fd = open_bdf(devs[i].bdf, O_RDWR, &info);

			if (fd < 0) {
				printf("# cycle %ld: %s did not come back\n", c, devs[i].bdf);
				bad_restore++;
				continue;
			}
			q = mmap(NULL, x->len, PROT_READ, MAP_SHARED, fd, 0);
			if (q == MAP_FAILED || probe(q, 1, false, 0) || q[0] != x->marker ||
			    q[x->len - 1] != x->marker) {
				printf("# cycle %ld: %s: memory not the same after rebind\n", c,
				       devs[i].bdf);
				bad_restore++;
			} else {
				restored++;
			}
			if (q != MAP_FAILED)
				munmap((void *)q, x->len);
			if (sivshm_get_info(x->fd, &info) != -ENODEV) {
				printf("# cycle %ld: an old file came back to life\n", c);
				bad_revoke++;
			}
			close(fd);
		}
		for (i = 0; i < ndevs; i++) {
			munmap((void *)h[i].map, h[i].len);
			munmap((void *)h[i].romap, PAGE);
			close(h[i].fd);
			close(h[i].rofd);
		}
		if (reload) {
			r = rmmod();
			if (r) {
				printf("# cycle %ld: rmmod with everything closed: %s\n", c,
				       strerror(-r));
				bad_module++;
			} else if ((r = insmod()) || !all_bound()) {
				printf("# cycle %ld: insmod: %s\n", c, strerror(-r));
				bad_module++;
				goto out;
			} else {
				reloaded++;
			}
		}
	}
out:
	printf("# %ld cycles in %.1f s: %ld revocations checked, %ld readers woken, %ld restores, "
	       "%ld rmmod refused, %ld reloads\n", c, since_start(), revoked, woken, restored,
	       refused, reloaded);
	printf("%s 1 lifecycle: every unbind revoked mappings, woke readers, refused calls\n",
	       !bad_revoke && revoked == c * ndevs ? "ok" : "not ok");
	printf("%s 2 lifecycle: every bind brought the device back with its memory\n",
	       !bad_restore && restored == c * ndevs ? "ok" : "not ok");
	printf("%s 3 lifecycle: rmmod refused with files open, unload and load with none\n",
	       !bad_module && refused == c && reloaded > 0 ? "ok" : "not ok");
	return bad_revoke || bad_restore || bad_module || c != lifecycle || !reloaded;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_fault, .sa_flags = SA_NODEFER };
	struct sigaction su = { .sa_handler = on_usr1 };
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--chaos")) {
			chaos = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "usage: %s [--seed N] [--ops N] [--seconds N] [--threads N] [--chaos] [--lifecycle CYCLES]\n",
				argv[0]);
			return 2;
		}
		i++;
		if (!strcmp(a, "--seed"))
			seed = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--ops"))
			max_ops = strtol(v, NULL, 0);
		else if (!strcmp(a, "--seconds"))
			max_seconds = strtol(v, NULL, 0);
		else if (!strcmp(a, "--threads"))
			nthreads = strtol(v, NULL, 0);
		else if (!strcmp(a, "--lifecycle"))
			lifecycle = strtol(v, NULL, 0);
		else {
			fprintf(stderr, "unknown option %s\n", a);
			return 2;
		}
	}
	if (nthreads < 1 || nthreads > MAX_THREADS) {
		fprintf(stderr, "--threads: 1 to %d\n", MAX_THREADS);
		return 2;
	}
	if (!seed && getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = time(NULL);
	/* SIGSEGV only: a probe of a range another thread unmapped. Never SIGBUS. */
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGUSR1, &su, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	{
		char a = 0, b;
		struct iovec l = { &b, 1 }, rm = { &a, 1 };

		have_madvise = !(madvise(&a - ((uintptr_t)&a & (PAGE - 1)), PAGE, MADV_NORMAL) &&
				 errno == ENOSYS);
		have_process_vm = !(process_vm_readv(getpid(), &l, 1, &rm, 1, 0) < 0 &&
				    errno == ENOSYS);
	}
	{
		void *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				    -1, 0);

		if (shared == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		epoch_p = shared;
	}
	if (discover() < 1) {
		printf("TAP version 13\n1..1\nnot ok 1 fuzz: no sivshm device found\n");
		return 1;
	}
	return lifecycle ? lifecycle_run() : fuzz();
}
