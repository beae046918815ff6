// nf_tables netlink batches over libmnl + libnftnl. See include/CLoomNetfilter.h.
#include "CLoomNetfilter.h"

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/xt_NFQUEUE.h>
#include <linux/netlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

_Static_assert(CLOOM_NFPROTO_INET == NFPROTO_INET, "NFPROTO_INET");
_Static_assert(
    CLOOM_NF_INET_PRE_ROUTING == NF_INET_PRE_ROUTING && CLOOM_NF_INET_LOCAL_IN == NF_INET_LOCAL_IN
        && CLOOM_NF_INET_FORWARD == NF_INET_FORWARD && CLOOM_NF_INET_LOCAL_OUT == NF_INET_LOCAL_OUT
        && CLOOM_NF_INET_POST_ROUTING == NF_INET_POST_ROUTING,
    "hooks");
_Static_assert(CLOOM_NFT_REG_1 == NFT_REG_1, "registers");
_Static_assert(CLOOM_NFT_CMP_EQ == NFT_CMP_EQ && CLOOM_NFT_CMP_NEQ == NFT_CMP_NEQ, "cmp");
_Static_assert(
    CLOOM_NFT_PAYLOAD_NETWORK_HEADER == NFT_PAYLOAD_NETWORK_HEADER
        && CLOOM_NFT_PAYLOAD_TRANSPORT_HEADER == NFT_PAYLOAD_TRANSPORT_HEADER,
    "payload");
_Static_assert(
    CLOOM_NFT_META_MARK == NFT_META_MARK && CLOOM_NFT_META_IIFNAME == NFT_META_IIFNAME
        && CLOOM_NFT_META_OIFNAME == NFT_META_OIFNAME && CLOOM_NFT_META_NFPROTO == NFT_META_NFPROTO
        && CLOOM_NFT_META_L4PROTO == NFT_META_L4PROTO,
    "meta");
_Static_assert(
    CLOOM_NFT_SET_ANONYMOUS == NFT_SET_ANONYMOUS && CLOOM_NFT_SET_CONSTANT == NFT_SET_CONSTANT
        && CLOOM_NFT_SET_TIMEOUT == NFT_SET_TIMEOUT,
    "set flags");
_Static_assert(CLOOM_NFT_RETURN == NFT_RETURN, "verdicts");
_Static_assert(
    CLOOM_NFT_QUEUE_FLAG_BYPASS == NFT_QUEUE_FLAG_BYPASS && CLOOM_NFT_QUEUE_FLAG_BYPASS == NFQ_FLAG_BYPASS,
    "queue flags");

// ---- socket ----

// Large enough for a batch of thousands of messages and their acknowledgements.
#define SOCKET_BUFFER (4 << 20)

static void grow_buffer(int fd, int force, int plain) {
    int size = SOCKET_BUFFER;
    // FORCE passes the sysctl limits (needs CAP_NET_ADMIN, which nf_tables needs anyway).
    if (setsockopt(fd, SOL_SOCKET, force, &size, sizeof size) < 0) {
        (void)setsockopt(fd, SOL_SOCKET, plain, &size, sizeof size);
    }
}

cloom_nft_socket *cloom_nft_socket_open(int *err) {
    struct mnl_socket *nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (nl == NULL) {
        *err = -errno;
        return NULL;
    }
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        *err = -errno;
        mnl_socket_close(nl);
        return NULL;
    }
    // Acknowledgements without a copy of the acknowledged message (best effort).
    int one = 1;
    (void)mnl_socket_setsockopt(nl, NETLINK_CAP_ACK, &one, sizeof one);
    grow_buffer(mnl_socket_get_fd(nl), SO_SNDBUFFORCE, SO_SNDBUF);
    grow_buffer(mnl_socket_get_fd(nl), SO_RCVBUFFORCE, SO_RCVBUF);
    return (cloom_nft_socket *)nl;
}

void cloom_nft_socket_close(cloom_nft_socket *sock) { mnl_socket_close((struct mnl_socket *)sock); }

// Replies to one request or batch: acknowledgements counted, the first error kept, data
// messages (NFT_MSG_NEWTABLE for a get) passed to `on_data`.
struct replies {
    uint32_t first_seq, last_seq;  // replies outside this range are not ours
    uint32_t acks;
    int error;  // -errno of the first error, 0 if none
    uint32_t error_seq;
    mnl_cb_t on_data;
    void *data;
};

