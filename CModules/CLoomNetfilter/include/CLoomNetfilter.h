// nf_tables netlink batches over libmnl + libnftnl. C only builds messages, sends them and
// reads the kernel's answers; which messages, in what order, with which expressions is
// decided in Swift (LoomIntercept: RulePlan+Netlink.swift, NetfilterSocket.swift).
//
// Conventions: functions returning int return 0 (or a count) on success and -errno on
// failure. Every nftnl object is freed before a function returns.
#pragma once
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

// Kernel constants Swift passes in. Kernel UAPI headers stay out of this header (their
// struct in_addr clashes with glibc's in Swift's module map); netfilter.c checks that the
// values match <linux/netfilter/nf_tables.h>.
static const uint16_t CLOOM_NFPROTO_INET = 1;
static const uint32_t CLOOM_NF_INET_PRE_ROUTING = 0, CLOOM_NF_INET_LOCAL_IN = 1, CLOOM_NF_INET_FORWARD = 2,
                      CLOOM_NF_INET_LOCAL_OUT = 3, CLOOM_NF_INET_POST_ROUTING = 4;
static const uint32_t CLOOM_NFT_REG_1 = 1;
static const uint32_t CLOOM_NFT_CMP_EQ = 0, CLOOM_NFT_CMP_NEQ = 1;
static const uint32_t CLOOM_NFT_PAYLOAD_NETWORK_HEADER = 1, CLOOM_NFT_PAYLOAD_TRANSPORT_HEADER = 2;
static const uint32_t CLOOM_NFT_META_MARK = 3, CLOOM_NFT_META_IIFNAME = 6, CLOOM_NFT_META_OIFNAME = 7,
                      CLOOM_NFT_META_NFPROTO = 15, CLOOM_NFT_META_L4PROTO = 16;
static const uint32_t CLOOM_NFT_SET_ANONYMOUS = 0x1, CLOOM_NFT_SET_CONSTANT = 0x2, CLOOM_NFT_SET_TIMEOUT = 0x10;
static const int32_t CLOOM_NFT_RETURN = -5;
/// `queue flags bypass`: with nobody reading the queue, the packet is accepted, not dropped.
static const uint16_t CLOOM_NFT_QUEUE_FLAG_BYPASS = 0x1;

/// errno values LoomIntercept names in its messages (so it needs no Glibc import).
static const int CLOOM_NFT_EPERM = EPERM;
static const int CLOOM_NFT_ENOENT = ENOENT;
static const int CLOOM_NFT_EBADF = EBADF;
static const int CLOOM_NFT_ENOMEM = ENOMEM;
static const int CLOOM_NFT_EBUSY = EBUSY;
static const int CLOOM_NFT_EOPNOTSUPP = EOPNOTSUPP;
static const int CLOOM_NFT_EPROTONOSUPPORT = EPROTONOSUPPORT;
static const int CLOOM_NFT_EAFNOSUPPORT = EAFNOSUPPORT;

/// `failed_index` value when the kernel rejected the batch as a whole.
static const uint32_t CLOOM_NFT_BATCH_INDEX = UINT32_MAX;

/// An open NETLINK_NETFILTER socket (an mnl_socket), bound in the calling thread's netns.
typedef struct cloom_nft_socket cloom_nft_socket;
/// nf_tables messages of one family, sent as one transaction.
typedef struct cloom_nft_batch cloom_nft_batch;
/// A rule being built expression by expression.
typedef struct cloom_nft_rule cloom_nft_rule;

/// Opens and binds a non-blocking netfilter socket in the calling thread's network
/// namespace. NULL with *err = -errno on failure.
cloom_nft_socket *cloom_nft_socket_open(int *err);
void cloom_nft_socket_close(cloom_nft_socket *sock);

/// An empty batch; its messages get sequence numbers seq+1, seq+2, ... NULL if out of memory.
cloom_nft_batch *cloom_nft_batch_new(uint16_t family, uint32_t seq);
void cloom_nft_batch_free(cloom_nft_batch *batch);
/// Messages added so far (BEGIN and END not counted).
uint32_t cloom_nft_batch_count(const cloom_nft_batch *batch);

/// NFT_MSG_NEWTABLE (create, not exclusive); `comment` may be NULL.
int cloom_nft_add_table(cloom_nft_batch *batch, const char *table, const char *comment);
/// NFT_MSG_DELTABLE: the table and everything in it.
int cloom_nft_delete_table(cloom_nft_batch *batch, const char *table);
/// NFT_MSG_NEWCHAIN: a base chain of `type` on `hook` with `priority`, policy accept.
int cloom_nft_add_chain(
    cloom_nft_batch *batch, const char *table, const char *chain, const char *type, uint32_t hook,
    int32_t priority);
