/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the sivshm kselftests. */
#ifndef SIVSHM_SELFTEST_LIB_H
#define SIVSHM_SELFTEST_LIB_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/sivshm.h>

/*
 * Fills @info through SIVSHM_IOCTL_GET_INFO; returns 0 or -errno. The struct
 * is poisoned first, so that fields the driver fails to write show up.
 */
static inline int sivshm_get_info(int fd, struct sivshm_info *info)
{
	memset(info, 0xa5, sizeof(*info));
	info->argsz = sizeof(*info);
	return ioctl(fd, SIVSHM_IOCTL_GET_INFO, info) ? -errno : 0;
}

/* Writes the PCI address of @info as "DDDD:BB:SS.F" into @buf (at least 16 bytes). */
static inline void sivshm_bdf(const struct sivshm_info *info, char *buf, size_t len)
{
	snprintf(buf, len, "%04x:%02x:%02x.%x", info->pci_domain, info->pci_bus, info->pci_slot,
		 info->pci_func);
}

/* Opens the /dev/sivshmN whose PCI address is @bdf ("DDDD:BB:SS.F"); -1 if none. */
static inline int sivshm_open_bdf(const char *bdf, struct sivshm_info *info)
{
	char path[32], name[24];
	int i, fd;

	for (i = 0; i < 256; i++) { /* the driver's MAX_NODES */
		snprintf(path, sizeof(path), "/dev/sivshm%d", i);
		fd = open(path, O_RDWR);
		if (fd < 0)
			continue;
		if (!sivshm_get_info(fd, info)) {
			sivshm_bdf(info, name, sizeof(name));
			/* The node's N must be the index the driver reports. */
			if (!strcmp(name, bdf) && info->index == (uint32_t)i)
				return fd;
		}
		close(fd);
	}
	return -1;
}

/* SIVSHM_IOCTL_RING; returns 0 or -errno. */
static inline int sivshm_ring(int fd, uint32_t peer, uint32_t vector)
{
	struct sivshm_ring r = { .peer_id = peer, .vector = vector };

	return ioctl(fd, SIVSHM_IOCTL_RING, &r) ? -errno : 0;
}

/* SIVSHM_IOCTL_BIND_EVENTFD (efd -1 unbinds); returns 0 or -errno. */
static inline int sivshm_bind(int fd, int efd, uint32_t vector)
{
	struct sivshm_eventfd b = { .fd = efd, .vector = vector };

	return ioctl(fd, SIVSHM_IOCTL_BIND_EVENTFD, &b) ? -errno : 0;
}

/*
 * Takes the counter of a non-blocking eventfd: the interrupts signalled since
 * the last take, 0 if none (or on error).
 */
static inline uint64_t sivshm_take(int efd)
{
	uint64_t v;

	return read(efd, &v, sizeof(v)) == sizeof(v) ? v : 0;
}

/* Waits up to @ms for @efd to become readable, then takes its counter; 0 if it did not. */
static inline uint64_t sivshm_wait_take(int efd, int ms)
{
	struct pollfd p = { .fd = efd, .events = POLLIN };

	return poll(&p, 1, ms) == 1 ? sivshm_take(efd) : 0;
}

/*
 * Interrupts the kernel's IRQ core has counted on each MSI-X vector of the
 * device at @bdf, from /proc/interrupts: counts[v] for vector v < @n.
 * Returns how many of the device's vectors were listed, or -errno.
 *
 * This count is kept by the IRQ core (kstat, in handle_edge_irq()) before
 * the driver's handler runs, independently of the driver, so comparing it
 * with what the bound eventfds received shows whether the driver lost,
 * duplicated or misrouted an interrupt. Each count is one run of the handler:
 * on x86 an MSI-X vector targets one CPU, whose hard-IRQ handler runs with
 * interrupts off, so a new edge is latched and counted when it is delivered
 * after the handler, never folded into a run on another CPU uncounted (the
 * IRQS_PENDING replay of handle_edge_irq()). The lines look like
 *   " 24:   17   PCI-MSIX-0000:00:05.0    1-edge      sivshm"
 * (one count per CPU, the chip name of the device's MSI-X domain, then the
 * hardware IRQ number, which is the MSI-X table index, i.e. the vector).
 */
