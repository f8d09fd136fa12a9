/*
 * refserver: the minimal C reference for the udprelayd benchmark, the practical limit of a
 * user-space UDP echo server or relay on the machine.
 *
 *   refserver echo    LISTEN_IPV4:PORT
 *   refserver forward LISTEN_IPV4:PORT UPSTREAM_IPV4:PORT
 *
 * One thread, level-triggered epoll, recvmmsg/sendmmsg in batches of 64, buffers allocated once.
 * echo: every datagram goes back to its sender in place.
 * forward: a session per client address (open-addressing hash table) owns a connected upstream
 * socket; client datagrams go upstream in runs per session with sendmmsg on the connected
 * socket, replies come back from that socket and go to the client with sendmmsg. Sessions never
 * expire (a benchmark run is short). Runs until SIGTERM/SIGINT. Prints "ready IP:PORT" on stdout once
 * bound (port 0 lets the kernel choose).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"

#define BATCH 64
#define BUFSZ 2048
#define MAX_BATCHES 16

static volatile sig_atomic_t stopping;
static void on_signal(int sig) { (void)sig; stopping = 1; }

static struct mmsghdr msgs[BATCH], tx[BATCH];
static struct iovec iovs[BATCH];
static struct sockaddr_in names[BATCH];
static unsigned char bufs[BATCH][BUFSZ];

static int udp_socket(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int buf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
    return fd;
}

static void prepare_receive(int n) {
    for (int i = 0; i < n; i++) {
        iovs[i].iov_base = bufs[i];
        iovs[i].iov_len = BUFSZ;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &names[i];
        msgs[i].msg_hdr.msg_namelen = sizeof names[i];
        msgs[i].msg_hdr.msg_control = NULL;
        msgs[i].msg_hdr.msg_controllen = 0;
        msgs[i].msg_hdr.msg_flags = 0;
    }
}

/* Sends msgs vec[0..n) on fd, skipping datagrams that fail (counted as drops). */
static unsigned long drops;
static void send_all(int fd, struct mmsghdr *vec, int n) {
    int off = 0;
    while (off < n) {
        int r = sendmmsg(fd, vec + off, (unsigned)(n - off), 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            drops++;
            off++;
            continue;
        }
        off += r;
    }
}

static void echo_readable(int fd) {
    for (int b = 0; b < MAX_BATCHES; b++) {
        prepare_receive(BATCH);
        int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        for (int i = 0; i < n; i++) iovs[i].iov_len = msgs[i].msg_len;
        send_all(fd, msgs, n);
        if (n < BATCH) return;
    }
}

/* ---- forward mode ---- */
struct session {
    struct sockaddr_in client; /* key; sin_family == 0 means empty */
    int upstream;
};

static struct session *table;
static size_t table_mask;
static size_t nsessions;
static struct sockaddr_in upstream_addr;
static int listen_fd, ep;

static inline size_t hash_addr(const struct sockaddr_in *a) {
    uint64_t x = ((uint64_t)a->sin_addr.s_addr << 16) ^ a->sin_port;
    x *= 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 29);
}

static struct session *session_for(const struct sockaddr_in *c) {
    size_t i = hash_addr(c) & table_mask;
    for (;;) {
        struct session *s = &table[i];
        if (s->client.sin_family == 0) break;
        if (s->client.sin_addr.s_addr == c->sin_addr.s_addr && s->client.sin_port == c->sin_port) return s;
        i = (i + 1) & table_mask;
    }
    if (nsessions * 2 >= table_mask) return NULL; /* table full: drop */
    struct session *s = &table[i];
    int fd = udp_socket();
    if (fd < 0) return NULL; /* out of descriptors: drop, keep serving */
    if (connect(fd, (struct sockaddr *)&upstream_addr, sizeof upstream_addr) != 0) {
        close(fd);
        return NULL;
    }
    s->client = *c;
    s->upstream = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    nsessions++;
    return s;
}

static void client_readable(void) {
    for (int b = 0; b < MAX_BATCHES; b++) {
        prepare_receive(BATCH);
        int n = recvmmsg(listen_fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        /* Runs of consecutive datagrams from one client go upstream in one sendmmsg. */
        struct session *run = NULL;
        int runlen = 0;
        for (int i = 0; i < n; i++) {
            struct session *s = session_for(&names[i]);
            if (!s) { drops++; continue; }
            if (s != run) {
                if (run) send_all(run->upstream, tx, runlen);
                run = s;
                runlen = 0;
            }
            iovs[i].iov_len = msgs[i].msg_len;
            memset(&tx[runlen].msg_hdr, 0, sizeof tx[runlen].msg_hdr);
            tx[runlen].msg_hdr.msg_iov = &iovs[i];
            tx[runlen].msg_hdr.msg_iovlen = 1;
            runlen++;
        }
        if (run) send_all(run->upstream, tx, runlen);
        if (n < BATCH) return;
    }
}

static void upstream_readable(struct session *s) {
    for (int b = 0; b < MAX_BATCHES; b++) {
        prepare_receive(BATCH);
        for (int i = 0; i < BATCH; i++) {
            msgs[i].msg_hdr.msg_name = NULL;
            msgs[i].msg_hdr.msg_namelen = 0;
        }
        int n = recvmmsg(s->upstream, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        for (int i = 0; i < n; i++) {
            iovs[i].iov_len = msgs[i].msg_len;
            msgs[i].msg_hdr.msg_name = &s->client;
            msgs[i].msg_hdr.msg_namelen = sizeof s->client;
        }
        send_all(listen_fd, msgs, n);
        if (n < BATCH) return;
    }
}

int main(int argc, char **argv) {
    int forward = argc == 4 && strcmp(argv[1], "forward") == 0;
    struct sockaddr_in local;
    if (!((argc == 3 && strcmp(argv[1], "echo") == 0) || forward) || parse_addr(argv[2], &local) != 0 ||
        (forward && parse_addr(argv[3], &upstream_addr) != 0)) {
        fprintf(stderr, "usage: refserver echo LISTEN_IPV4:PORT | refserver forward LISTEN_IPV4:PORT UPSTREAM_IPV4:PORT\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (forward) {
        /* One descriptor per session: raise the limit as far as allowed. */
        struct rlimit rl = {.rlim_cur = 1 << 20, .rlim_max = 1 << 20};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        table_mask = (1u << 19) - 1;
        table = calloc(table_mask + 1, sizeof *table);
        if (!table) { perror("calloc"); return 1; }
    }

    listen_fd = udp_socket();
    if (listen_fd < 0) { perror("socket"); return 1; }
    if (bind(listen_fd, (struct sockaddr *)&local, sizeof local) != 0) { perror("bind"); return 1; }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    getsockname(listen_fd, (struct sockaddr *)&bound, &blen);
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &bound.sin_addr, ip, sizeof ip);
    printf("ready %s:%u\n", ip, ntohs(bound.sin_port));
    fflush(stdout);

    struct epoll_event evs[64];
    while (!stopping) {
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                if (forward) client_readable();
                else echo_readable(listen_fd);
            } else {
                upstream_readable(evs[i].data.ptr);
            }
        }
    }
    fprintf(stderr, "refserver: %zu sessions, %lu drops\n", nsessions, drops);
    return 0;
}
