/*
 * loadgen: closed-loop UDP load client for the udprelayd benchmark.
 *
 * Keeps W datagrams in flight towards one server from S client sockets. Every datagram carries
 * (magic, slot, sequence) followed by a pattern derived from the sequence number; each reply must
 * match what was sent byte for byte. A reply completes its slot and the slot sends the next
 * datagram at once (closed loop). A slot whose reply does not come back within the loss timeout
 * counts one loss and sends afresh; a reply that arrives after that counts as late.
 *
 * Bounded: stops sending after -d seconds or -n datagrams sent, whichever comes first, then waits
 * at most one loss timeout for the datagrams still in flight (those that do not come back are
 * losses).
 *
 * Prints one JSON object on stdout: replies, replies/s over the measured window (after -u
 * seconds of warm-up), round-trip p50/p99/p99.9/max in microseconds, lost, corrupt, late.
 *
 * With -a N the datagrams leave from N different loopback source addresses (127.1.0.0 + i, chosen
 * per datagram with IP_PKTINFO), so a relay sees N distinct client sessions from one socket.
 *
 * Exit status: 0 when every datagram came back intact, 1 on loss or corruption, 2 on usage or
 * system errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"

#define MAGIC 0x55445042u /* "UDPB" */
#define HEADER 16
#define BATCH 64
#define MAX_SOCKETS 256
#define MAX_WINDOW 65536
#define MAX_PAYLOAD 65000

/* ---- log-linear histogram (HdrHistogram-style, 1/128 relative precision) in nanoseconds ---- */
#define SUB_BITS 7
#define SUB (1 << SUB_BITS)
#define HBUCKETS (64 * SUB)

static uint64_t hist[HBUCKETS];
static uint64_t hist_count, hist_max;

static inline int bucket_of(uint64_t v) {
    if (v < 2 * SUB) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - SUB_BITS;
    return (shift + 1) * SUB + (int)((v >> shift) - SUB);
}

static inline uint64_t bucket_value(int b) {
    /* midpoint of the bucket */
    if (b < 2 * SUB) return (uint64_t)b;
    int shift = b / SUB - 1;
    uint64_t low = (uint64_t)(b % SUB + SUB) << shift;
    return low + ((1ull << shift) >> 1);
}

static void hist_record(uint64_t v) {
    int b = bucket_of(v);
    if (b >= HBUCKETS) b = HBUCKETS - 1;
    hist[b]++;
    hist_count++;
    if (v > hist_max) hist_max = v;
}

static double hist_percentile_us(double p) {
    if (hist_count == 0) return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)hist_count);
    if (rank >= hist_count) rank = hist_count - 1;
    uint64_t seen = 0;
    for (int b = 0; b < HBUCKETS; b++) {
        seen += hist[b];
        if (seen > rank) return (double)(bucket_value(b) < hist_max ? bucket_value(b) : hist_max) / 1000.0;
    }
    return (double)hist_max / 1000.0;
}

/* ---- state ---- */
struct slot {
    uint64_t seq;      /* sequence number of the datagram in flight */
    uint64_t sent_ns;  /* when it was sent */
    int busy;          /* awaiting a reply */
    int sock;          /* index of the socket it is sent from */
    uint32_t source;   /* source address index (with -a) */
    unsigned char *buf;
};

static struct slot *slots;
static int nsocks = 1, window = 1, payload = 64, nsources = 0;
static int fds[MAX_SOCKETS];
static struct sockaddr_in target;
static uint64_t next_seq = 1;
static uint64_t sent, replies, measured, lost, corrupt, late;
static uint64_t measure_from_ns, stop_ns, timeout_ns = 250000000ull;

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fill(unsigned char *buf, uint32_t slot, uint64_t seq) {
    uint32_t magic = MAGIC;
    memcpy(buf, &magic, 4);
    memcpy(buf + 4, &slot, 4);
    memcpy(buf + 8, &seq, 8);
    uint64_t x = seq * 0x9E3779B97F4A7C15ull + slot;
    for (int i = HEADER; i < payload; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int n = payload - i < 8 ? payload - i : 8;
        memcpy(buf + i, &x, (size_t)n);
    }
}

/* Pending sends per socket, flushed with sendmmsg. */
static struct mmsghdr txm[MAX_SOCKETS][BATCH];
static struct iovec txiov[MAX_SOCKETS][BATCH];
static char txctl[MAX_SOCKETS][BATCH][CMSG_SPACE(sizeof(struct in_pktinfo))];
static int txn[MAX_SOCKETS];

