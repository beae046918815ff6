// Capabilities: capget/capset and the bounding set with raw syscalls (no libcap).
//
// Capabilities, the bounding set and no_new_privs belong to a thread, not to the process:
// capset(2) with pid 0 changes the calling thread only, and glibc (unlike setuid) does not
// repeat it in the other threads. loomd restricts itself after its threads exist, so
// `cloom_cap_restrict_process` asks every other thread to restrict itself, in a SIGSYS
// handler sent with tgkill (as libcap's psx does; SIGSYS because libdispatch's workers
// block nearly every other signal), and rescans /proc/self/task until no thread is new.
#define _GNU_SOURCE
#include "CLoomLinux.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>

const int CLOOM_CAP_STAGE_BOUNDING = 1, CLOOM_CAP_STAGE_NO_NEW_PRIVS = 2, CLOOM_CAP_STAGE_CAPGET = 3,
    CLOOM_CAP_STAGE_CAPSET = 4, CLOOM_CAP_STAGE_AMBIENT = 5, CLOOM_CAP_STAGE_SIGNAL = 6,
    CLOOM_CAP_STAGE_THREADS = 7;

int cloom_cap_get(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capget, &header, data) < 0) return -errno;
    *effective = (uint64_t)data[0].effective | (uint64_t)data[1].effective << 32;
    *permitted = (uint64_t)data[0].permitted | (uint64_t)data[1].permitted << 32;
    *inheritable = (uint64_t)data[0].inheritable | (uint64_t)data[1].inheritable << 32;
    return 0;
}

int cloom_cap_bounding_has(int cap) {
    int r = prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0);
    return r < 0 ? -errno : r;
}

// Async-signal-safe: raw syscalls only (it runs in a signal handler in other threads).
static int restrict_thread(uint64_t keep, int last_cap, int *stage) {
    for (int cap = 0; cap <= last_cap && cap < 64; cap++) {
        if (keep & (UINT64_C(1) << cap)) continue;
        // PR_CAPBSET_DROP needs CAP_SETPCAP even for a capability already gone: only drop
        // what is there (a unit's CapabilityBoundingSet may have removed both).
        int present = prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0);
        if (present < 0 && errno == EINVAL) continue;     // not known to this kernel
        if (present == 0) continue;
        if (present < 0 || prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0) < 0) {
            if (errno == EINVAL) continue;
            *stage = CLOOM_CAP_STAGE_BOUNDING;
            return -errno;
        }
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        *stage = CLOOM_CAP_STAGE_NO_NEW_PRIVS;
        return -errno;
    }
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capget, &header, data) < 0) {
        *stage = CLOOM_CAP_STAGE_CAPGET;
        return -errno;
    }
    // Keep what this thread has of `keep`; a capability it lacks is not an error.
    uint64_t permitted = (uint64_t)data[0].permitted | (uint64_t)data[1].permitted << 32;
    uint64_t kept = permitted & keep;
    for (int word = 0; word < 2; word++) {
        data[word].effective = data[word].permitted = (uint32_t)(kept >> (32 * word));
        data[word].inheritable = 0;
    }
    header.version = _LINUX_CAPABILITY_VERSION_3;
    header.pid = 0;
    if (syscall(SYS_capset, &header, data) < 0) {
        *stage = CLOOM_CAP_STAGE_CAPSET;
        return -errno;
    }
    // Lowering inheritable already empties the ambient set; say so explicitly (EINVAL:
    // a kernel without ambient capabilities, nothing to clear).
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) {
        *stage = CLOOM_CAP_STAGE_AMBIENT;
        return -errno;
    }
    return 0;
}

int cloom_cap_restrict_thread(uint64_t keep, int last_cap, int *stage) {
    *stage = 0;
    return restrict_thread(keep, last_cap, stage);
}

// One broadcast at a time; the handler reads it in other threads.
static struct {
    atomic_int active;
    atomic_int pending;     // threads signalled that have not answered yet
    atomic_int error;       // first failure (-errno), 0 if none
    atomic_int stage;
    uint64_t keep;
    int last_cap;
} broadcast;

