// File descriptors passed between processes (SCM_RIGHTS): loomd hands its listeners and
// its state-directory lock to the loomd that takes over from it.
#define _GNU_SOURCE
#include "CLoomLinux.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/// A SOCK_SEQPACKET socket and `path` as its address; the fd or -errno.
static int seqpacket_socket(const char *path, struct sockaddr_un *addr) {
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr->sun_path) return -ENAMETOOLONG;
    strcpy(addr->sun_path, path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

int cloom_seqpacket_listen(const char *path) {
    struct sockaddr_un addr;
    int fd = seqpacket_socket(path, &addr);
    if (fd < 0) return fd;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 4) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int cloom_seqpacket_connect(const char *path) {
    struct sockaddr_un addr;
    int fd = seqpacket_socket(path, &addr);
    if (fd < 0) return fd;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int cloom_send_fds(int sock, const void *data, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > CLOOM_MAX_PASSED_FDS) return -EINVAL;
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * CLOOM_MAX_PASSED_FDS)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : (int)n;
}

int cloom_recv_fds(int sock, void *buf, size_t cap, int *fds, int max_fds, int *nfds) {
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    union {
        char buf[CMSG_SPACE(sizeof(int) * CLOOM_MAX_PASSED_FDS)];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    *nfds = 0;
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *received = (int *)CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            if (*nfds < max_fds) {
                fds[(*nfds)++] = received[i];
            } else {
                close(received[i]);  // more than the caller can take: never leak them
            }
        }
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (int i = 0; i < *nfds; i++) close(fds[i]);
        *nfds = 0;
        return -EMSGSIZE;
    }
    return (int)n;
}

#include <signal.h>
#include <spawn.h>

extern char **environ;

int cloom_spawn(const char *path, char *const argv[]) {
    posix_spawnattr_t attr;
    if (posix_spawnattr_init(&attr) != 0) return -ENOMEM;
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    pid_t pid;
    int rc = posix_spawn(&pid, path, NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    return rc == 0 ? (int)pid : -rc;
}

#include <netinet/in.h>
#include <netinet/tcp.h>

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

int cloom_tcp_ulp_tls(int fd) {
    return setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof "tls") == 0 ? 0 : -errno;
}