static int on_error(const struct nlmsghdr *nlh, void *data) {
    struct replies *r = data;
    if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct nlmsgerr))) return MNL_CB_OK;
    if (nlh->nlmsg_seq < r->first_seq || nlh->nlmsg_seq > r->last_seq) return MNL_CB_OK;
    const struct nlmsgerr *err = mnl_nlmsg_get_payload(nlh);
    r->acks++;
    if (err->error != 0 && r->error == 0) {
        r->error = err->error;
        r->error_seq = nlh->nlmsg_seq;
    }
    return MNL_CB_OK;
}

static int on_data(const struct nlmsghdr *nlh, void *data) {
    struct replies *r = data;
    if (nlh->nlmsg_seq < r->first_seq || nlh->nlmsg_seq > r->last_seq || r->on_data == NULL) return MNL_CB_OK;
    return r->on_data(nlh, r->data);
}

// Sends `len` bytes in one sendmsg and reads every reply. The kernel processes netlink
// requests synchronously inside sendmsg, so all replies are queued when it returns: read
// (non-blocking) until the queue is empty.
static int exchange(struct mnl_socket *nl, const void *msg, size_t len, struct replies *r) {
    ssize_t sent;
    do {
        sent = mnl_socket_sendto(nl, msg, len);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) return -errno;

    mnl_cb_t controls[NLMSG_MIN_TYPE] = {[NLMSG_ERROR] = on_error};
    char buf[MNL_SOCKET_BUFFER_SIZE];
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (n < 0) return -errno;
        if (mnl_cb_run2(buf, (size_t)n, 0, mnl_socket_get_portid(nl), on_data, r, controls, NLMSG_MIN_TYPE) < 0) {
            return -errno;
        }
    }
}

// ---- batch ----

struct cloom_nft_batch {
    char *buf;
    size_t len, cap;
    uint16_t family;
    uint32_t seq;    // BEGIN's sequence number; message i has seq + 1 + i
    uint32_t count;  // messages after BEGIN
};

// Room kept free after the last message: one message whose attributes fit their 16-bit
// lengths, or END. libnftnl writes without bounds checks, so this must always hold.
#define MESSAGE_ROOM (UINT16_MAX + 4096)

static int reserve(cloom_nft_batch *b) {
    if (b->cap - b->len >= MESSAGE_ROOM) return 0;
    size_t cap = b->cap * 2 > b->len + MESSAGE_ROOM ? b->cap * 2 : b->len + MESSAGE_ROOM;
    char *buf = realloc(b->buf, cap);
    if (buf == NULL) return -ENOMEM;
    b->buf = buf;
    b->cap = cap;
    return 0;
}

cloom_nft_batch *cloom_nft_batch_new(uint16_t family, uint32_t seq) {
    cloom_nft_batch *b = calloc(1, sizeof *b);
    if (b == NULL) return NULL;
    b->family = family;
    b->seq = seq;
    if (reserve(b) < 0) {
        free(b);
        return NULL;
    }
    b->len = nftnl_batch_begin(b->buf, seq)->nlmsg_len;
    if (reserve(b) < 0) {
        cloom_nft_batch_free(b);
        return NULL;
    }
    return b;
}

void cloom_nft_batch_free(cloom_nft_batch *b) {
    if (b == NULL) return;
    free(b->buf);
    free(b);
}

uint32_t cloom_nft_batch_count(const cloom_nft_batch *b) { return b->count; }

// Starts the next message (always with NLM_F_ACK, so every message is answered).
static struct nlmsghdr *start(cloom_nft_batch *b, uint16_t type, uint16_t flags) {
    return nftnl_nlmsg_build_hdr(b->buf + b->len, type, b->family, flags | NLM_F_ACK, b->seq + 1 + b->count);
}

// Keeps the message started last and restores the free room for the next one.
static int finish(cloom_nft_batch *b, const struct nlmsghdr *nlh) {
    b->len += nlh->nlmsg_len;
    b->count++;
    return reserve(b);
}

// Userdata with one NUL-terminated string, as nft stores comments. NULL if too long or
// out of memory.
static struct nftnl_udata_buf *udata_string(uint8_t type, const char *text) {
    struct nftnl_udata_buf *ud = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);
    if (ud != NULL && !nftnl_udata_put_strz(ud, type, text)) {
        nftnl_udata_buf_free(ud);
        return NULL;
    }
    return ud;
}

