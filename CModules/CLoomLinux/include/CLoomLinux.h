// CLoomLinux: the thin C shim under LoomSystem.
//
// Each function exists because Swift cannot call the thing directly or safely:
// - splice/setns/accept4/pipe2 need _GNU_SOURCE, which Swift's Glibc import does not set;
// - struct epoll_event is __attribute__((packed)) on x86_64, which Swift does not import
//   faithfully, so events are read and written through accessors here;
// - SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST live in netfilter headers Swift does not see.
// C returns facts (a result and errno); Swift decides what they mean.
#ifndef CLOOM_LINUX_H
#define CLOOM_LINUX_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - epoll

/// Opaque array of kernel epoll events (packed on x86_64).
typedef struct cloom_epoll_events cloom_epoll_events;

/// Allocates room for `count` events; NULL on allocation failure.
cloom_epoll_events *cloom_epoll_events_alloc(int count);
void cloom_epoll_events_free(cloom_epoll_events *events);
/// The event mask and user data of event `index` after `cloom_epoll_wait`.
uint32_t cloom_epoll_event_mask(const cloom_epoll_events *events, int index);
uint64_t cloom_epoll_event_data(const cloom_epoll_events *events, int index);

int cloom_epoll_create(void);
/// `op` is one of CLOOM_EPOLL_ADD/MOD/DEL; returns 0 or -1 with errno.
int cloom_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
int cloom_epoll_wait(int epfd, cloom_epoll_events *events, int max, int timeout_ms);

extern const int CLOOM_EPOLL_ADD, CLOOM_EPOLL_MOD, CLOOM_EPOLL_DEL;
extern const uint32_t CLOOM_EPOLLIN, CLOOM_EPOLLOUT, CLOOM_EPOLLERR, CLOOM_EPOLLHUP,
    CLOOM_EPOLLRDHUP, CLOOM_EPOLLET;

// MARK: - pipes and splice

/// pipe2(O_NONBLOCK | O_CLOEXEC). Returns 0 or -1 with errno.
int cloom_pipe(int fds[2]);
/// F_SETPIPE_SZ; returns the size the kernel granted or -1 with errno.
int cloom_pipe_set_size(int fd, int size);
/// F_GETPIPE_SZ.
int cloom_pipe_get_size(int fd);
/// splice(fd_in, NULL, fd_out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK [| SPLICE_F_MORE]).
ssize_t cloom_splice(int fd_in, int fd_out, size_t len, int more);

// MARK: - sockets

/// socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
int cloom_tcp_socket(int family);
/// accept4(SOCK_NONBLOCK | SOCK_CLOEXEC); peer address written to `addr`.
int cloom_accept(int fd, struct sockaddr_storage *addr, socklen_t *len);
int cloom_set_int_option(int fd, int level, int name, int value);
int cloom_get_int_option(int fd, int level, int name, int *value);
/// SO_LINGER {1, 0}: the next close() sends RST instead of FIN.
int cloom_set_linger_zero(int fd);
/// Original destination of a redirected connection: SO_ORIGINAL_DST (family AF_INET)
/// or IP6T_SO_ORIGINAL_DST (AF_INET6). 0 or -1 with errno (ENOENT: no conntrack entry).
int cloom_original_dst(int fd, int family, struct sockaddr_storage *addr, socklen_t *len);

extern const int CLOOM_SOL_SOCKET, CLOOM_SO_REUSEADDR, CLOOM_SO_REUSEPORT, CLOOM_SO_MARK,
    CLOOM_SO_ERROR, CLOOM_IPPROTO_TCP, CLOOM_TCP_NODELAY,
    CLOOM_IPPROTO_IPV6, CLOOM_IPV6_V6ONLY, CLOOM_SHUT_WR, CLOOM_AF_INET, CLOOM_AF_INET6,
    CLOOM_SOMAXCONN_DEFAULT;

// MARK: - namespaces, limits, clocks

/// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC): a loop's wake-up for control messages.
int cloom_eventfd(void);
/// Adds 1 to an eventfd counter (write of a uint64). 0 or -1 with errno.
int cloom_eventfd_signal(int fd);
/// Reads and clears an eventfd counter. 0 or -1 with errno (EAGAIN: it was zero).
int cloom_eventfd_drain(int fd);
/// Device and inode of a file (stat), to notice a netns file replaced or deleted.
int cloom_file_identity(const char *path, uint64_t *dev, uint64_t *ino);
/// Modification time (nanoseconds) and size of a file, to notice it was rewritten.
int cloom_file_stamp(const char *path, int64_t *mtime_ns, int64_t *size);
/// Device and inode of an open file (fstat).
int cloom_fd_identity(int fd, uint64_t *dev, uint64_t *ino);

