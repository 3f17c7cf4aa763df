// SPDX-License-Identifier: GPL-2.0
/*
 * The channel benchmark's throughput probe in C, on libsivshm: what `sivshm-probe
 * throughput --transport sivshm` measures, through the C API, so that the channel
 * benchmark puts the C path beside the Rust path of the same run.
 *
 *   sivshm_capi_probe serve [--timeout S] [--spin-us N] [--spin-max-us N]
 *       (DEVICE | --fd SHM:LEN:WAKE:RING)
 *   sivshm_capi_probe throughput [--sizes N[,N...]] [--seconds S | --messages N]
 *       [--flush-every N] [--timeout S] [--spin-us N] [--spin-max-us N]
 *       (DEVICE | --fd SHM:LEN:WAKE:RING)
 *
 * Both speak sivshm-probe's messages (samples/probe/src/wire.rs), so either end may be the
 * Rust one: every message has a 16-byte header (tag u32, flags u32, sequence number u64,
 * little-endian) and repeats its sequence number in its last 8 bytes. The driver (manager)
 * sends SYNC, streams DATA messages (reserve, write, commit; a flush every --flush-every
 * messages, 64 by default, as sivshm-probe does), then SYNC again: the peer answers each
 * SYNC with a REPORT of what it received since the previous one, and the time runs until
 * that report, so everything sent was received and checked. The peer reads a DATA
 * message's stamps in place (header and trailer) and releases it, as sivshm-probe's does.
 * BYE ends the session.
 *
 * The driver prints one line per size, in sivshm-probe's format with the transport
 * `sivshm-c`:
 *   throughput sivshm-c: size=N messages=N seconds=S mib_s=X msgs_s=X rings_per_msg=X
 * A lost, repeated or torn message ends the probe with an error, never a figure.
 *
 * `serve` on a device re-attaches while its first peer turns out to be the previous
 * session's (closed, or the channel formatted anew), so it may follow another program on
 * the same channel. Exit status 0: done; 1: a failure (printed); 2: usage.
 */
#define _GNU_SOURCE
#include <time.h>
#include <unistd.h>

#include "distribute.h"

static const char *who = "c-probe";

enum { ECHO = 1, DATA = 2, SYNC = 3, BYE = 4, REPORT = 5 };
#define FLAG_PATTERN 1u
#define HEADER 16
#define MIN_SIZE (HEADER + 8)
#define REPORT_LEN (HEADER + 24)

struct options {
	const char *device, *fd_spec;
	long timeout_s;
	long long spin_us, spin_max_us;
	unsigned long long sizes[16];
	int nsizes;
	double seconds;
	unsigned long long messages;
	unsigned flush_every;
};

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint8_t pattern(uint64_t seq, size_t offset)
{
	return (uint8_t)offset ^ (uint8_t)((seq * 0x9e3779b97f4a7c15ull) >> 56);
}

/* A message of `size` (at least MIN_SIZE) bytes: tag, flags, `seq` in header and trailer. */
static void stamp(uint8_t *m, size_t size, uint64_t seq)
{
	put_u64(m + 8, seq);
	put_u64(m + size - 8, seq);
}

static void message(uint8_t *m, size_t size, uint32_t tag, uint64_t seq)
{
	memset(m, 0, size);
	put_u32(m, tag);
	stamp(m, size, seq);
}

/* Checks a whole message copied out: tag, stamps, pattern if flagged; its seq in *seq. */
static int check(const uint8_t *m, size_t len, uint32_t tag, uint64_t *seq)
{
	if (len < MIN_SIZE) {
		fprintf(stderr, "%s: a message of %zu bytes is shorter than a header\n", who, len);
		return -1;
	}
	if (get_u32(m) != tag) {
		fprintf(stderr, "%s: expected a message tagged %u, got %u\n", who, tag, get_u32(m));
		return -1;
	}
	*seq = get_u64(m + 8);
	if (get_u64(m + len - 8) != *seq) {
		fprintf(stderr, "%s: message %llu of %zu bytes ends with the stamp of %llu (torn "
			"or mixed up)\n", who, (unsigned long long)*seq, len,
			(unsigned long long)get_u64(m + len - 8));
		return -1;
	}
	if (get_u32(m + 4) & FLAG_PATTERN) {
		for (size_t i = HEADER; i < len - 8; i++) {
			if (m[i] != pattern(*seq, i)) {
				fprintf(stderr, "%s: message %llu is corrupt at byte %zu\n", who,
					(unsigned long long)*seq, i);
				return -1;
			}
		}
	}
	return 0;
}