int cloom_nft_add_table(cloom_nft_batch *b, const char *table, const char *comment) {
    struct nftnl_table *t = nftnl_table_alloc();
    if (t == NULL || nftnl_table_set_str(t, NFTNL_TABLE_NAME, table) < 0) goto nomem;
    nftnl_table_set_u32(t, NFTNL_TABLE_FLAGS, 0);
    if (comment != NULL) {
        struct nftnl_udata_buf *ud = udata_string(NFTNL_UDATA_TABLE_COMMENT, comment);
        if (ud == NULL) goto nomem;
        int rc = nftnl_table_set_data(t, NFTNL_TABLE_USERDATA, nftnl_udata_buf_data(ud), nftnl_udata_buf_len(ud));
        nftnl_udata_buf_free(ud);
        if (rc < 0) goto nomem;
    }
    struct nlmsghdr *nlh = start(b, NFT_MSG_NEWTABLE, NLM_F_CREATE);
    nftnl_table_nlmsg_build_payload(nlh, t);
    nftnl_table_free(t);
    return finish(b, nlh);
nomem:
    if (t != NULL) nftnl_table_free(t);
    return -ENOMEM;
}

int cloom_nft_delete_table(cloom_nft_batch *b, const char *table) {
    struct nftnl_table *t = nftnl_table_alloc();
    if (t == NULL || nftnl_table_set_str(t, NFTNL_TABLE_NAME, table) < 0) {
        if (t != NULL) nftnl_table_free(t);
        return -ENOMEM;
    }
    struct nlmsghdr *nlh = start(b, NFT_MSG_DELTABLE, 0);
    nftnl_table_nlmsg_build_payload(nlh, t);
    nftnl_table_free(t);
    return finish(b, nlh);
}

int cloom_nft_add_chain(
    cloom_nft_batch *b, const char *table, const char *chain, const char *type, uint32_t hook, int32_t priority) {
    struct nftnl_chain *c = nftnl_chain_alloc();
    if (c == NULL || nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, table) < 0
        || nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, chain) < 0 || nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, type) < 0) {
        if (c != NULL) nftnl_chain_free(c);
        return -ENOMEM;
    }
    nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, hook);
    nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, priority);
    nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, NF_ACCEPT);
    struct nlmsghdr *nlh = start(b, NFT_MSG_NEWCHAIN, NLM_F_CREATE);
    nftnl_chain_nlmsg_build_payload(nlh, c);
    nftnl_chain_free(c);
    return finish(b, nlh);
}

// A set object naming `table`/`set` (and `set_id` if not 0), for set and element messages.
static struct nftnl_set *set_named(const char *table, const char *set, uint32_t set_id) {
    struct nftnl_set *s = nftnl_set_alloc();
    if (s == NULL) return NULL;
    if (nftnl_set_set_str(s, NFTNL_SET_TABLE, table) < 0 || nftnl_set_set_str(s, NFTNL_SET_NAME, set) < 0) {
        nftnl_set_free(s);
        return NULL;
    }
    if (set_id != 0) nftnl_set_set_u32(s, NFTNL_SET_ID, set_id);
    return s;
}

int cloom_nft_add_set(
    cloom_nft_batch *b, const char *table, const char *set, uint32_t set_id, uint32_t flags, uint32_t key_type,
    uint32_t key_len, uint32_t key_byteorder, uint32_t size) {
    struct nftnl_set *s = set_named(table, set, set_id);
    struct nftnl_udata_buf *ud = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);
    if (s == NULL || ud == NULL || !nftnl_udata_put_u32(ud, NFTNL_UDATA_SET_KEYBYTEORDER, key_byteorder)
        || nftnl_set_set_data(s, NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud), nftnl_udata_buf_len(ud)) < 0) {
        if (s != NULL) nftnl_set_free(s);
        if (ud != NULL) nftnl_udata_buf_free(ud);
        return -ENOMEM;
    }
    nftnl_udata_buf_free(ud);
    nftnl_set_set_u32(s, NFTNL_SET_FLAGS, flags);
    nftnl_set_set_u32(s, NFTNL_SET_KEY_TYPE, key_type);
    nftnl_set_set_u32(s, NFTNL_SET_KEY_LEN, key_len);
    if (size != 0) nftnl_set_set_u32(s, NFTNL_SET_DESC_SIZE, size);
    struct nlmsghdr *nlh = start(b, NFT_MSG_NEWSET, NLM_F_CREATE);
    nftnl_set_nlmsg_build_payload(nlh, s);
    nftnl_set_free(s);
    return finish(b, nlh);
}

