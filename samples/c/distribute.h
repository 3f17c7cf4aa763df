/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the C manager and worker say to each other: the batch format of sivshm-distribute
 * (samples/distribute/src/batches.rs), byte for byte, so that either end may be the Rust one.
 *
 *   manager -> worker  Batch: kind=1 (u32 LE), pad (u32), round (u64 LE), checksum (u64 LE),
 *                            then the round's data            (24 + bytes)
 *                      Done:  kind=2 (u32 LE), pad (u32), rounds (u64 LE)   (16 bytes)
 *   worker -> manager  Ack:   round (u64 LE), checksum the worker computed (u64 LE)  (16)
 *
 * The checksum is FNV-1a (64 bit); worker i's data of a round is an xorshift stream seeded
 * with (i + 1) * 0x9e3779b97f4a7c15 ^ round.
 */
#ifndef SIVSHM_SAMPLES_DISTRIBUTE_H
#define SIVSHM_SAMPLES_DISTRIBUTE_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sivshm/channel.h>

#define KIND_BATCH 1u
#define KIND_DONE 2u
#define BATCH_HEADER 24
#define ACK_LEN 16
#define DONE_LEN 16

static inline void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline uint64_t fnv1a(const uint8_t *d, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ d[i]) * 0x100000001b3ull;
	return h;
}

/* Worker `worker`'s data of round `round`, `len` bytes into `out`. */
static inline void payload(uint64_t worker, uint64_t round, uint8_t *out, size_t len)
{
	uint64_t x = (worker + 1) * 0x9e3779b97f4a7c15ull ^ round;
	size_t done = 0;
	while (done < len) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		for (int i = 0; i < 8 && done < len; i++)
			out[done++] = (uint8_t)(x >> (8 * i));
	}
}

/* "--fd SHM:LEN:WAKE:RING": a channel over a memfd the parent process passed down. */
struct fd_spec {
	int shm, wake, ring;
	size_t len;
};

static inline int parse_fd_spec(const char *s, struct fd_spec *f)
{
	unsigned long long len;
	if (sscanf(s, "%d:%llu:%d:%d", &f->shm, &len, &f->wake, &f->ring) != 4)
		return -1;
	f->len = (size_t)len;
	return 0;
}

/* Exit status of a program whose device was removed (SIVSHM_ERR_DEVICE_GONE). */
#define EXIT_DEVICE_GONE 3

/* Prints what failed and exits: EXIT_DEVICE_GONE for a removed device, else 1. */
static inline void die_on(int rc, const char *who, const char *what, struct sivshm_channel *ch)
{
	if (rc >= 0)
		return;
	fprintf(stderr, "%s: %s: %s (%d): %s\n", who, what, sivshm_strerror(rc), rc,
		ch ? sivshm_channel_last_error(ch) : sivshm_last_error());
	exit(rc == SIVSHM_ERR_DEVICE_GONE ? EXIT_DEVICE_GONE : 1);
}

/* A channel over a device node ("/dev/sivshm0"), a PCI address ("0000:00:04.0", no '/'),
 * or a --fd spec (exactly one of device and fd_spec non-NULL). */
static inline struct sivshm_channel *open_channel(const char *who, const char *device,
						  const char *fd_spec, int role,
						  const struct sivshm_config *cfg)
{
	struct sivshm_channel *ch = NULL;
	int rc;

	if (fd_spec) {
		struct fd_spec f;
		if (parse_fd_spec(fd_spec, &f)) {
			fprintf(stderr, "%s: --fd wants SHM:LEN:WAKE:RING, not %s\n", who, fd_spec);
			exit(2);
		}
		rc = sivshm_channel_attach_fd(f.shm, 0, f.len, f.wake, f.ring, role, cfg, &ch);
		die_on(rc, who, fd_spec, NULL);
	} else {
		struct sivshm_device *dev = NULL;
		if (strchr(device, '/'))
			die_on(sivshm_device_open(device, &dev), who, device, NULL);
		else
			die_on(sivshm_device_find(device, &dev), who, device, NULL);
		rc = sivshm_channel_attach(dev, role, cfg, &ch);
		sivshm_device_close(dev);
		die_on(rc, who, device, NULL);
	}
	return ch;
}

#endif
