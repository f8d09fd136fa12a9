#ifndef UDPRELAYD_CUDPRELAY_SEALED_H
#define UDPRELAYD_CUDPRELAY_SEALED_H

#include <stddef.h>

/// A memfd (close-on-exec) holding `length` bytes of `data`, sealed against any change
/// (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL). Returns the descriptor, or -1
/// with errno set. memfd_create and the F_SEAL_* flags need _GNU_SOURCE, which Swift's Glibc
/// module is built without.
int cur_sealed_memfd(const char *name, const void *data, size_t length);

/// Whether `fd` is a memfd carrying all the seals `cur_sealed_memfd` sets: 1 yes, 0 no, -1 with
/// errno set when the seals cannot be read (not a memfd).
int cur_is_sealed_memfd(int fd);

#endif