static void flush(int s) {
    int off = 0;
    while (off < txn[s]) {
        int r = sendmmsg(fds[s], txm[s] + off, (unsigned)(txn[s] - off), 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            /* EAGAIN/ENOBUFS/ECONNREFUSED: the datagram is gone; its slot will time out as lost. */
            off++;
            continue;
        }
        off += r;
    }
    txn[s] = 0;
}

static void queue_send(int k, uint64_t now) {
    struct slot *sl = &slots[k];
    sl->seq = next_seq++;
    if (nsources > 0) sl->source = (uint32_t)((sl->seq - 1) % (uint64_t)nsources);
    fill(sl->buf, (uint32_t)k, sl->seq);
    sl->busy = 1;
    sl->sent_ns = now;
    int s = sl->sock;
    if (txn[s] == BATCH) flush(s);
    int j = txn[s]++;
    txiov[s][j].iov_base = sl->buf;
    txiov[s][j].iov_len = (size_t)payload;
    memset(&txm[s][j], 0, sizeof txm[s][j]);
    txm[s][j].msg_hdr.msg_iov = &txiov[s][j];
    txm[s][j].msg_hdr.msg_iovlen = 1;
    txm[s][j].msg_hdr.msg_name = &target;
    txm[s][j].msg_hdr.msg_namelen = sizeof target;
    if (nsources > 0) {
        char *c = txctl[s][j];
        memset(c, 0, CMSG_SPACE(sizeof(struct in_pktinfo)));
        txm[s][j].msg_hdr.msg_control = c;
        txm[s][j].msg_hdr.msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&txm[s][j].msg_hdr);
        cm->cmsg_level = IPPROTO_IP;
        cm->cmsg_type = IP_PKTINFO;
        cm->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        struct in_pktinfo pi;
        memset(&pi, 0, sizeof pi);
        pi.ipi_spec_dst.s_addr = htonl(0x7F010000u + sl->source);
        memcpy(CMSG_DATA(cm), &pi, sizeof pi);
    }
    sent++;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen -t IPV4:PORT [-w WINDOW] [-s SOCKETS] [-p PAYLOAD] [-d SECONDS]\n"
            "               [-n MAX_DATAGRAMS] [-u WARMUP_SECONDS] [-T LOSS_TIMEOUT_MS] [-a SOURCES]\n");
    exit(2);
}