/// NFT_MSG_NEWSET. `size` 0 omits the size; the key byte order is kept as userdata, as nft does.
int cloom_nft_add_set(
    cloom_nft_batch *batch, const char *table, const char *set, uint32_t set_id, uint32_t flags,
    uint32_t key_type, uint32_t key_len, uint32_t key_byteorder, uint32_t size);
/// NFT_MSG_NEWSETELEM: `count` keys of `key_len` bytes each, back to back in `keys`;
/// `timeout_ms` 0 means none. -EMSGSIZE if they do not fit one message.
int cloom_nft_add_elements(
    cloom_nft_batch *batch, const char *table, const char *set, uint32_t set_id, const uint8_t *keys,
    uint32_t key_len, uint32_t count, uint64_t timeout_ms);
/// NFT_MSG_DELSETELEM without elements: removes every element of the set.
int cloom_nft_flush_set(cloom_nft_batch *batch, const char *table, const char *set);
/// NFT_MSG_NEWRULE (appended) from `rule`; `rule` stays owned by the caller.
int cloom_nft_add_rule(cloom_nft_batch *batch, const cloom_nft_rule *rule);

/// A rule for `table`/`chain` with a comment (NULL: none). NULL if out of memory.
cloom_nft_rule *cloom_nft_rule_new(const char *table, const char *chain, const char *comment);
void cloom_nft_rule_free(cloom_nft_rule *rule);
/// [ meta load KEY => reg DREG ]
int cloom_nft_expr_meta(cloom_nft_rule *rule, uint32_t key, uint32_t dreg);
/// [ cmp OP reg SREG DATA ]
int cloom_nft_expr_cmp(cloom_nft_rule *rule, uint32_t op, uint32_t sreg, const uint8_t *data, uint32_t len);
/// [ payload load LENb @ BASE header + OFFSET => reg DREG ]
int cloom_nft_expr_payload(cloom_nft_rule *rule, uint32_t base, uint32_t offset, uint32_t len, uint32_t dreg);
/// [ bitwise reg DREG = ( reg SREG & MASK ) ^ XOR ], both `len` bytes.
int cloom_nft_expr_bitwise(
    cloom_nft_rule *rule, uint32_t sreg, uint32_t dreg, const uint8_t *mask, const uint8_t *xor_, uint32_t len);
/// [ lookup reg SREG set SET (inverted) ]; `set_id` finds a set added in the same batch.
int cloom_nft_expr_lookup(cloom_nft_rule *rule, uint32_t sreg, const char *set, uint32_t set_id, int invert);
/// [ immediate reg 0 VERDICT ] (NFT_RETURN, NF_ACCEPT, ...).
int cloom_nft_expr_verdict(cloom_nft_rule *rule, int32_t verdict);
/// [ immediate reg DREG DATA ]
int cloom_nft_expr_immediate(cloom_nft_rule *rule, uint32_t dreg, const uint8_t *data, uint32_t len);
/// [ redir proto_min reg REG flags 0x2 ]: to the port in REG (NF_NAT_RANGE_PROTO_SPECIFIED).
int cloom_nft_expr_redir(cloom_nft_rule *rule, uint32_t proto_min_reg);
/// [ queue num NUM FLAGS ]: nf_tables' own queue statement (kernel module nft_queue).
int cloom_nft_expr_queue(cloom_nft_rule *rule, uint16_t num, uint16_t flags);
/// [ target name NFQUEUE rev 3 ]: the xtables NFQUEUE target through nft_compat (what
/// iptables-nft sends), for kernels built without nft_queue. `flags` as for the queue
/// statement (the bypass bit is the same).
int cloom_nft_expr_xt_queue(cloom_nft_rule *rule, uint16_t num, uint16_t flags);
/// The rule's expressions as libnftnl prints them, `nft --debug=netlink`'s form (for tests).
/// The length the full text needs, or -errno; the text is cut to fit `cap`.
int cloom_nft_rule_describe(const cloom_nft_rule *rule, char *buf, size_t cap);

/// Sends the batch (BEGIN, messages, END) in one sendmsg, every message with NLM_F_ACK,
/// and reads all acknowledgements. 0, or the first error as -errno with *failed_index
/// set to the failing message's index (0-based) or CLOOM_NFT_BATCH_INDEX.
int cloom_nft_batch_send(cloom_nft_socket *sock, cloom_nft_batch *batch, uint32_t *failed_index);

