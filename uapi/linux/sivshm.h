/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * sivshm: Secure Inter-VM Shared Memory, guest driver user-space API.
 *
 * One character device /dev/sivshmN per bound ivshmem PCI device
 * (1af4:1110). mmap() maps the shared memory (BAR2); the ioctls below
 * describe the device, ring peers' doorbells and bind eventfds to the
 * device's interrupt vectors. The eventfds are the one way to wait for an
 * interrupt: they work with read(), poll(), select() and epoll. The node
 * itself has no read() (EINVAL). Its poll() reports one thing, the device's
 * removal: no event while the device is bound, EPOLLHUP | EPOLLERR (POLLHUP |
 * POLLERR) from the moment it is unbound or unplugged, so the node can sit
 * in an epoll set beside the eventfds.
 *
 * Removal never kills a process: after it, every call fails with ENODEV,
 * every bound eventfd is signalled once, the node polls EPOLLHUP, and the
 * process's mappings stay valid but no longer reach the device: each page
 * of them shows one stand-in page of kernel memory, owned by the device's
 * driver state, that starts filled with 0xff bytes (see mmap() below). No
 * signal is raised and none needs handling.
 *
 * This header is the single source of truth for the driver (its Rust
 * mirror driver/uapi.rs is checked against it by the host tests) and for
 * user space.
 *
 * Extensible structs follow the VFIO convention: the caller sets @argsz to
 * the size of the struct it knows; the kernel fills at most that many bytes
 * and returns in @argsz the size it knows, so old binaries keep working
 * with new kernels and vice versa. The ioctl number encodes the size of the
 * struct as first defined and never changes. Reserved and padding fields
 * must be zero on input and are zero on output.
 *
 * Access: a file opened read-only may map the memory read-only and call
 * SIVSHM_IOCTL_GET_INFO. Ringing a doorbell and binding an eventfd act on
 * the device and need a file opened for writing (else EBADF).
 */
#ifndef _UAPI_LINUX_SIVSHM_H
#define _UAPI_LINUX_SIVSHM_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define SIVSHM_IOCTL_TYPE	0xB9

/* Bits of sivshm_info.flags. */
#define SIVSHM_INFO_F_DOORBELL	(1U << 0) /* doorbell register, peer id and MSI-X vectors */

/* sivshm_info.peer_id when the device has no peer id (ivshmem-plain). */
#define SIVSHM_PEER_ID_NONE	0xffffffffU

/* Interrupt vectors per device the driver uses at most. */
#define SIVSHM_MAX_VECTORS	64

/*
 * Values of sivshm_info.mem_type: the memory type (x86 PAT cache mode) the
 * shared memory got in this guest, which every mapping of it has. The
 * driver asks for write-back; the guest's PAT grants it only where the
 * firmware's MTRRs say write-back too. On AMD hosts (KVM always honours
 * the guest's type), TDX, and Intel hosts whose VMM disables
 * KVM_X86_QUIRK_IGNORE_GUEST_PAT, the hardware uses this type, so anything
 * but SIVSHM_MEM_TYPE_WB makes every access uncached (see
 * Documentation/memory-type.rst for where the host must place the BAR).
 * UNKNOWN: the driver could not tell (PAT disabled), or a kernel older than
 * the field (the bytes were reserved, hence zero).
 */
#define SIVSHM_MEM_TYPE_UNKNOWN		0
#define SIVSHM_MEM_TYPE_WB		1 /* write-back */
#define SIVSHM_MEM_TYPE_WC		2 /* write-combining */
#define SIVSHM_MEM_TYPE_UC_MINUS	3 /* uncached-minus */
#define SIVSHM_MEM_TYPE_UC		4 /* uncached */
#define SIVSHM_MEM_TYPE_WT		5 /* write-through */
#define SIVSHM_MEM_TYPE_WP		6 /* write-protected */

/**
 * struct sivshm_info - what a device is, returned by SIVSHM_IOCTL_GET_INFO
 * @argsz:      in: sizeof(struct sivshm_info) as the caller knows it;
 *              out: the size the kernel knows.
 * @flags:      out: SIVSHM_INFO_F_*.
 * @shm_size:   out: bytes of shared memory; mmap() accepts offset + length
 *              up to this (page-rounded).
 * @peer_id:    out: own peer id (the IVPosition register), or
 *              SIVSHM_PEER_ID_NONE.
 * @nr_vectors: out: MSI-X vectors in use, each can be bound to an eventfd
 *              and rung on peers (0 without SIVSHM_INFO_F_DOORBELL).
 * @__pad0:     zero.
 * @pci_domain: out: PCI domain (segment) of the device.
 * @pci_bus:    out: PCI bus number.
 * @pci_slot:   out: PCI device (slot) number.
 * @pci_func:   out: PCI function number.
 * @__pad1:     zero.
 * @index:      out: N of /dev/sivshmN.
 * @mem_type:   out: SIVSHM_MEM_TYPE_* of the shared memory (since
 *              SIVSHM_INFO_ARGSZ_V2; was reserved, so zero = UNKNOWN before).
 * @__reserved: zero; room to grow.
 */