static struct sivshm_channel *attach(const struct options *o, int role)
{
	struct sivshm_config *cfg = sivshm_config_new();
	sivshm_config_set(cfg, SIVSHM_OPT_ATTACH_TIMEOUT_MS, (uint64_t)o->timeout_s * 1000);
	if (o->spin_us >= 0)
		sivshm_config_set(cfg, SIVSHM_OPT_SPIN_US, (uint64_t)o->spin_us);
	if (o->spin_max_us >= 0)
		sivshm_config_set(cfg, SIVSHM_OPT_SPIN_MAX_US, (uint64_t)o->spin_max_us);
	struct sivshm_channel *ch = open_channel(who, o->device, o->fd_spec, role, cfg);
	sivshm_config_free(cfg);
	return ch;
}

static uint64_t rings(const struct sivshm_channel *ch)
{
	uint64_t r = 0;
	sivshm_channel_stat(ch, SIVSHM_STAT_RINGS, &r);
	return r;
}

/* The peer's side. Returns 0 after BYE; 1 on a failure; -1 if the session's first message
 * found the previous session's peer (closed, or the channel formatted anew): attach again. */
static int serve_once(struct sivshm_channel *ch, int timeout_ms)
{
	uint8_t *buf = malloc(sivshm_channel_max_message(ch));
	if (!buf)
		return 1;
	uint64_t messages = 0, bytes = 0, total = 0, next_data = 0;
	uint64_t rings_at_sync = rings(ch);
	int rc = 1;
	for (;;) {
		struct sivshm_message *msg;
		int r = sivshm_channel_recv(ch, timeout_ms, &msg);
		if (!total && (r == SIVSHM_ERR_PEER_CLOSED || r == SIVSHM_ERR_REFORMATTED)) {
			rc = -1;
			break;
		}
		if (r < 0) {
			fprintf(stderr, "%s: receive: %s (%d): %s\n", who, sivshm_strerror(r), r,
				sivshm_channel_last_error(ch));
			break;
		}
		size_t len = sivshm_message_len(msg);
		/* The stamps as little-endian words: tag and flags, sequence number, trailer. */
		uint64_t w_tag = 0, w_seq = 0, w_end = 0;
		if (len >= MIN_SIZE && sivshm_message_read_u64(msg, 0, &w_tag) == SIVSHM_OK &&
		    sivshm_message_read_u64(msg, 8, &w_seq) == SIVSHM_OK &&
		    sivshm_message_read_u64(msg, len - 8, &w_end) == SIVSHM_OK &&
		    (uint32_t)w_tag == DATA && !((uint32_t)(w_tag >> 32) & FLAG_PATTERN)) {
			/* A plain data message: its stamps read in place, its body left. */
			if (w_end != w_seq || w_seq != next_data) {
				fprintf(stderr, "%s: data message %llu (trailer %llu) where %llu was due "
					"(lost, repeated, torn or reordered)\n", who,
					(unsigned long long)w_seq, (unsigned long long)w_end,
					(unsigned long long)next_data);
				sivshm_message_release(msg);
				break;
			}
			if ((r = sivshm_message_release(msg)) < 0) {
				fprintf(stderr, "%s: release: %s\n", who, sivshm_strerror(r));
				break;
			}
			next_data++;
			messages++;
			bytes += len;
			total++;
			continue;
		}
		r = sivshm_message_read(msg, 0, buf, len);
		sivshm_message_release(msg);
		if (r < 0 || len < MIN_SIZE) {
			fprintf(stderr, "%s: a message of %zu bytes: %s\n", who, len,
				sivshm_strerror(r));
			break;
		}
		uint32_t tag = get_u32(buf);
		uint64_t seq = 0;
		if (check(buf, len, tag, &seq))
			break;
		total++;
		if (tag == ECHO) {
			r = sivshm_channel_send(ch, buf, len, timeout_ms);
		} else if (tag == DATA) {
			if (seq != next_data) {
				fprintf(stderr, "%s: data message %llu where %llu was due\n", who,
					(unsigned long long)seq, (unsigned long long)next_data);
				break;
			}
			next_data++;
		} else if (tag == SYNC) {
			/* The sequence number says where the data numbering restarts. */
			next_data = seq;
			uint8_t rep[REPORT_LEN];
			message(rep, sizeof(rep), REPORT, messages);
			put_u64(rep + HEADER, bytes);
			put_u64(rep + HEADER + 8, rings(ch) - rings_at_sync);
			r = sivshm_channel_send(ch, rep, sizeof(rep), timeout_ms);
			/* The report's own doorbell belongs to neither phase. */
			rings_at_sync = rings(ch);
			messages = bytes = 0;
			if (r < 0)
				fprintf(stderr, "%s: report: %s\n", who, sivshm_strerror(r));
			if (r < 0)
				break;
			continue;
		} else if (tag == BYE) {
			uint8_t bye[MIN_SIZE];
			message(bye, sizeof(bye), BYE, total);
			r = sivshm_channel_send(ch, bye, sizeof(bye), timeout_ms);
			rc = r < 0;
			break;
		} else {
			fprintf(stderr, "%s: a message tagged %u (not a probe message)\n", who, tag);
			break;
		}
		if (r < 0) {
			fprintf(stderr, "%s: send: %s\n", who, sivshm_strerror(r));
			break;
		}
		messages++;
		bytes += len;
	}
	free(buf);
	return rc;
}