static inline int sivshm_irq_counts(const char *bdf, uint64_t *counts, unsigned int n)
{
	char line[512], chip[40], *p, *end;
	unsigned int vector, found = 0;
	FILE *f = fopen("/proc/interrupts", "re");

	if (!f)
		return -errno;
	memset(counts, 0, n * sizeof(*counts));
	snprintf(chip, sizeof(chip), "PCI-MSIX-%s ", bdf);
	while (fgets(line, sizeof(line), f)) {
		uint64_t sum = 0;

		p = strstr(line, chip);
		if (!p || sscanf(p + strlen(chip), "%u-", &vector) != 1 || vector >= n)
			continue;
		/* The per-CPU counts between "NN:" and the chip name. */
		p = strchr(line, ':');
		if (!p)
			continue;
		for (p++;; p = end) {
			unsigned long long c = strtoull(p, &end, 10);

			if (end == p)
				break;
			sum += c;
		}
		counts[vector] = sum;
		found++;
	}
	fclose(f);
	return found;
}

/*
 * Waits until the IRQ core's counts of @bdf's vectors have not changed for
 * @quiet_ms (polling every 100 ms, at most 60 s), so that every interrupt
 * still in flight in the hypervisor has arrived; returns
 * sivshm_irq_counts()'s result, with the counts in @counts.
 */
static inline int sivshm_settled_irq_counts(const char *bdf, uint64_t *counts, unsigned int n,
					    int quiet_ms)
{
	uint64_t prev[SIVSHM_MAX_VECTORS];
	int i, quiet = 0, got;

	if (n > SIVSHM_MAX_VECTORS)
		return -EINVAL;
	got = sivshm_irq_counts(bdf, counts, n);
	for (i = 0; i < 600 && quiet < quiet_ms / 100 && got >= 0; i++) {
		memcpy(prev, counts, n * sizeof(*counts));
		usleep(100000);
		got = sivshm_irq_counts(bdf, counts, n);
		quiet = memcmp(prev, counts, n * sizeof(*counts)) ? 0 : quiet + 1;
	}
	return got;
}
/* Writes @val to the sysfs file @path (bind, unbind); 0 or -errno. */
static inline int sivshm_write_sysfs(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, val, strlen(val)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* Waits up to 5 s until thread @tid of this process sleeps (state S); returns 0 or -1. */
static inline int sivshm_wait_until_sleeping(pid_t tid)
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


/* A reproducible pseudo-random byte stream (xorshift64*), seeded by @seed. */
static inline uint64_t sivshm_prng(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* FNV-1a over @len bytes. */
static inline uint64_t sivshm_fnv1a(const volatile uint8_t *p, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* The kernel's name of a SIVSHM_MEM_TYPE_* value, as pat_memtype_list prints it. */
static inline const char *sivshm_mem_type_name(uint32_t t)
{
	switch (t) {
	case SIVSHM_MEM_TYPE_WB: return "write-back";
	case SIVSHM_MEM_TYPE_WC: return "write-combining";
	case SIVSHM_MEM_TYPE_UC_MINUS: return "uncached-minus";
	case SIVSHM_MEM_TYPE_UC: return "uncached";
	case SIVSHM_MEM_TYPE_WT: return "write-through";
	case SIVSHM_MEM_TYPE_WP: return "write-protected";
	default: return "unknown";
	}
}

/*
 * The memory type the guest's PAT lists for BAR2 of @bdf
 * (/sys/kernel/debug/x86/pat_memtype_list), independently of the driver's
 * answer. Returns 0 and fills @out, or -1 if the BAR or its entry is missing.
 */
static inline int sivshm_pat_type(const char *bdf, char *out, size_t len)
{
	char path[96], line[256], want[64];
	unsigned long long start = 0, end = 0, flags = 0;
	FILE *f;
	int i, ret = -1;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource", bdf);
	f = fopen(path, "r");
	if (!f)
		return -1;
	for (i = 0; i < 3 && fgets(line, sizeof(line), f); i++)
		;
	fclose(f);
	if (i != 3 || sscanf(line, "%llx %llx %llx", &start, &end, &flags) != 3 || !start)
		return -1;
	snprintf(want, sizeof(want), "[mem 0x%016llx-", start);
	f = fopen("/sys/kernel/debug/x86/pat_memtype_list", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *type;

		if (!strstr(line, want))
			continue;
		type = strrchr(line, ' ');
		if (!type)
			break;
		snprintf(out, len, "%s", type + 1);
		out[strcspn(out, "\n")] = 0;
		ret = 0;
		break;
	}
	fclose(f);
	return ret;
}

#endif
