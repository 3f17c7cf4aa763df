// SPDX-License-Identifier: GPL-2.0
/*
 * Cross-VM data test: two guests whose first sivshm device is backed by the
 * same host segment. The writer fills the segment with a pattern derived
 * from SIVSHM_NONCE and publishes its checksum; the reader, in the other
 * VM, verifies both and acknowledges with the checksum it computed, which
 * the writer checks in turn.
 *
 *   sivshm_xvm writer|reader      (environment: SIVSHM_NONCE, SIVSHM_DEV)
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "kselftest.h"
#include "sivshm_lib.h"

#define XVM_MAGIC	0x53495653484d5856ULL	/* "SIVSHMXV" */
#define XVM_READY	1
#define XVM_ACKED	2
#define XVM_DATA_OFF	4096
#define XVM_TIMEOUT_S	240

struct xvm_header {
	uint64_t magic;
	uint64_t nonce;
	uint64_t len;
	uint64_t sum;
	uint64_t ack_sum;
	_Atomic uint32_t state;
};

static int wait_state(struct xvm_header *h, uint32_t want, uint64_t nonce)
{
	time_t end = time(NULL) + XVM_TIMEOUT_S;

	while (time(NULL) < end) {
		if (atomic_load_explicit(&h->state, memory_order_acquire) == want &&
		    h->magic == XVM_MAGIC && h->nonce == nonce)
			return 0;
		usleep(1000);
	}
	return -1;
}

static void fill(uint8_t *p, size_t len, uint64_t seed)
{
	uint64_t st = seed | 1;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		uint64_t v = sivshm_prng(&st);

		memcpy(p + i, &v, 8);
	}
}

static size_t first_mismatch(const uint8_t *p, size_t len, uint64_t seed)
{
	uint64_t st = seed | 1;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		uint64_t v = sivshm_prng(&st);

		if (memcmp(p + i, &v, 8))
			return i;
	}
	return len;
}

int main(int argc, char **argv)
{
	const char *dev = getenv("SIVSHM_DEV") ?: "/dev/sivshm0";
	const char *nonce_s = getenv("SIVSHM_NONCE");
	struct sivshm_info info;
	struct xvm_header *h;
	uint64_t nonce, sum;
	size_t len, bad;
	uint8_t *shm;
	int writer, fd;

	if (argc != 2 || (strcmp(argv[1], "writer") && strcmp(argv[1], "reader")) || !nonce_s) {
		fprintf(stderr, "usage: SIVSHM_NONCE=n %s writer|reader\n", argv[0]);
		return KSFT_FAIL;
	}
	writer = !strcmp(argv[1], "writer");
	nonce = strtoull(nonce_s, NULL, 0);

	ksft_print_header();
	ksft_set_plan(2);

	fd = open(dev, O_RDWR);
	if (fd < 0 || sivshm_get_info(fd, &info) || info.shm_size <= XVM_DATA_OFF)
		ksft_exit_fail_msg("%s: cannot open or query: %s\n", dev, strerror(errno));
	shm = mmap(NULL, info.shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (shm == MAP_FAILED)
		ksft_exit_fail_msg("mmap %s: %s\n", dev, strerror(errno));
	h = (struct xvm_header *)shm;
	len = info.shm_size - XVM_DATA_OFF;

	if (writer) {
		fill(shm + XVM_DATA_OFF, len, nonce);
		sum = sivshm_fnv1a(shm + XVM_DATA_OFF, len);
		h->magic = XVM_MAGIC;
		h->nonce = nonce;
		h->len = len;
		h->sum = sum;
		h->ack_sum = 0;
		atomic_store_explicit(&h->state, XVM_READY, memory_order_release);
		ksft_print_msg("published %zu bytes, checksum %016llx\n", len, (unsigned long long)sum);
		ksft_test_result(!wait_state(h, XVM_ACKED, nonce), "writer_acknowledged\n");
		ksft_print_msg("reader's checksum %016llx\n", (unsigned long long)h->ack_sum);
		ksft_test_result(h->ack_sum == sum, "writer_reader_checksum_matches\n");
	} else {
		if (wait_state(h, XVM_READY, nonce)) {
			ksft_print_msg("no data from the writer within %d s\n", XVM_TIMEOUT_S);
			ksft_test_result_fail("reader_saw_header\n");
			ksft_test_result_fail("reader_data_matches\n");
			ksft_finished();
		}
		ksft_test_result(h->len == len, "reader_saw_header\n");
		sum = sivshm_fnv1a(shm + XVM_DATA_OFF, len);
		bad = first_mismatch(shm + XVM_DATA_OFF, len, nonce);
		ksft_print_msg("checksum %016llx (writer's %016llx), first bad byte %zu of %zu\n",
			       (unsigned long long)sum, (unsigned long long)h->sum, bad, len);
		ksft_test_result(sum == h->sum && bad == len, "reader_data_matches\n");
		h->ack_sum = sum;
		atomic_store_explicit(&h->state, XVM_ACKED, memory_order_release);
	}
	munmap(shm, info.shm_size);
	close(fd);
	ksft_finished();
}