static int serve(const struct options *o)
{
	int timeout_ms = (int)(o->timeout_s * 1000);
	double end = now_s() + (double)o->timeout_s;
	for (;;) {
		struct sivshm_channel *ch = attach(o, SIVSHM_WORKER);
		int r = sivshm_channel_wait_for_peer(ch, timeout_ms);
		die_on(r, who, "waiting for the driver", ch);
		int rc = serve_once(ch, timeout_ms);
		sivshm_channel_close(ch);
		if (rc >= 0)
			return rc;
		if (now_s() > end) {
			fprintf(stderr, "%s: no driver came within %ld s\n", who, o->timeout_s);
			return 1;
		}
		usleep(10000);
	}
}

/* Asks the peer what it received since the previous sync, data numbering restarting at 0. */
static int sync_peer(struct sivshm_channel *ch, int timeout_ms, uint64_t *messages,
		     uint64_t *bytes, uint64_t *peer_rings)
{
	uint8_t m[MIN_SIZE], rep[REPORT_LEN];
	message(m, sizeof(m), SYNC, 0);
	int r = sivshm_channel_send(ch, m, sizeof(m), timeout_ms);
	size_t len = 0;
	if (r == SIVSHM_OK)
		r = sivshm_channel_receive(ch, rep, sizeof(rep), &len, timeout_ms);
	if (r < 0) {
		fprintf(stderr, "%s: sync: %s (%d): %s\n", who, sivshm_strerror(r), r,
			sivshm_channel_last_error(ch));
		return -1;
	}
	if (len != REPORT_LEN || check(rep, len, REPORT, messages)) {
		fprintf(stderr, "%s: the peer's report is %zu bytes, not a report\n", who, len);
		return -1;
	}
	*bytes = get_u64(rep + HEADER);
	*peer_rings = get_u64(rep + HEADER + 8);
	return 0;
}

/* Streams `size`-byte messages until the time (or count) is up; prints the figure. */
static int stream(struct sivshm_channel *ch, const struct options *o, size_t size, uint8_t *m)
{
	int timeout_ms = (int)(o->timeout_s * 1000);
	uint64_t n, b, pr;
	if (sync_peer(ch, timeout_ms, &n, &b, &pr))
		return 1;
	uint64_t rings0 = rings(ch);
	message(m, size, DATA, 0);
	double t0 = now_s(), last = -1;
	/* The clock is read every `every` messages, `every` doubling while a stretch takes
	 * under a millisecond (as sivshm-probe's Clock): a guest's clock read may cost more
	 * than a small message. */
	uint64_t sent = 0, every = 1, left = 1;
	unsigned unflushed = 0;
	for (;;) {
		if (o->messages) {
			if (sent >= o->messages)
				break;
		} else if (--left == 0) {
			double t = now_s();
			if (last >= 0 && t - last < 1e-3 && every < (1u << 20))
				every *= 2;
			last = t;
			left = every;
			if (t - t0 >= o->seconds)
				break;
		}
		stamp(m, size, sent);
		/* Committed as one of a batch, published and the peer woken at the flush. */
		int r = sivshm_channel_send_batched(ch, m, size, timeout_ms);
		if (r == SIVSHM_OK && ++unflushed >= o->flush_every) {
			unflushed = 0;
			r = sivshm_channel_flush(ch);
		}
		if (r < 0) {
			fprintf(stderr, "%s: message %llu of %zu bytes: %s (%d): %s\n", who,
				(unsigned long long)sent, size, sivshm_strerror(r), r,
				sivshm_channel_last_error(ch));
			return 1;
		}
		sent++;
	}
	uint64_t ours = rings(ch) - rings0;
	if (sync_peer(ch, timeout_ms, &n, &b, &pr))
		return 1;
	double seconds = now_s() - t0;
	if (n != sent || b != sent * size) {
		fprintf(stderr, "%s: the peer received %llu messages (%llu bytes), %llu of %zu bytes "
			"were sent\n", who, (unsigned long long)n, (unsigned long long)b,
			(unsigned long long)sent, size);
		return 1;
	}
	/* For people, and the same figures as data (the lab reads only the latter). */
	printf("throughput sivshm-c: size=%zu messages=%llu seconds=%.3f mib_s=%.2f msgs_s=%.0f "
	       "rings_per_msg=%.4f\n", size, (unsigned long long)sent, seconds,
	       (double)sent * (double)size / seconds / (1 << 20), (double)sent / seconds,
	       (double)(ours + pr) / (double)(sent ? sent : 1));
	printf("SIVSHM-RESULT probe kind=throughput transport=sivshm-c size=%zu messages=%llu "
	       "seconds=%.3f mib_s=%.2f msgs_s=%.0f rings_per_msg=%.4f\n", size,
	       (unsigned long long)sent, seconds,
	       (double)sent * (double)size / seconds / (1 << 20), (double)sent / seconds,
	       (double)(ours + pr) / (double)(sent ? sent : 1));
	fflush(stdout);
	return 0;
}