int cloom_nft_add_elements(
    cloom_nft_batch *b, const char *table, const char *set, uint32_t set_id, const uint8_t *keys, uint32_t key_len,
    uint32_t count, uint64_t timeout_ms) {
    // Per element at most: element, key and data headers, the key, a timeout; generously.
    if ((uint64_t)count * (key_len + 64) > MESSAGE_ROOM - 8192) return -EMSGSIZE;
    struct nftnl_set *s = set_named(table, set, set_id);
    if (s == NULL) return -ENOMEM;
    for (uint32_t i = 0; i < count; i++) {
        struct nftnl_set_elem *e = nftnl_set_elem_alloc();
        if (e == NULL || nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, keys + (size_t)i * key_len, key_len) < 0) {
            if (e != NULL) nftnl_set_elem_free(e);
            nftnl_set_free(s);
            return -ENOMEM;
        }
        if (timeout_ms != 0) nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, timeout_ms);
        nftnl_set_elem_add(s, e);  // owned by the set from here on
    }
    struct nlmsghdr *nlh = start(b, NFT_MSG_NEWSETELEM, NLM_F_CREATE);
    nftnl_set_elems_nlmsg_build_payload(nlh, s);
    nftnl_set_free(s);
    return finish(b, nlh);
}

int cloom_nft_flush_set(cloom_nft_batch *b, const char *table, const char *set) {
    struct nftnl_set *s = set_named(table, set, 0);
    if (s == NULL) return -ENOMEM;
    struct nlmsghdr *nlh = start(b, NFT_MSG_DELSETELEM, 0);
    nftnl_set_elems_nlmsg_build_payload(nlh, s);
    nftnl_set_free(s);
    return finish(b, nlh);
}

int cloom_nft_add_rule(cloom_nft_batch *b, const cloom_nft_rule *rule) {
    struct nlmsghdr *nlh = start(b, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
    nftnl_rule_nlmsg_build_payload(nlh, (struct nftnl_rule *)rule);
    return finish(b, nlh);
}

int cloom_nft_batch_send(cloom_nft_socket *sock, cloom_nft_batch *b, uint32_t *failed_index) {
    *failed_index = CLOOM_NFT_BATCH_INDEX;
    uint32_t end_seq = b->seq + 1 + b->count;
    // END goes into the room `reserve` keeps; it is not counted as part of the batch.
    size_t len = b->len + nftnl_batch_end(b->buf + b->len, end_seq)->nlmsg_len;
    struct replies r = {.first_seq = b->seq, .last_seq = end_seq};
    int rc = exchange((struct mnl_socket *)sock, b->buf, len, &r);
    if (rc < 0) return rc;
    if (r.error != 0) {
        if (r.error_seq > b->seq && r.error_seq < end_seq) *failed_index = r.error_seq - b->seq - 1;
        return r.error;
    }
    // Every message asked for an acknowledgement: a missing one means the batch's fate is unknown.
    return r.acks < b->count ? -EPROTO : 0;
}

// ---- rules ----
// A cloom_nft_rule is a struct nftnl_rule; expressions added to it are owned by it.

static struct nftnl_rule *as_rule(cloom_nft_rule *rule) { return (struct nftnl_rule *)rule; }

cloom_nft_rule *cloom_nft_rule_new(const char *table, const char *chain, const char *comment) {
    struct nftnl_rule *r = nftnl_rule_alloc();
    if (r == NULL) return NULL;
    if (nftnl_rule_set_str(r, NFTNL_RULE_TABLE, table) < 0 || nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain) < 0) {
        nftnl_rule_free(r);
        return NULL;
    }
    if (comment != NULL) {
        struct nftnl_udata_buf *ud = udata_string(NFTNL_UDATA_RULE_COMMENT, comment);
        int rc = ud == NULL
            ? -1
            : nftnl_rule_set_data(r, NFTNL_RULE_USERDATA, nftnl_udata_buf_data(ud), nftnl_udata_buf_len(ud));
        if (ud != NULL) nftnl_udata_buf_free(ud);
        if (rc < 0) {
            nftnl_rule_free(r);
            return NULL;
        }
    }
    return (cloom_nft_rule *)r;
}