/// malloc_trim(0): returns freed heap memory to the kernel (malloc.h is not in Glibc's
/// Swift module).
int cloom_malloc_trim(void);

/// setns(fd, CLONE_NEWNET) for the calling thread only.
int cloom_setns_net(int fd);
/// Monotonic coarse clock in milliseconds (cheap: vDSO, no syscall).
int64_t cloom_now_ms(void);
/// Monotonic clock in microseconds (vDSO).
int64_t cloom_now_us(void);
/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
long cloom_raise_nofile_limit(void);
/// Blocks SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 in the calling thread (inherited by threads
/// created after) and ignores SIGPIPE. Returns 0 or -1.
int cloom_block_signals(void);
/// Waits for one of the blocked signals; returns its number or -1.
int cloom_wait_signal(void);
/// Names the calling thread (15 characters at most), as top and ps show it.
int cloom_set_thread_name(const char *name);

// File descriptor passing (fdpass.c): listeners and the lock handed to a new loomd.
/// Most descriptors one message carries.
#define CLOOM_MAX_PASSED_FDS 64
/// A listening AF_UNIX SOCK_SEQPACKET socket at `path` (replacing a stale file); fd or -errno.
int cloom_seqpacket_listen(const char *path);
/// A connected AF_UNIX SOCK_SEQPACKET socket; fd or -errno.
int cloom_seqpacket_connect(const char *path);
/// One message: `len` bytes and `nfds` descriptors (SCM_RIGHTS). Bytes sent or -errno.
int cloom_send_fds(int sock, const void *data, size_t len, const int *fds, int nfds);
/// One message into `buf`; descriptors (close-on-exec) into `fds`, their count in *nfds.
/// Bytes received (0: peer closed) or -errno (-EMSGSIZE: truncated; nothing kept).
int cloom_recv_fds(int sock, void *buf, size_t cap, int *fds, int max_fds, int *nfds);
/// setsockopt(TCP_ULP, "tls") on a connected TCP socket: 0 if the kernel has TLS (kTLS),
/// else -errno (-ENOENT: no tls module, CONFIG_TLS off).
int cloom_tcp_ulp_tls(int fd);
/// Starts `path` with `argv` (NULL-terminated) and the environment, signals unblocked in
/// the child: the new loomd of a SIGUSR2 upgrade. Its PID, or -errno.
int cloom_spawn(const char *path, char *const argv[]);

// Capabilities (caps.c)
// Raw capget/capset and prctl (no libcap). Masks are 64-bit: bit N is capability N.
/// What failed, for the `stage` out-parameters below.
extern const int CLOOM_CAP_STAGE_BOUNDING, CLOOM_CAP_STAGE_NO_NEW_PRIVS, CLOOM_CAP_STAGE_CAPGET,
    CLOOM_CAP_STAGE_CAPSET, CLOOM_CAP_STAGE_AMBIENT, CLOOM_CAP_STAGE_SIGNAL, CLOOM_CAP_STAGE_THREADS;
/// capget(2) of the calling thread (_LINUX_CAPABILITY_VERSION_3, two 32-bit words). 0 or -errno.
int cloom_cap_get(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable);
/// prctl(PR_CAPBSET_READ): 1 if `cap` is in the calling thread's bounding set, 0 if not, or
/// -errno (-EINVAL: a capability this kernel does not know).
int cloom_cap_bounding_has(int cap);
/// The calling thread only: drops from the bounding set every capability 0...last_cap not in
/// `keep` (unknown ones skipped), sets no_new_privs, then capset effective = permitted =
/// keep & the thread's permitted set, inheritable = 0, and clears the ambient set.
/// 0 or -errno, with *stage saying which step failed.
int cloom_cap_restrict_thread(uint64_t keep, int last_cap, int *stage);
/// The same in every thread of the process: the other threads run it in a SIGSYS handler
/// (tgkill), rescanning /proc/self/task until no thread is new, then the calling thread.
/// 0 (*threads: how many threads were restricted) or -errno of the first failure
/// (-ETIMEDOUT: a thread did not answer within timeout_ms), with *stage.
int cloom_cap_restrict_process(uint64_t keep, int last_cap, int timeout_ms, int *threads, int *stage);

#ifdef __cplusplus
}
#endif
#endif
