#ifndef UDPRELAYD_CUDPRELAY_H
#define UDPRELAYD_CUDPRELAY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include "CUDPRelaySealed.h"

/// Same layout as glibc's `struct mmsghdr` (checked with static_assert in the .c file);
/// Swift's Glibc module is built without _GNU_SOURCE and cannot see the real one.
struct cur_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};

/// recvmmsg(2) with MSG_DONTWAIT semantics left to the socket (non-blocking sockets).
int cur_recvmmsg(int fd, struct cur_mmsghdr *vec, unsigned int vlen, int flags);

/// sendmmsg(2).
int cur_sendmmsg(int fd, struct cur_mmsghdr *vec, unsigned int vlen, int flags);

/// Bytes of control buffer needed to hold one IPv4 or IPv6 packet-info message.
size_t cur_pktinfo_space(void);

/// Enables IP_PKTINFO (IPv4) or IPV6_RECVPKTINFO (IPv6) on a socket. Returns setsockopt's result.
int cur_enable_pktinfo(int fd, int family);

/// Rewrites the control data of a *received* message in place so that the same msghdr can be
/// handed to sendmsg and the reply leaves from the local address the datagram was sent to.
/// Keeps only the packet-info message (ifindex cleared for IPv4 so routing picks the interface).
/// Sets msg_controllen to 0 when no packet info was received.
void cur_prepare_reply_control(struct msghdr *msg);

/// Writes a packet-info control message that makes sendmsg use `local` (an AF_INET or AF_INET6
/// sockaddr) as the source address. Returns the controllen to use, or 0 when `local` is a wildcard
/// or of an unknown family.
size_t cur_write_source_control(void *control, size_t capacity, const struct sockaddr *local, unsigned int ifindex);

/// Extracts the local (destination) address and interface index from a received message's
/// packet-info control data into `out` (port left 0). Returns 1 when found, 0 otherwise.
int cur_received_destination(const struct msghdr *msg, struct sockaddr_storage *out, unsigned int *ifindex);

/// One ready descriptor reported by `cur_epoll_poll`: the tag it was added with and its epoll
/// events. (glibc's `struct epoll_event` is packed on x86_64, which Swift imports badly.)
struct cur_ready {
    uint64_t tag;
    uint32_t events;
};

/// epoll_create1(EPOLL_CLOEXEC).
int cur_epoll_create(void);

/// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC).
int cur_eventfd(void);

/// Adds `fd` to `epfd` for EPOLLIN, level-triggered, reported with `tag` (EPOLLERR is always
/// reported). Returns epoll_ctl's result.
int cur_epoll_add(int epfd, int fd, uint64_t tag);

/// Removes `fd` from `epfd`. Returns epoll_ctl's result.
int cur_epoll_remove(int epfd, int fd);

/// epoll_wait for up to `timeout` milliseconds (0: do not block, -1: no limit): writes up to
/// `max` (at most 64) ready descriptors to `ready` and returns how many, or -1 with errno.
int cur_epoll_wait(int epfd, struct cur_ready *ready, int max, int timeout);

/// epoll_wait without blocking: writes up to `max` (at most 64) ready descriptors to `ready`
/// and returns how many, or -1 with errno.
int cur_epoll_poll(int epfd, struct cur_ready *ready, int max);

/// One sendmsg(2) of `iovcnt` buffers as a UDP GSO send (UDP_SEGMENT): the kernel sends the
/// concatenated payload as datagrams of `segment` bytes each (the last may be shorter).
/// `name`/`namelen`: the destination, or NULL/0 on a connected socket. `control`/`controllen`:
/// other control messages to send along (packet info), or NULL/0. Returns sendmsg's result.
long cur_send_segmented(int fd, void *name, socklen_t namelen, struct iovec *iov, int iovcnt,
                        uint16_t segment, const void *control, size_t controllen);

/// Constants that Swift cannot import as plain values.
extern const int CUR_MSG_TRUNC;
extern const int CUR_MSG_DONTWAIT;
extern const int CUR_SO_REUSEPORT;
extern const int CUR_IPV6_V6ONLY;
extern const int CUR_SOCK_CLOEXEC;
extern const int CUR_SOCK_NONBLOCK;

#endif