struct sivshm_info {
	__u32 argsz;
	__u32 flags;
	__u64 shm_size;
	__u32 peer_id;
	__u16 nr_vectors;
	__u16 __pad0;
	__u32 pci_domain;
	__u8  pci_bus;
	__u8  pci_slot;
	__u8  pci_func;
	__u8  __pad1;
	__u32 index;
	__u32 mem_type;
	__u32 __reserved[6];
};

/* The smallest argsz GET_INFO accepts: everything up to and including @index. */
#define SIVSHM_INFO_ARGSZ_V1	36
/* argsz that includes @mem_type. */
#define SIVSHM_INFO_ARGSZ_V2	40

/*
 * SIVSHM_IOCTL_GET_INFO - fill a struct sivshm_info.
 * Errors: EFAULT (bad pointer), EINVAL (argsz < SIVSHM_INFO_ARGSZ_V1),
 * ENODEV (the device was unbound while the file stayed open).
 */
#define SIVSHM_IOCTL_GET_INFO	_IOWR(SIVSHM_IOCTL_TYPE, 0x00, struct sivshm_info)

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
 * business: a ring to a peer the host did not wire is dropped by the
 * hypervisor, which is the isolation, not an error the guest can see.
 * Errors: EFAULT, EBADF (file not opened for writing), EOPNOTSUPP (no
 * doorbell: ivshmem-plain), EINVAL (peer_id > 0xffff, vector >= nr_vectors,
 * non-zero flags or reserved), ENODEV (unbound).
 */
#define SIVSHM_IOCTL_RING	_IOW(SIVSHM_IOCTL_TYPE, 0x01, struct sivshm_ring)

/**
 * struct sivshm_eventfd - argument of SIVSHM_IOCTL_BIND_EVENTFD
 * @fd:         an eventfd, signalled (+1) by every interrupt on @vector;
 *              -1 removes this file's binding of @vector.
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
 * One eventfd per vector and device. A binding belongs to the open file
 * that made it: that file may replace it (the previous eventfd is released)
 * or remove it (fd -1; removing a binding that does not exist succeeds);
 * any other open file gets EBUSY until the owner removes it or is closed.
 * Bindings are released when their file is closed. When the device is
 * unbound every bound eventfd is signalled once more, so that a waiter
 * wakes up and learns from its next call (ENODEV) that the device is gone;
 * then the bindings are released.
 * Errors: EFAULT, EBADF (fd not open, or the file not opened for writing),
 * EOPNOTSUPP (no interrupts), EINVAL (vector >= nr_vectors, non-zero flags
 * or reserved, fd not an eventfd), EBUSY (another open file has bound the
 * vector), ENODEV (unbound).
 */
#define SIVSHM_IOCTL_BIND_EVENTFD _IOW(SIVSHM_IOCTL_TYPE, 0x02, struct sivshm_eventfd)

/*
 * mmap(): MAP_SHARED only (MAP_PRIVATE: EINVAL), offset and length within
 * shm_size (else EINVAL), never executable (PROT_EXEC: EPERM, as the kernel
 * answers for a noexec mount; a later mprotect(PROT_EXEC) gets EACCES), not
 * expandable by mremap(). ENODEV once the device is unbound.
 *
 * After unbind, every existing mapping (and a forked child's copy) stays
 * valid: nothing of the device is reachable any more, and a touch of any
 * page maps the device's stand-in page instead, the same page at every
 * address of every mapping of this device, starting filled with 0xff.
 * Reads and writes succeed; what a process writes there after the removal
 * can be read back at any address of any mapping of the same device, never
 * by users of another device, and never reaches a VM. Read as data, 0xff
 * everywhere makes every magic number wrong and every length, index or
 * position the largest value of its type; a protocol on the memory that
 * checks what it reads fails its checks and can then ask the device
 * (ENODEV) whether it is gone. Touching a mapping after removal costs page
 * tables for what is touched only, never a copy of the segment.
 *
 * Caching: the driver reserves the BAR write-back (memremap(MEMREMAP_WB)),
 * and mappings get the memory type recorded for that reservation, which
 * GET_INFO reports in @mem_type. On x86 the PAT combines it with the MTRRs:
 * where the firmware's MTRRs mark the BAR's range uncached (SeaBIOS and
 * OVMF do for the 32-bit PCI hole below 4 GiB), the type recorded is
 * uncached-minus and the driver logs a warning at probe. The same type is
 * listed for the BAR's physical range (resource2 in
 * /sys/bus/pci/devices/.../resource) in
 * /sys/kernel/debug/x86/pat_memtype_list.
 */

#endif /* _UAPI_LINUX_SIVSHM_H */
