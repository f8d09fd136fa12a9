/*
 * openloop: paced (open-loop) UDP load client for the udprelayd benchmark.
 *
 * Sends datagrams at a fixed offered rate (-r per second) for -d seconds, whatever the server
 * does: the send schedule is fixed in advance (datagram i leaves at start + i/rate), not driven by
 * replies, so the server sees the arrival pattern of an everyday client population rather than
 * the full batches a closed-loop client produces. Datagrams go out round-robin from S client
 * sockets (-s), so a relay sees S sessions. Every datagram carries (magic, sequence) followed by
 * a pattern derived from the sequence; each reply must match byte for byte and arrive once.
 *
 * Bounded: sends exactly rate x seconds datagrams (at most 10,000,000), then waits at most -T
 * milliseconds (default 1000) for the last replies; the rest count as lost.
 *
 * Prints one JSON object on stdout: sent, replies, lost, corrupt, duplicate, the achieved send
 * rate, and round-trip p50/p99 in microseconds.
 *
 * Exit status: 0 when every datagram came back intact exactly once, 1 on loss, corruption or
 * duplicates, 2 on usage or system errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"

#define MAGIC 0x4F50454Eu /* "OPEN" */
#define HEADER 16
#define BATCH 64
#define MAX_SOCKETS 64
#define MAX_TOTAL 10000000ull
#define MAX_PAYLOAD 65000

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int payload = 64;

static void fill(unsigned char *buf, uint64_t seq) {
    uint32_t magic = MAGIC, zero = 0;
    memcpy(buf, &magic, 4);
    memcpy(buf + 4, &zero, 4);
    memcpy(buf + 8, &seq, 8);
    uint64_t x = seq * 0x9E3779B97F4A7C15ull + 1;
    for (int i = HEADER; i < payload; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int n = payload - i < 8 ? payload - i : 8;
        memcpy(buf + i, &x, (size_t)n);
    }
}

/* Round-trip times, in microseconds, bucketed 1 µs up to 100 ms. */
#define RTT_BUCKETS 100000
static uint32_t rtt[RTT_BUCKETS];
static uint64_t rtt_count;

static double percentile_us(double p) {
    if (rtt_count == 0) return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)rtt_count), seen = 0;
    for (int b = 0; b < RTT_BUCKETS; b++) {
        seen += rtt[b];
        if (seen > rank) return b;
    }
    return RTT_BUCKETS;
}

static void usage(void) {
    fprintf(stderr, "usage: openloop -t IPV4:PORT -r RATE [-d SECONDS] [-s SOCKETS] [-p PAYLOAD] [-T DRAIN_MS]\n");
    exit(2);
}