/// NFT_MSG_GETTABLE for `table`: 1 if it exists (its comment, if any, copied NUL-terminated
/// into `comment` and *has_comment set), 0 if not, -errno on failure.
int cloom_nft_get_table(
    cloom_nft_socket *sock, uint32_t seq, uint16_t family, const char *table, char *comment, size_t comment_cap,
    int *has_comment);

// ---- NFQUEUE (`loomctl trace`) ----
// A netlink socket bound to one nfnetlink_queue queue: packets a rule queued come in as
// messages, and each must be given a verdict. Which verdict, and what a packet means, is
// decided in Swift (LoomIntercept: TraceQueue.swift).

/// Netfilter verdicts (checked against <linux/netfilter.h> in queue.c).
static const uint32_t CLOOM_NF_DROP = 0, CLOOM_NF_ACCEPT = 1;
/// NFQA_CFG_F_FAIL_OPEN: when the queue is full (or the socket cannot take the message),
/// the kernel accepts the packet instead of dropping it.
static const uint32_t CLOOM_NFQA_CFG_F_FAIL_OPEN = 0x1;

/// The most bytes of a packet a queued packet holds: room for an IPv4 or IPv6 header and
/// a TCP header with options.
#define CLOOM_NFT_QUEUE_MAX_COPY 128

/// An NFQUEUE socket (an mnl_socket and the queue it is bound to).
typedef struct cloom_nft_queue cloom_nft_queue;

/// One packet read from a queue: the kernel's metadata and the first bytes of the packet
/// (from the network header on).
typedef struct cloom_nft_queued_packet {
    /// The kernel's id for the verdict.
    uint32_t id;
    /// The skb mark (0 when the kernel sent none: it sends it only when not 0).
    uint32_t mark;
    /// Interface indexes (0: none, e.g. no input interface on the output hook).
    uint32_t in_interface, out_interface;
    /// Ethernet protocol of the packet (0x0800 IPv4, 0x86dd IPv6), host byte order.
    uint16_t hw_protocol;
    /// The netfilter hook that queued it (CLOOM_NF_INET_*).
    uint8_t hook;
    uint8_t reserved;
    /// How many bytes of `bytes` hold the packet.
    uint32_t length;
    uint8_t bytes[CLOOM_NFT_QUEUE_MAX_COPY];
} cloom_nft_queued_packet;

/// What one receive call saw besides the packets it stored.
typedef struct cloom_nft_queue_counts {
    /// Packet messages read (stored or not); every one with an id was given its verdict.
    uint32_t read;
    /// Read and given their verdict, but not stored: no room left, or no packet header.
    uint32_t unstored;
    /// Packets that could not be given a verdict: no id in the message, or the verdict
    /// could not be sent. They stay queued until the socket closes.
    uint32_t unanswered;
    /// Error messages the kernel sent back (a verdict it refused), and the last one (-errno).
    uint32_t errors;
    int last_error;
    /// Times the socket reported lost messages (ENOBUFS).
    uint32_t overruns;
} cloom_nft_queue_counts;

/// Opens a non-blocking NETLINK_NETFILTER socket in the calling thread's network namespace
/// and binds queue `num` in one config message: copy mode packet with `copy_range` bytes
/// (at most CLOOM_NFT_QUEUE_MAX_COPY), and the NFQA_CFG_F_* `flags`. Packets that arrive
/// before the kernel acknowledges are given `verdict`. NULL with *err = -errno on failure
/// (-EPERM: another socket holds the queue, or no CAP_NET_ADMIN in the namespace).
cloom_nft_queue *cloom_nft_queue_open(uint16_t num, uint32_t copy_range, uint32_t flags, uint32_t verdict, int *err);
/// The socket's descriptor, for epoll (owned by the queue: do not close it).
int cloom_nft_queue_fd(const cloom_nft_queue *queue);
/// Closes the socket; the kernel unbinds the queue (and drops what is still queued).
void cloom_nft_queue_close(cloom_nft_queue *queue);
/// Reads what is queued without blocking, until nothing is left or `cap` packets are stored
/// in `packets` (NULL: until nothing is left, storing nothing), and gives every packet it
/// read `verdict` before returning, stored or not.
/// The number stored, or -errno if reading failed (verdicts for what was read are still sent).
int cloom_nft_queue_receive(
    cloom_nft_queue *queue, uint32_t verdict, cloom_nft_queued_packet *packets, uint32_t cap,
    cloom_nft_queue_counts *counts);