void cloom_nft_rule_free(cloom_nft_rule *rule) {
    if (rule != NULL) nftnl_rule_free(as_rule(rule));
}

// Adds `e` to the rule, or frees it and reports -ENOMEM if setting an attribute failed.
static int append(cloom_nft_rule *rule, struct nftnl_expr *e, int failed) {
    if (e == NULL) return -ENOMEM;
    if (failed) {
        nftnl_expr_free(e);
        return -ENOMEM;
    }
    nftnl_rule_add_expr(as_rule(rule), e);
    return 0;
}

int cloom_nft_expr_meta(cloom_nft_rule *rule, uint32_t key, uint32_t dreg) {
    struct nftnl_expr *e = nftnl_expr_alloc("meta");
    if (e != NULL) {
        nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
        nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, dreg);
    }
    return append(rule, e, 0);
}

int cloom_nft_expr_cmp(cloom_nft_rule *rule, uint32_t op, uint32_t sreg, const uint8_t *data, uint32_t len) {
    struct nftnl_expr *e = nftnl_expr_alloc("cmp");
    int failed = 0;
    if (e != NULL) {
        nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, sreg);
        nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
        failed = nftnl_expr_set_data(e, NFTNL_EXPR_CMP_DATA, data, len) < 0;
    }
    return append(rule, e, failed);
}

int cloom_nft_expr_payload(cloom_nft_rule *rule, uint32_t base, uint32_t offset, uint32_t len, uint32_t dreg) {
    struct nftnl_expr *e = nftnl_expr_alloc("payload");
    if (e != NULL) {
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg);
    }
    return append(rule, e, 0);
}

int cloom_nft_expr_bitwise(
    cloom_nft_rule *rule, uint32_t sreg, uint32_t dreg, const uint8_t *mask, const uint8_t *xor_, uint32_t len) {
    struct nftnl_expr *e = nftnl_expr_alloc("bitwise");
    int failed = 0;
    if (e != NULL) {
        nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, sreg);
        nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, dreg);
        nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, len);
        failed = nftnl_expr_set_data(e, NFTNL_EXPR_BITWISE_MASK, mask, len) < 0
            || nftnl_expr_set_data(e, NFTNL_EXPR_BITWISE_XOR, xor_, len) < 0;
    }
    return append(rule, e, failed);
}

int cloom_nft_expr_lookup(cloom_nft_rule *rule, uint32_t sreg, const char *set, uint32_t set_id, int invert) {
    struct nftnl_expr *e = nftnl_expr_alloc("lookup");
    int failed = 0;
    if (e != NULL) {
        nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, sreg);
        failed = nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set) < 0;
        if (set_id != 0) nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, set_id);
        if (invert) nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
    }
    return append(rule, e, failed);
}

int cloom_nft_expr_verdict(cloom_nft_rule *rule, int32_t verdict) {
    struct nftnl_expr *e = nftnl_expr_alloc("immediate");
    if (e != NULL) {
        nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, (uint32_t)verdict);
    }
    return append(rule, e, 0);
}

int cloom_nft_expr_immediate(cloom_nft_rule *rule, uint32_t dreg, const uint8_t *data, uint32_t len) {
    struct nftnl_expr *e = nftnl_expr_alloc("immediate");
    int failed = 0;
    if (e != NULL) {
        nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, dreg);
        failed = nftnl_expr_set_data(e, NFTNL_EXPR_IMM_DATA, data, len) < 0;
    }
    return append(rule, e, failed);
}

int cloom_nft_expr_redir(cloom_nft_rule *rule, uint32_t proto_min_reg) {
    struct nftnl_expr *e = nftnl_expr_alloc("redir");
    if (e != NULL) {
        nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_REG_PROTO_MIN, proto_min_reg);
        nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
    }
    return append(rule, e, 0);
}

int cloom_nft_expr_queue(cloom_nft_rule *rule, uint16_t num, uint16_t flags) {
    struct nftnl_expr *e = nftnl_expr_alloc("queue");
    if (e != NULL) {
        // As nft builds `queue flags bypass to N`: one queue (total 1), flags only if any.
        nftnl_expr_set_u16(e, NFTNL_EXPR_QUEUE_NUM, num);
        nftnl_expr_set_u16(e, NFTNL_EXPR_QUEUE_TOTAL, 1);
        if (flags != 0) nftnl_expr_set_u16(e, NFTNL_EXPR_QUEUE_FLAGS, flags);
    }
    return append(rule, e, 0);
}

