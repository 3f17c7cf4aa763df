/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * sivshm: Secure Inter-VM Shared Memory, guest driver user-space API.
 *
 * One character device /dev/sivshmN per bound ivshmem PCI device
 * (1af4:1110). mmap() at offset 0 maps the shared memory (BAR2) write-back
 * cached; the ioctls below describe and drive the device.
 *
 * This header is the single source of truth for the driver (sivshm.rs
 * mirrors it, checked by the host tests) and for user space.
 *
 * Extensible structs follow the VFIO convention: the caller sets @argsz to
 * the size of the struct it knows; the kernel fills at most that many bytes
 * and returns in @argsz the size it knows, so old binaries keep working
 * with new kernels and vice versa. Reserved fields must be zero on input
 * and are zero on output.
 */
#ifndef _UAPI_LINUX_SIVSHM_H
#define _UAPI_LINUX_SIVSHM_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define SIVSHM_IOCTL_TYPE	0xB9

/* Version of this API; bumped when a struct or an ioctl is added. */
#define SIVSHM_API_VERSION	1

/* Values of sivshm_info.irq_mode. */
#define SIVSHM_IRQ_NONE		0	/* no interrupts (ivshmem-plain) */
#define SIVSHM_IRQ_INTX		1	/* legacy INTx, one vector */
#define SIVSHM_IRQ_MSIX		2	/* one MSI-X vector per doorbell vector */

/* Bits of sivshm_info.flags. */
#define SIVSHM_INFO_F_DOORBELL	(1U << 0) /* the device has a doorbell register and peer id */

/* sivshm_info.peer_id when the device has no peer id (ivshmem-plain). */
#define SIVSHM_PEER_ID_NONE	0xffffffffU

/**
 * struct sivshm_info - what a device is, returned by SIVSHM_IOCTL_GET_INFO
 * @argsz:      in: sizeof(struct sivshm_info) as the caller knows it;
 *              out: the size the kernel knows.
 * @api_version: out: SIVSHM_API_VERSION of the driver.
 * @shm_size:   out: bytes of shared memory; mmap() accepts offset + length
 *              up to this (page-rounded).
 * @peer_id:    out: own peer id (the IVPosition register), or
 *              SIVSHM_PEER_ID_NONE.
 * @flags:      out: SIVSHM_INFO_F_*.
 * @nr_vectors: out: interrupt vectors in use (0 with SIVSHM_IRQ_NONE).
 * @irq_mode:   out: SIVSHM_IRQ_*.
 * @__pad0:     zero.
 * @pci_domain: out: PCI domain (segment) of the device.
 * @pci_bus:    out: PCI bus number.
 * @pci_slot:   out: PCI device (slot) number.
 * @pci_func:   out: PCI function number.
 * @__pad1:     zero.
 * @index:      out: N of /dev/sivshmN.
 * @__reserved: zero; room to grow without changing @argsz semantics.
 */
struct sivshm_info {
	__u32 argsz;
	__u32 api_version;
	__u64 shm_size;
	__u32 peer_id;
	__u32 flags;
	__u16 nr_vectors;
	__u8  irq_mode;
	__u8  __pad0;
	__u32 pci_domain;
	__u8  pci_bus;
	__u8  pci_slot;
	__u8  pci_func;
	__u8  __pad1;
	__u32 index;
	__u32 __reserved[6];
};

/* The smallest argsz GET_INFO accepts: everything up to and including @index. */
#define SIVSHM_INFO_ARGSZ_V1	40

/*
 * SIVSHM_IOCTL_GET_INFO - fill a struct sivshm_info.
 * Errors: EFAULT (bad pointer), EINVAL (argsz < SIVSHM_INFO_ARGSZ_V1),
 * ENODEV (the device was unbound while the file stayed open).
 */
#define SIVSHM_IOCTL_GET_INFO	_IO(SIVSHM_IOCTL_TYPE, 0x00)

/* Doorbell vectors per device the driver uses at most. */
#define SIVSHM_MAX_VECTORS	64

/**
 * struct sivshm_ring - argument of SIVSHM_IOCTL_RING
 * @peer_id:    peer to interrupt (its IVPosition); the VM's own id rings itself.
 * @vector:     the peer's vector to trigger.
 * @flags:      zero.
 * @__reserved: zero.
 */
struct sivshm_ring {
	__u32 peer_id;
	__u32 vector;
	__u32 flags;
	__u32 __reserved;
};

/*
 * SIVSHM_IOCTL_RING - write (peer_id << 16 | vector) to the doorbell register.
 * Vectors are numbered as on this device: every device of a channel is set up
 * with the same number of vectors. Whether the peer exists is the host's
 * business: a ring to an unknown peer is dropped by the hypervisor.
 * Errors: EFAULT, EOPNOTSUPP (no doorbell: ivshmem-plain), EINVAL (peer_id >
 * 0xffff, vector beyond the device's doorbell vectors -- nr_vectors, or the
 * MSI-X table size if the guest could not enable MSI-X --, non-zero flags or
 * reserved), ENODEV (unbound).
 */
#define SIVSHM_IOCTL_RING	_IOW(SIVSHM_IOCTL_TYPE, 0x01, struct sivshm_ring)

/**
 * struct sivshm_eventfd - argument of SIVSHM_IOCTL_BIND_EVENTFD
 * @fd:         an eventfd, signalled (+1) by every interrupt on @vector;
 *              -1 removes the binding.
 * @vector:     one of this device's vectors.
 * @flags:      zero.
 * @__reserved: zero.
 */
struct sivshm_eventfd {
	__s32 fd;
	__u32 vector;
	__u32 flags;
	__u32 __reserved;
};

/*
 * SIVSHM_IOCTL_BIND_EVENTFD - bind an eventfd to an interrupt vector.
 * One eventfd per vector and device; binding again replaces (and releases)
 * the previous one. A binding belongs to the open file that made it and is
 * released when that file is closed, and on unbind.
 * Errors: EFAULT, EOPNOTSUPP (no interrupts), EINVAL (vector out of range,
 * non-zero flags or reserved, fd not an eventfd), EBADF (fd not open),
 * ENODEV (unbound).
 */
#define SIVSHM_IOCTL_BIND_EVENTFD _IOW(SIVSHM_IOCTL_TYPE, 0x02, struct sivshm_eventfd)

/*
 * read() on /dev/sivshmN returns nr_vectors __u64 counters: the interrupts
 * on each vector since this open file's previous read() (interrupts raised
 * while the previous ones were pending may be coalesced into one). It blocks
 * until at least one counter is non-zero, unless the file is O_NONBLOCK
 * (EAGAIN). The buffer must hold nr_vectors * 8 bytes (else EINVAL).
 * Errors: EOPNOTSUPP (no interrupts), EINTR (signal), ENODEV (unbound,
 * also for a reader blocked at the time).
 */

#endif /* _UAPI_LINUX_SIVSHM_H */
