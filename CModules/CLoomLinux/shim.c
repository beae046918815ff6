// CLoomLinux implementation. Only facts: every function returns the kernel's answer.
#define _GNU_SOURCE
#include "CLoomLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/tcp.h>

// MARK: - epoll

struct cloom_epoll_events {
    int count;
    struct epoll_event events[];
};

cloom_epoll_events *cloom_epoll_events_alloc(int count) {
    cloom_epoll_events *e = calloc(1, sizeof(cloom_epoll_events) + (size_t)count * sizeof(struct epoll_event));
    if (e) e->count = count;
    return e;
}

void cloom_epoll_events_free(cloom_epoll_events *events) { free(events); }

uint32_t cloom_epoll_event_mask(const cloom_epoll_events *events, int index) {
    return events->events[index].events;
}

uint64_t cloom_epoll_event_data(const cloom_epoll_events *events, int index) {
    return events->events[index].data.u64;
}

int cloom_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cloom_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

int cloom_epoll_wait(int epfd, cloom_epoll_events *events, int max, int timeout_ms) {
    if (max > events->count) max = events->count;
    return epoll_wait(epfd, events->events, max, timeout_ms);
}

const int CLOOM_EPOLL_ADD = EPOLL_CTL_ADD, CLOOM_EPOLL_MOD = EPOLL_CTL_MOD, CLOOM_EPOLL_DEL = EPOLL_CTL_DEL;
const uint32_t CLOOM_EPOLLIN = EPOLLIN, CLOOM_EPOLLOUT = EPOLLOUT, CLOOM_EPOLLERR = EPOLLERR,
    CLOOM_EPOLLHUP = EPOLLHUP, CLOOM_EPOLLRDHUP = EPOLLRDHUP, CLOOM_EPOLLET = EPOLLET;

// MARK: - pipes and splice

int cloom_pipe(int fds[2]) { return pipe2(fds, O_NONBLOCK | O_CLOEXEC); }
int cloom_pipe_set_size(int fd, int size) { return fcntl(fd, F_SETPIPE_SZ, size); }
int cloom_pipe_get_size(int fd) { return fcntl(fd, F_GETPIPE_SZ); }

ssize_t cloom_splice(int fd_in, int fd_out, size_t len, int more) {
    unsigned int flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
    if (more) flags |= SPLICE_F_MORE;
    return splice(fd_in, NULL, fd_out, NULL, len, flags);
}

// MARK: - sockets

int cloom_tcp_socket(int family) { return socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); }

int cloom_accept(int fd, struct sockaddr_storage *addr, socklen_t *len) {
    *len = sizeof *addr;
    return accept4(fd, (struct sockaddr *)addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int cloom_set_int_option(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof value);
}

int cloom_get_int_option(int fd, int level, int name, int *value) {
    socklen_t len = sizeof *value;
    return getsockopt(fd, level, name, value, &len);
}

int cloom_set_linger_zero(int fd) {
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

int cloom_original_dst(int fd, int family, struct sockaddr_storage *addr, socklen_t *len) {
    memset(addr, 0, sizeof *addr);
    if (family == AF_INET6) {
        *len = sizeof(struct sockaddr_in6);
        return getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, addr, len);
    }
    *len = sizeof(struct sockaddr_in);
    return getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, addr, len);
}

const int CLOOM_SOL_SOCKET = SOL_SOCKET, CLOOM_SO_REUSEADDR = SO_REUSEADDR,
    CLOOM_SO_REUSEPORT = SO_REUSEPORT, CLOOM_SO_MARK = SO_MARK, CLOOM_SO_ERROR = SO_ERROR, CLOOM_IPPROTO_TCP = IPPROTO_TCP,
    CLOOM_TCP_NODELAY = TCP_NODELAY, CLOOM_IPPROTO_IPV6 = IPPROTO_IPV6,
    CLOOM_IPV6_V6ONLY = IPV6_V6ONLY, CLOOM_SHUT_WR = SHUT_WR, CLOOM_AF_INET = AF_INET,
    CLOOM_AF_INET6 = AF_INET6, CLOOM_SOMAXCONN_DEFAULT = 4096;

// MARK: - namespaces, limits, clocks

int cloom_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

int64_t cloom_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cloom_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

long cloom_raise_nofile_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    }
    return rl.rlim_cur == RLIM_INFINITY ? LONG_MAX : (long)rl.rlim_cur;
}

static void cloom_signal_set(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
    sigaddset(set, SIGUSR2);
}

int cloom_block_signals(void) {
    sigset_t set;
    cloom_signal_set(&set);
    // SIGPIPE: a peer that went away must surface as EPIPE on the call, not kill loomd.
    signal(SIGPIPE, SIG_IGN);
    return pthread_sigmask(SIG_BLOCK, &set, NULL) == 0 ? 0 : -1;
}

int cloom_wait_signal(void) {
    sigset_t set;
    int sig = 0;
    cloom_signal_set(&set);
    return sigwait(&set, &sig) == 0 ? sig : -1;
}


int cloom_set_thread_name(const char *name) { return pthread_setname_np(pthread_self(), name); }

// MARK: - eventfd, file identity

#include <sys/eventfd.h>
#include <sys/stat.h>

int cloom_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int cloom_eventfd_signal(int fd) {
    uint64_t one = 1;
    return write(fd, &one, sizeof one) == (ssize_t)sizeof one ? 0 : -1;
}

int cloom_eventfd_drain(int fd) {
    uint64_t value;
    return read(fd, &value, sizeof value) == (ssize_t)sizeof value ? 0 : -1;
}

int cloom_file_identity(const char *path, uint64_t *dev, uint64_t *ino) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    *dev = (uint64_t)st.st_dev;
    *ino = (uint64_t)st.st_ino;
    return 0;
}

int cloom_fd_identity(int fd, uint64_t *dev, uint64_t *ino) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    *dev = (uint64_t)st.st_dev;
    *ino = (uint64_t)st.st_ino;
    return 0;
}

int cloom_file_stamp(const char *path, int64_t *mtime_ns, int64_t *size) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    *mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    *size = (int64_t)st.st_size;
    return 0;
}

#include <malloc.h>

int cloom_malloc_trim(void) { return malloc_trim(0); }