// Revision 3 of xt_NFQUEUE takes struct xt_NFQ_info_v3; nft_compat wants its size
// rounded up as xtables rounds it (XT_ALIGN: 8 bytes).
#define XT_NFQ_INFO_SIZE ((sizeof(struct xt_NFQ_info_v3) + 7) & ~(size_t)7)

int cloom_nft_expr_xt_queue(cloom_nft_rule *rule, uint16_t num, uint16_t flags) {
    struct nftnl_expr *e = nftnl_expr_alloc("target");
    // libnftnl keeps (and later frees) the info pointer itself, so it must be heap memory.
    struct xt_NFQ_info_v3 *info = calloc(1, XT_NFQ_INFO_SIZE);
    int failed = info == NULL;
    if (e != NULL && info != NULL) {
        info->queuenum = num;
        info->queues_total = 1;
        info->flags = flags;
        failed = nftnl_expr_set_str(e, NFTNL_EXPR_TG_NAME, "NFQUEUE") < 0;
        nftnl_expr_set_u32(e, NFTNL_EXPR_TG_REV, 3);
        if (!failed) {
            failed = nftnl_expr_set_data(e, NFTNL_EXPR_TG_INFO, info, XT_NFQ_INFO_SIZE) < 0;
            if (!failed) info = NULL;  // owned by the expression now
        }
    }
    free(info);
    return append(rule, e, failed);
}

int cloom_nft_rule_describe(const cloom_nft_rule *rule, char *buf, size_t cap) {
    int n = nftnl_rule_snprintf(buf, cap, (const struct nftnl_rule *)rule, NFTNL_OUTPUT_DEFAULT, 0);
    return n < 0 ? -EINVAL : n;
}

// ---- table query ----

struct table_answer {
    int found;
    char *comment;
    size_t cap;
    int *has_comment;
};

static int on_table_comment(const struct nftnl_udata *attr, void *data) {
    struct table_answer *a = data;
    if (nftnl_udata_type(attr) != NFTNL_UDATA_TABLE_COMMENT || a->cap == 0) return MNL_CB_OK;
    size_t len = strnlen(nftnl_udata_get(attr), nftnl_udata_len(attr));
    if (len >= a->cap) len = a->cap - 1;
    memcpy(a->comment, nftnl_udata_get(attr), len);
    a->comment[len] = '\0';
    *a->has_comment = 1;
    return MNL_CB_OK;
}

static int on_table(const struct nlmsghdr *nlh, void *data) {
    struct table_answer *a = data;
    struct nftnl_table *t = nftnl_table_alloc();
    if (t == NULL) {
        errno = ENOMEM;
        return MNL_CB_ERROR;
    }
    if (nftnl_table_nlmsg_parse(nlh, t) == 0) {
        a->found = 1;
        uint32_t len = 0;
        const void *ud = nftnl_table_get_data(t, NFTNL_TABLE_USERDATA, &len);
        if (ud != NULL) (void)nftnl_udata_parse(ud, len, on_table_comment, a);
    }
    nftnl_table_free(t);
    return MNL_CB_OK;
}

int cloom_nft_get_table(
    cloom_nft_socket *sock, uint32_t seq, uint16_t family, const char *table, char *comment, size_t comment_cap,
    int *has_comment) {
    *has_comment = 0;
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nftnl_table *t = nftnl_table_alloc();
    if (t == NULL || nftnl_table_set_str(t, NFTNL_TABLE_NAME, table) < 0) {
        if (t != NULL) nftnl_table_free(t);
        return -ENOMEM;
    }
    struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, family, NLM_F_ACK, seq);
    nftnl_table_nlmsg_build_payload(nlh, t);
    nftnl_table_free(t);

    struct table_answer answer = {.comment = comment, .cap = comment_cap, .has_comment = has_comment};
    struct replies r = {.first_seq = seq, .last_seq = seq, .on_data = on_table, .data = &answer};
    int rc = exchange((struct mnl_socket *)sock, buf, nlh->nlmsg_len, &r);
    if (rc < 0) return rc;
    if (r.error == -ENOENT) return 0;
    if (r.error != 0) return r.error;
    return answer.found;
}
