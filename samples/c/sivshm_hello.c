// SPDX-License-Identifier: GPL-2.0
/*
 * The smallest complete sivshm program, using nothing but the UAPI header:
 * query a device, map its shared memory, write a message, and (on a device
 * with a doorbell) ring itself and wait for the wake-up on an eventfd, the
 * one way to wait (the node itself has no read() and no poll()).
 *
 *   cc -I uapi -o sivshm_hello samples/c/sivshm_hello.c
 *   ./sivshm_hello /dev/sivshm0
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/sivshm.h>

static int fail(const char *what)
{
	fprintf(stderr, "sivshm_hello: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/dev/sivshm0";
	struct sivshm_info info = { .argsz = sizeof(info) };
	struct sivshm_eventfd bind = { .vector = 0 };
	struct sivshm_ring ring = { .vector = 0 };
	struct pollfd pfd = { .events = POLLIN };
	const char msg[] = "hello from sivshm";
	uint64_t wakeups;
	char *shm;
	int fd;

	fd = open(path, O_RDWR);
	if (fd < 0)
		return fail(path);
	if (ioctl(fd, SIVSHM_IOCTL_GET_INFO, &info))
		return fail("SIVSHM_IOCTL_GET_INFO");
	printf("%s: %04x:%02x:%02x.%x, %llu bytes, peer id %d, %u vector(s)\n", path,
	       info.pci_domain, info.pci_bus, info.pci_slot, info.pci_func,
	       (unsigned long long)info.shm_size, (int)info.peer_id, info.nr_vectors);

	shm = mmap(NULL, info.shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (shm == MAP_FAILED)
		return fail("mmap");
	memcpy(shm, msg, sizeof(msg));
	printf("wrote \"%s\" at offset 0, read back \"%s\"\n", msg, shm);

	if (!(info.flags & SIVSHM_INFO_F_DOORBELL) || info.nr_vectors == 0) {
		printf("no doorbell on this device: done\n");
		return 0;
	}
	bind.fd = eventfd(0, EFD_CLOEXEC);
	if (bind.fd < 0 || ioctl(fd, SIVSHM_IOCTL_BIND_EVENTFD, &bind))
		return fail("SIVSHM_IOCTL_BIND_EVENTFD");
	ring.peer_id = info.peer_id;
	if (ioctl(fd, SIVSHM_IOCTL_RING, &ring))
		return fail("SIVSHM_IOCTL_RING");
	pfd.fd = bind.fd;
	if (poll(&pfd, 1, 10000) != 1 || read(bind.fd, &wakeups, sizeof(wakeups)) != 8) {
		fprintf(stderr, "sivshm_hello: no wake-up within 10 s\n");
		return 1;
	}
	printf("rang myself on vector 0: eventfd woke with %llu\n", (unsigned long long)wakeups);
	return 0;
}
