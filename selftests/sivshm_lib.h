/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the sivshm kselftests. */
#ifndef SIVSHM_SELFTEST_LIB_H
#define SIVSHM_SELFTEST_LIB_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
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

/* Opens the /dev/sivshmN whose PCI address is @bdf ("DDDD:BB:SS.F"); -1 if none. */
static inline int sivshm_open_bdf(const char *bdf, struct sivshm_info *info)
{
	char path[32], name[16];
	int i, fd;

	for (i = 0; i < 64; i++) {
		snprintf(path, sizeof(path), "/dev/sivshm%d", i);
		fd = open(path, O_RDWR);
		if (fd < 0)
			continue;
		if (!sivshm_get_info(fd, info)) {
			snprintf(name, sizeof(name), "%04x:%02x:%02x.%x", info->pci_domain,
				 info->pci_bus, info->pci_slot, info->pci_func);
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

#endif