int main(int argc, char **argv) {
    double duration = 5.0, rate = 0;
    int nsocks = 8;
    uint64_t drain_ns = 1000000000ull;
    const char *t = NULL;
    struct sockaddr_in target;
    int opt;
    while ((opt = getopt(argc, argv, "t:r:d:s:p:T:")) != -1) {
        switch (opt) {
        case 't': t = optarg; break;
        case 'r': rate = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 's': nsocks = atoi(optarg); break;
        case 'p': payload = atoi(optarg); break;
        case 'T': drain_ns = strtoull(optarg, NULL, 10) * 1000000ull; break;
        default: usage();
        }
    }
    uint64_t total = (uint64_t)(rate * duration);
    if (!t || parse_addr(t, &target) != 0 || rate < 1 || duration <= 0 || duration > 600 || nsocks < 1 ||
        nsocks > MAX_SOCKETS || payload < HEADER || payload > MAX_PAYLOAD || total == 0 || total > MAX_TOTAL)
        usage();
    /* Wake up on time: the default 50 µs timer slack would bunch sends at 20,000/s and above. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

    int fds[MAX_SOCKETS];
    struct pollfd pfd[MAX_SOCKETS];
    for (int s = 0; s < nsocks; s++) {
        fds[s] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fds[s] < 0) { perror("socket"); return 2; }
        int buf = 4 << 20;
        setsockopt(fds[s], SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
        setsockopt(fds[s], SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
        struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(fds[s], (struct sockaddr *)&local, sizeof local) != 0) { perror("bind"); return 2; }
        if (connect(fds[s], (struct sockaddr *)&target, sizeof target) != 0) { perror("connect"); return 2; }
        pfd[s] = (struct pollfd){.fd = fds[s], .events = POLLIN};
    }

    /* One bit per datagram: replied already. The send time is recomputed from the schedule. */
    unsigned char *seen = calloc((size_t)(total + 7) / 8, 1);
    unsigned char *tx = malloc((size_t)payload), *expect = malloc((size_t)payload);
    size_t rxsize = (size_t)payload + 64;
    unsigned char *rxbufs = malloc(BATCH * rxsize);
    if (!seen || !tx || !expect || !rxbufs) { perror("malloc"); return 2; }
    struct mmsghdr rxm[BATCH];
    struct iovec rxiov[BATCH];

    uint64_t sent = 0, replies = 0, corrupt = 0, duplicate = 0, send_errors = 0;
    double interval = 1e9 / rate;
    uint64_t start = now_ns() + 1000000ull, last_sent_at = start, deadline = 0;
    for (;;) {
        uint64_t now = now_ns();
        /* Send everything that is due. */
        while (sent < total && start + (uint64_t)((double)sent * interval) <= now) {
            fill(tx, sent);
            if (send(fds[sent % (uint64_t)nsocks], tx, (size_t)payload, 0) < 0 && errno != EINTR) send_errors++;
            last_sent_at = now;
            sent++;
        }
        if (sent == total && deadline == 0) deadline = now + drain_ns;
        if (deadline && (replies + corrupt >= total || now >= deadline)) break;
        /* Wait for replies until the next send is due. */
        uint64_t next = sent < total ? start + (uint64_t)((double)sent * interval) : deadline;
        struct timespec ts = {0, 0};
        if (next > now) ts = (struct timespec){(time_t)((next - now) / 1000000000ull), (long)((next - now) % 1000000000ull)};
        int n = ppoll(pfd, (nfds_t)nsocks, &ts, NULL);
        if (n <= 0) continue;
        for (int s = 0; s < nsocks; s++) {
            if (!(pfd[s].revents & POLLIN)) continue;
            for (;;) {
                for (int i = 0; i < BATCH; i++) {
                    rxiov[i] = (struct iovec){rxbufs + (size_t)i * rxsize, rxsize};
                    memset(&rxm[i].msg_hdr, 0, sizeof rxm[i].msg_hdr);
                    rxm[i].msg_hdr.msg_iov = &rxiov[i];
                    rxm[i].msg_hdr.msg_iovlen = 1;
                }
                int r = recvmmsg(fds[s], rxm, BATCH, MSG_DONTWAIT, NULL);
                if (r <= 0) break;
                uint64_t at = now_ns();
                for (int i = 0; i < r; i++) {
                    unsigned char *b = rxiov[i].iov_base;
                    uint64_t seq;
                    uint32_t magic;
                    if (rxm[i].msg_len != (unsigned)payload) { corrupt++; continue; }
                    memcpy(&magic, b, 4);
                    memcpy(&seq, b + 8, 8);
                    if (magic != MAGIC || seq >= sent) { corrupt++; continue; }
                    fill(expect, seq);
                    if (memcmp(b, expect, (size_t)payload) != 0) { corrupt++; continue; }
                    if (seen[seq / 8] & (1u << (seq % 8))) { duplicate++; continue; }
                    seen[seq / 8] |= (unsigned char)(1u << (seq % 8));
                    replies++;
                    uint64_t sent_at = start + (uint64_t)((double)seq * interval);
                    uint64_t us = at > sent_at ? (at - sent_at) / 1000 : 0;
                    rtt[us < RTT_BUCKETS ? us : RTT_BUCKETS - 1]++;
                    rtt_count++;
                }
                if (r < BATCH) break;
            }
        }
    }
    double secs = (double)(last_sent_at - start) / 1e9;
    printf("{\"sent\": %" PRIu64 ", \"replies\": %" PRIu64 ", \"lost\": %" PRIu64 ", \"corrupt\": %" PRIu64
           ", \"duplicate\": %" PRIu64 ", \"send_errors\": %" PRIu64 ", \"offered_rate\": %.0f, \"p50_us\": %.0f, \"p99_us\": %.0f}\n",
           sent, replies, total - replies, corrupt, duplicate, send_errors, secs > 0 ? (double)(sent - 1) / secs : 0,
           percentile_us(50), percentile_us(99));
    return (replies != total || corrupt || duplicate) ? 1 : 0;
}
