/* addr.h: the benchmark tools' one parser of "IPV4:PORT" (loadgen, openloop, refserver). */
#ifndef UDPRELAYD_BENCH_ADDR_H
#define UDPRELAYD_BENCH_ADDR_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Parses "IPV4:PORT" into `out`; 0 on success, -1 when it is not one. */
static inline int parse_addr(const char *s, struct sockaddr_in *out) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}
#endif