static int drive(const struct options *o)
{
	int timeout_ms = (int)(o->timeout_s * 1000);
	struct sivshm_channel *ch = attach(o, SIVSHM_MANAGER);
	die_on(sivshm_channel_wait_for_peer(ch, timeout_ms), who, "waiting for the peer", ch);
	size_t max = sivshm_channel_max_message(ch), biggest = MIN_SIZE;
	for (int i = 0; i < o->nsizes; i++) {
		if (o->sizes[i] < MIN_SIZE || o->sizes[i] > max) {
			fprintf(stderr, "%s: message size %llu is not within %d and the channel's "
				"largest message, %zu bytes\n", who, o->sizes[i], MIN_SIZE, max);
			sivshm_channel_close(ch);
			return 2;
		}
		if (o->sizes[i] > biggest)
			biggest = o->sizes[i];
	}
	uint8_t *m = malloc(biggest);
	int rc = !m;
	for (int i = 0; !rc && i < o->nsizes; i++)
		rc = stream(ch, o, o->sizes[i], m);
	if (!rc) {
		uint8_t bye[MIN_SIZE], back[MIN_SIZE];
		size_t len = 0;
		uint64_t seq;
		message(bye, sizeof(bye), BYE, 0);
		int r = sivshm_channel_send(ch, bye, sizeof(bye), timeout_ms);
		if (r == SIVSHM_OK)
			r = sivshm_channel_receive(ch, back, sizeof(back), &len, timeout_ms);
		if (r < 0 || check(back, len, BYE, &seq)) {
			fprintf(stderr, "%s: the peer's goodbye: %s\n", who, sivshm_strerror(r));
			rc = 1;
		}
	}
	free(m);
	sivshm_channel_close(ch);
	return rc;
}

static int usage(const char *argv0)
{
	fprintf(stderr, "usage: %s serve|throughput [--sizes N[,N...]] [--seconds S | --messages N] "
		"[--flush-every N] [--timeout S] [--spin-us N] [--spin-max-us N] "
		"(DEVICE | --fd SHM:LEN:WAKE:RING)\n", argv0);
	return 2;
}

int main(int argc, char **argv)
{
	struct options o = {
		.timeout_s = 120, .spin_us = -1, .spin_max_us = -1, .seconds = 2.0,
		.flush_every = 64, .nsizes = 2, .sizes = { 65536, 1 << 20 },
	};
	if (argc < 2)
		return usage(argv[0]);
	const char *mode = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--timeout") && v)
			o.timeout_s = atol(v);
		else if (!strcmp(a, "--spin-us") && v)
			o.spin_us = atoll(v);
		else if (!strcmp(a, "--spin-max-us") && v)
			o.spin_max_us = atoll(v);
		else if (!strcmp(a, "--seconds") && v)
			o.seconds = atof(v);
		else if (!strcmp(a, "--messages") && v)
			o.messages = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--flush-every") && v)
			o.flush_every = (unsigned)atoi(v);
		else if (!strcmp(a, "--fd") && v)
			o.fd_spec = v;
		else if (!strcmp(a, "--sizes") && v) {
			char *copy = strdup(v);
			o.nsizes = 0;
			for (char *s = strtok(copy, ","); s; s = strtok(NULL, ",")) {
				if (o.nsizes == 16)
					return usage(argv[0]);
				o.sizes[o.nsizes++] = strtoull(s, NULL, 0);
			}
			free(copy);
		} else if (a[0] != '-' && !o.device) {
			o.device = a;
			continue;
		} else
			return usage(argv[0]);
		i++;
	}
	if (!!o.device == !!o.fd_spec || o.timeout_s <= 0 || !o.flush_every || !o.nsizes ||
	    (!o.messages && !(o.seconds > 0)))
		return usage(argv[0]);
	if (!strcmp(mode, "serve"))
		return serve(&o);
	if (!strcmp(mode, "throughput"))
		return drive(&o);
	return usage(argv[0]);
}
