#include "CUDPRelay.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <netinet/udp.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

_Static_assert(sizeof(struct cur_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr size");
_Static_assert(offsetof(struct cur_mmsghdr, msg_hdr) == offsetof(struct mmsghdr, msg_hdr), "mmsghdr.msg_hdr");
_Static_assert(offsetof(struct cur_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "mmsghdr.msg_len");

const int CUR_MSG_TRUNC = MSG_TRUNC;
const int CUR_MSG_DONTWAIT = MSG_DONTWAIT;
const int CUR_SO_REUSEPORT = SO_REUSEPORT;
const int CUR_IPV6_V6ONLY = IPV6_V6ONLY;
const int CUR_SOCK_CLOEXEC = SOCK_CLOEXEC;
const int CUR_SOCK_NONBLOCK = SOCK_NONBLOCK;

int cur_recvmmsg(int fd, struct cur_mmsghdr *vec, unsigned int vlen, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)vec, vlen, flags, NULL);
}

int cur_sendmmsg(int fd, struct cur_mmsghdr *vec, unsigned int vlen, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)vec, vlen, flags);
}

size_t cur_pktinfo_space(void) {
    size_t v4 = CMSG_SPACE(sizeof(struct in_pktinfo));
    size_t v6 = CMSG_SPACE(sizeof(struct in6_pktinfo));
    return v4 > v6 ? v4 : v6;
}

int cur_enable_pktinfo(int fd, int family) {
    int on = 1;
    if (family == AF_INET6) {
        return setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof(on));
    }
    return setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof(on));
}

void cur_prepare_reply_control(struct msghdr *msg) {
    if (msg->msg_control == NULL || msg->msg_controllen == 0) {
        msg->msg_controllen = 0;
        return;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof(info));
            info.ipi_ifindex = 0;
            info.ipi_addr.s_addr = 0;
            struct cmsghdr *first = (struct cmsghdr *)msg->msg_control;
            first->cmsg_level = IPPROTO_IP;
            first->cmsg_type = IP_PKTINFO;
            first->cmsg_len = CMSG_LEN(sizeof(info));
            memcpy(CMSG_DATA(first), &info, sizeof(info));
            msg->msg_controllen = CMSG_SPACE(sizeof(info));
            return;
        }
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof(info));
            struct cmsghdr *first = (struct cmsghdr *)msg->msg_control;
            first->cmsg_level = IPPROTO_IPV6;
            first->cmsg_type = IPV6_PKTINFO;
            first->cmsg_len = CMSG_LEN(sizeof(info));
            memcpy(CMSG_DATA(first), &info, sizeof(info));
            msg->msg_controllen = CMSG_SPACE(sizeof(info));
            return;
        }
    }
    msg->msg_controllen = 0;
}

size_t cur_write_source_control(void *control, size_t capacity, const struct sockaddr *local, unsigned int ifindex) {
    if (control == NULL || local == NULL) return 0;
    struct msghdr m;
    memset(&m, 0, sizeof(m));
    m.msg_control = control;
    if (local->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)local;
        if (sin->sin_addr.s_addr == htonl(INADDR_ANY)) return 0;
        if (capacity < CMSG_SPACE(sizeof(struct in_pktinfo))) return 0;
        m.msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
        memset(control, 0, m.msg_controllen);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        struct in_pktinfo info;
        memset(&info, 0, sizeof(info));
        info.ipi_spec_dst = sin->sin_addr;
        memcpy(CMSG_DATA(c), &info, sizeof(info));
        return m.msg_controllen;
    }
    if (local->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)local;
        if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr)) return 0;
        if (capacity < CMSG_SPACE(sizeof(struct in6_pktinfo))) return 0;
        m.msg_controllen = CMSG_SPACE(sizeof(struct in6_pktinfo));
        memset(control, 0, m.msg_controllen);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = IPPROTO_IPV6;
        c->cmsg_type = IPV6_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
        struct in6_pktinfo info;
        memset(&info, 0, sizeof(info));
        info.ipi6_addr = sin6->sin6_addr;
        info.ipi6_ifindex = ifindex;
        memcpy(CMSG_DATA(c), &info, sizeof(info));
        return m.msg_controllen;
    }
    return 0;
}

int cur_received_destination(const struct msghdr *msg, struct sockaddr_storage *out, unsigned int *ifindex) {
    if (msg->msg_control == NULL || msg->msg_controllen == 0) return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof(info));
            struct sockaddr_in *sin = (struct sockaddr_in *)out;
            memset(out, 0, sizeof(*out));
            sin->sin_family = AF_INET;
            sin->sin_addr = info.ipi_addr;
            if (ifindex) *ifindex = (unsigned int)info.ipi_ifindex;
            return 1;
        }
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof(info));
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
            memset(out, 0, sizeof(*out));
            sin6->sin6_family = AF_INET6;
            sin6->sin6_addr = info.ipi6_addr;
            if (ifindex) *ifindex = info.ipi6_ifindex;
            return 1;
        }
    }
    return 0;
}

int cur_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

int cur_eventfd(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

int cur_epoll_add(int epfd, int fd, uint64_t tag) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int cur_epoll_remove(int epfd, int fd) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev);
}

int cur_epoll_poll(int epfd, struct cur_ready *ready, int max) {
    return cur_epoll_wait(epfd, ready, max, 0);
}

int cur_epoll_wait(int epfd, struct cur_ready *ready, int max, int timeout) {
    struct epoll_event events[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, events, max, timeout);
    for (int i = 0; i < n; i++) {
        ready[i].tag = events[i].data.u64;
        ready[i].events = events[i].events;
    }
    return n;
}

long cur_send_segmented(int fd, void *name, socklen_t namelen, struct iovec *iov, int iovcnt,
                        uint16_t segment, const void *control, size_t controllen) {
    union {
        char bytes[256];
        struct cmsghdr align;
    } buf;
    size_t room = CMSG_SPACE(sizeof(uint16_t));
    if (controllen > sizeof(buf.bytes) - room) {
        errno = EINVAL;
        return -1;
    }
    memset(buf.bytes, 0, controllen + room);
    if (controllen > 0) memcpy(buf.bytes, control, controllen);
    struct cmsghdr *c = (struct cmsghdr *)(buf.bytes + controllen);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(c), &segment, sizeof(segment));
    struct msghdr m;
    memset(&m, 0, sizeof(m));
    m.msg_name = name;
    m.msg_namelen = namelen;
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)iovcnt;
    m.msg_control = buf.bytes;
    m.msg_controllen = controllen + room;
    return (long)sendmsg(fd, &m, 0);
}