int main(int argc, char **argv) {
    double duration = 2.0, warmup = 0.2;
    uint64_t max_sent = UINT64_MAX;
    const char *t = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "t:w:s:p:d:n:u:T:a:")) != -1) {
        switch (opt) {
        case 't': t = optarg; break;
        case 'w': window = atoi(optarg); break;
        case 's': nsocks = atoi(optarg); break;
        case 'p': payload = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'n': max_sent = strtoull(optarg, NULL, 10); break;
        case 'u': warmup = atof(optarg); break;
        case 'T': timeout_ns = strtoull(optarg, NULL, 10) * 1000000ull; break;
        case 'a': nsources = atoi(optarg); break;
        default: usage();
        }
    }
    if (!t || parse_addr(t, &target) != 0 || window < 1 || window > MAX_WINDOW || nsocks < 1 ||
        nsocks > MAX_SOCKETS || payload < HEADER || payload > MAX_PAYLOAD || duration <= 0 ||
        duration > 600 || nsources < 0 || (nsources > 0 && nsocks != 1))
        usage();
    if (nsocks > window) nsocks = window;

    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int s = 0; s < nsocks; s++) {
        fds[s] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fds[s] < 0) { perror("socket"); return 2; }
        int buf = 4 << 20;
        setsockopt(fds[s], SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
        setsockopt(fds[s], SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
        struct sockaddr_in local = {.sin_family = AF_INET};
        /* With many sources, bind the wildcard so replies to every 127.1.x.y arrive here. */
        local.sin_addr.s_addr = nsources > 0 ? htonl(INADDR_ANY) : htonl(INADDR_LOOPBACK);
        if (bind(fds[s], (struct sockaddr *)&local, sizeof local) != 0) { perror("bind"); return 2; }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)s};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[s], &ev);
    }

    slots = calloc((size_t)window, sizeof *slots);
    unsigned char *txbufs = malloc((size_t)window * (size_t)payload);
    size_t rxsize = (size_t)payload + 64;
    unsigned char *rxbufs = malloc(BATCH * rxsize);
    struct mmsghdr rxm[BATCH];
    struct iovec rxiov[BATCH];
    if (!slots || !txbufs || !rxbufs) { perror("malloc"); return 2; }

    uint64_t start = now_ns();
    measure_from_ns = start + (uint64_t)(warmup * 1e9);
    stop_ns = start + (uint64_t)(duration * 1e9);
    if (measure_from_ns >= stop_ns) measure_from_ns = start;
    for (int k = 0; k < window; k++) {
        slots[k].buf = txbufs + (size_t)k * (size_t)payload;
        slots[k].sock = k % nsocks;
        if (sent < max_sent) queue_send(k, start);
    }
    for (int s = 0; s < nsocks; s++) flush(s);

    int sending = 1;
    uint64_t inflight = sent, last_scan = start, drain_deadline = 0;
    struct epoll_event evs[MAX_SOCKETS];
    while (inflight > 0) {
        int n = epoll_wait(ep, evs, MAX_SOCKETS, 5);
        uint64_t now = now_ns();
        for (int e = 0; e < n; e++) {
            int s = (int)evs[e].data.u32;
            for (;;) {
                for (int i = 0; i < BATCH; i++) {
                    rxiov[i].iov_base = rxbufs + (size_t)i * rxsize;
                    rxiov[i].iov_len = rxsize;
                    memset(&rxm[i].msg_hdr, 0, sizeof rxm[i].msg_hdr);
                    rxm[i].msg_hdr.msg_iov = &rxiov[i];
                    rxm[i].msg_hdr.msg_iovlen = 1;
                }
                int r = recvmmsg(fds[s], rxm, BATCH, MSG_DONTWAIT, NULL);
                if (r <= 0) break;
                now = now_ns();
                for (int i = 0; i < r; i++) {
                    unsigned char *b = rxiov[i].iov_base;
                    uint32_t len = rxm[i].msg_len, magic, k;
                    uint64_t seq;
                    if (len < HEADER) { corrupt++; continue; }
                    memcpy(&magic, b, 4);
                    memcpy(&k, b + 4, 4);
                    memcpy(&seq, b + 8, 8);
                    if (magic != MAGIC || k >= (uint32_t)window) { corrupt++; continue; }
                    struct slot *sl = &slots[k];
                    if (!sl->busy || seq != sl->seq) {
                        if (seq < sl->seq || (!sl->busy && seq == sl->seq)) late++;
                        else corrupt++;
                        continue;
                    }
                    if (len != (uint32_t)payload || memcmp(b, sl->buf, (size_t)payload) != 0) {
                        corrupt++;
                        continue; /* the slot stays busy and times out as a loss */
                    }
                    sl->busy = 0;
                    inflight--;
                    replies++;
                    if (sl->sent_ns >= measure_from_ns && now <= stop_ns) {
                        measured++;
                        hist_record(now - sl->sent_ns);
                    }
                    if (sending && sent >= max_sent) sending = 0;
                    if (sending && now < stop_ns) {
                        queue_send((int)k, now);
                        inflight++;
                    }
                }
                if (r < BATCH) break;
            }
        }
        for (int s = 0; s < nsocks; s++)
            if (txn[s]) flush(s);
        if (sending && now >= stop_ns) sending = 0;
        if (!sending && drain_deadline == 0) drain_deadline = now + timeout_ns;
        if (now - last_scan >= 5000000ull || !sending) {
            last_scan = now;
            for (int k = 0; k < window; k++) {
                struct slot *sl = &slots[k];
                if (!sl->busy) continue;
                if (now - sl->sent_ns >= timeout_ns || (drain_deadline && now >= drain_deadline)) {
                    lost++;
                    sl->busy = 0;
                    inflight--;
                    if (sending && sent >= max_sent) sending = 0;
                    if (sending) {
                        queue_send(k, now);
                        inflight++;
                    }
                }
            }
            for (int s = 0; s < nsocks; s++)
                if (txn[s]) flush(s);
        }
    }
    uint64_t end = now_ns();
    uint64_t window_end = end < stop_ns ? end : stop_ns;
    double secs = (double)(window_end - (measure_from_ns < window_end ? measure_from_ns : start)) / 1e9;
    if (max_sent != UINT64_MAX) secs = (double)(end - start) / 1e9; /* count-bounded run */
    double rate = secs > 0 ? (double)(max_sent != UINT64_MAX ? replies : measured) / secs : 0;
    printf("{\"replies\": %" PRIu64 ", \"sent\": %" PRIu64 ", \"rate\": %.0f, \"p50_us\": %.1f, "
           "\"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, \"lost\": %" PRIu64
           ", \"corrupt\": %" PRIu64 ", \"late\": %" PRIu64 ", \"seconds\": %.3f}\n",
           replies, sent, rate, hist_percentile_us(50), hist_percentile_us(99),
           hist_percentile_us(99.9), (double)hist_max / 1000.0, lost, corrupt, late,
           (double)(end - start) / 1e9);
    return (lost || corrupt || late) ? 1 : 0;
}