static void on_broadcast(int sig, siginfo_t *info, void *context) {
    (void)context;
    int saved = errno;
    if (!atomic_load(&broadcast.active) || info->si_code != SI_TKILL || info->si_pid != getpid()) {
        // Not ours (a real SIGSYS): the default action, as if no handler were installed.
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
        syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), sig);
        errno = saved;
        return;
    }
    int stage = 0;
    int r = restrict_thread(broadcast.keep, broadcast.last_cap, &stage);
    if (r < 0) {
        int none = 0;
        if (atomic_compare_exchange_strong(&broadcast.error, &none, r)) atomic_store(&broadcast.stage, stage);
    }
    atomic_fetch_sub(&broadcast.pending, 1);
    errno = saved;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int contains(const pid_t *tids, int count, pid_t tid) {
    for (int i = 0; i < count; i++)
        if (tids[i] == tid) return 1;
    return 0;
}

int cloom_cap_restrict_process(uint64_t keep, int last_cap, int timeout_ms, int *threads, int *stage) {
    *stage = 0;
    *threads = 0;
    if (atomic_load(&broadcast.active)) return -EBUSY;
    pid_t pid = getpid();
    pid_t self = (pid_t)syscall(SYS_gettid);
    broadcast.keep = keep;
    broadcast.last_cap = last_cap;
    atomic_store(&broadcast.pending, 0);
    atomic_store(&broadcast.error, 0);
    atomic_store(&broadcast.stage, 0);

    struct sigaction action, old;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_broadcast;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&action.sa_mask);
    if (sigaction(SIGSYS, &action, &old) < 0) {
        *stage = CLOOM_CAP_STAGE_SIGNAL;
        return -errno;
    }
    atomic_store(&broadcast.active, 1);

    int capacity = 64, done = 0, signalled = 0, result = 0;
    pid_t *tids = malloc(sizeof(pid_t) * (size_t)capacity);
    if (!tids) result = -ENOMEM;
    int64_t deadline = now_ms() + timeout_ms;
    while (result == 0) {
        // Every thread not asked yet. A thread an unrestricted thread created meanwhile
        // shows up in the next scan; a scan with no new thread ends it (from then on,
        // threads are created by restricted threads and inherit their sets).
        DIR *dir = opendir("/proc/self/task");
        if (!dir) {
            result = -errno;
            *stage = CLOOM_CAP_STAGE_THREADS;
            break;
        }
        int asked = 0;
        struct dirent *entry;
        while (result == 0 && (entry = readdir(dir)) != NULL) {
            char *end;
            long tid = strtol(entry->d_name, &end, 10);
            if (entry->d_name[0] < '0' || entry->d_name[0] > '9' || *end != 0) continue;
            if ((pid_t)tid == self || contains(tids, done, (pid_t)tid)) continue;
            if (done == capacity) {
                pid_t *grown = realloc(tids, sizeof(pid_t) * (size_t)capacity * 2);
                if (!grown) {
                    result = -ENOMEM;
                    break;
                }
                tids = grown;
                capacity *= 2;
            }
            tids[done++] = (pid_t)tid;
            atomic_fetch_add(&broadcast.pending, 1);
            if (syscall(SYS_tgkill, pid, (pid_t)tid, SIGSYS) < 0) {
                int err = errno;
                atomic_fetch_sub(&broadcast.pending, 1);
                if (err == ESRCH) continue;     // it exited
                result = -err;
                *stage = CLOOM_CAP_STAGE_SIGNAL;
                break;
            }
            asked++;
            signalled++;
        }
        closedir(dir);
        while (atomic_load(&broadcast.pending) > 0 && now_ms() < deadline) {
            struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000000};
            nanosleep(&pause, NULL);
        }
        if (atomic_load(&broadcast.pending) > 0) {
            result = -ETIMEDOUT;
            *stage = CLOOM_CAP_STAGE_THREADS;
        }
        if (asked == 0 || atomic_load(&broadcast.error) != 0) break;
    }
    free(tids);
    if (result == 0 && atomic_load(&broadcast.error) != 0) {
        result = atomic_load(&broadcast.error);
        *stage = atomic_load(&broadcast.stage);
    }
    if (result == 0) result = restrict_thread(keep, last_cap, stage);
    if (atomic_load(&broadcast.pending) == 0) {
        // Everyone answered: no SIGSYS of ours is pending anywhere. Otherwise the handler
        // stays, so a late delivery is still answered instead of killing the process.
        atomic_store(&broadcast.active, 0);
        sigaction(SIGSYS, &old, NULL);
    }
    if (result == 0) *threads = signalled + 1;
    return result;
}
