// NFQUEUE over libmnl and libnetfilter_queue's message helpers (its libmnl-based API). See
// include/CLoomNetfilter.h. C reads messages, copies what they hold and sends the verdict
// Swift chose; what the packets mean is worked out in Swift (TraceQueue.swift).
#include "CLoomNetfilter.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
// After the kernel's headers: it includes older copies of them with the same guards.
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

_Static_assert(CLOOM_NF_DROP == NF_DROP && CLOOM_NF_ACCEPT == NF_ACCEPT, "verdicts");
_Static_assert(CLOOM_NFQA_CFG_F_FAIL_OPEN == NFQA_CFG_F_FAIL_OPEN, "queue config flags");
_Static_assert(
    CLOOM_NF_INET_PRE_ROUTING == NF_INET_PRE_ROUTING && CLOOM_NF_INET_LOCAL_OUT == NF_INET_LOCAL_OUT, "hooks");

struct cloom_nft_queue {
    struct mnl_socket *nl;
    uint16_t num;
    uint32_t seq;  // of the next message sent
};

// Room for a burst of queued packets between two reads; the kernel accepts (fail open)
// what does not fit, so this only bounds how many a trace can miss.
#define QUEUE_SOCKET_BUFFER (1 << 20)

// One verdict message: header, nfgenmsg, one attribute with nfqnl_msg_verdict_hdr.
#define VERDICT_MESSAGE \
    (MNL_ALIGN(sizeof(struct nlmsghdr)) + MNL_ALIGN(sizeof(struct nfgenmsg)) \
     + MNL_ALIGN(MNL_ATTR_HDRLEN + sizeof(struct nfqnl_msg_verdict_hdr)))

// Verdicts collected while reading, sent together in one sendmsg.
struct verdicts {
    char buf[64 * VERDICT_MESSAGE];
    size_t len;
    uint32_t count;
};

// Sends the collected verdicts; those that could not be sent are counted as unanswered.
static void flush(cloom_nft_queue *q, struct verdicts *v, cloom_nft_queue_counts *counts) {
    if (v->count == 0) return;
    ssize_t sent;
    do {
        sent = mnl_socket_sendto(q->nl, v->buf, v->len);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        counts->unanswered += v->count;
        counts->last_error = -errno;
    }
    v->len = 0;
    v->count = 0;
}

static void add_verdict(
    cloom_nft_queue *q, struct verdicts *v, uint32_t id, uint32_t verdict, cloom_nft_queue_counts *counts) {
    if (sizeof v->buf - v->len < VERDICT_MESSAGE) flush(q, v, counts);
    struct nlmsghdr *nlh = nfq_nlmsg_put(v->buf + v->len, NFQNL_MSG_VERDICT, q->num);
    nlh->nlmsg_seq = q->seq++;
    nfq_nlmsg_verdict_put(nlh, (int)id, (int)verdict);
    v->len += nlh->nlmsg_len;
    v->count++;
}

// Reads one packet message: its verdict is collected, its contents stored in `out` if
// not NULL. 1 if stored, 0 if not.
static int on_packet(
    cloom_nft_queue *q, const struct nlmsghdr *nlh, uint32_t verdict, struct verdicts *v,
    cloom_nft_queued_packet *out, cloom_nft_queue_counts *counts) {
    struct nlattr *attr[NFQA_MAX + 1] = {0};
    counts->read++;
    // A failed parse may still have found the header; the verdict only needs its id.
    int parsed = nfq_nlmsg_parse(nlh, attr) >= 0;
    const struct nlattr *hdr_attr = attr[NFQA_PACKET_HDR];
    if (hdr_attr == NULL || mnl_attr_get_payload_len(hdr_attr) < sizeof(struct nfqnl_msg_packet_hdr)) {
        counts->unanswered++;
        counts->unstored++;
        return 0;
    }
    const struct nfqnl_msg_packet_hdr *ph = mnl_attr_get_payload(hdr_attr);
    uint32_t id = ntohl(ph->packet_id);
    add_verdict(q, v, id, verdict, counts);
    if (out == NULL || !parsed) {
        counts->unstored++;
        return 0;
    }
    memset(out, 0, sizeof *out);
    out->id = id;
    out->hook = ph->hook;
    out->hw_protocol = ntohs(ph->hw_protocol);
    if (attr[NFQA_MARK] != NULL) out->mark = ntohl(mnl_attr_get_u32(attr[NFQA_MARK]));
    if (attr[NFQA_IFINDEX_INDEV] != NULL) out->in_interface = ntohl(mnl_attr_get_u32(attr[NFQA_IFINDEX_INDEV]));
    if (attr[NFQA_IFINDEX_OUTDEV] != NULL) out->out_interface = ntohl(mnl_attr_get_u32(attr[NFQA_IFINDEX_OUTDEV]));
    if (attr[NFQA_PAYLOAD] != NULL) {
        size_t len = mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]);
        if (len > sizeof out->bytes) len = sizeof out->bytes;
        memcpy(out->bytes, mnl_attr_get_payload(attr[NFQA_PAYLOAD]), len);
        out->length = (uint32_t)len;
    }
    return 1;
}

// Reads until the socket is empty or `cap` packets are stored (`packets` NULL: until it
// is empty, storing nothing). Every message is looked at on its own (not through
// mnl_cb_run, which stops at the first bad one), so that each packet gets its verdict. If
// `ack_seq` is not NULL, the kernel's answer to that message is looked for: *ack_error is
// set to its error (0: done) and reading stops there.
static int pump(
    cloom_nft_queue *q, uint32_t verdict, cloom_nft_queued_packet *packets, uint32_t cap,
    cloom_nft_queue_counts *counts, const uint32_t *ack_seq, int *ack_error) {
    struct verdicts verdicts = {.len = 0}, *v = &verdicts;
    char buf[MNL_SOCKET_BUFFER_SIZE];
    uint32_t stored = 0;
    int rc = 0;
    int acked = 0;
    while (!acked && (packets == NULL || stored < cap)) {
        ssize_t n = mnl_socket_recvfrom(q->nl, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == ENOBUFS) {
            counts->overruns++;
            continue;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) rc = -errno;
            break;
        }
        int len = (int)n;
        for (const struct nlmsghdr *nlh = (const struct nlmsghdr *)buf; mnl_nlmsg_ok(nlh, len);
             nlh = mnl_nlmsg_next(nlh, &len)) {
            if (nlh->nlmsg_type == NLMSG_ERROR) {
                if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct nlmsgerr))) continue;
                const struct nlmsgerr *err = mnl_nlmsg_get_payload(nlh);
                if (ack_seq != NULL && nlh->nlmsg_seq == *ack_seq) {
                    *ack_error = err->error;
                    acked = 1;
                } else if (err->error != 0) {
                    counts->errors++;
                    counts->last_error = err->error;
                }
            } else if (nlh->nlmsg_type == ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) {
                cloom_nft_queued_packet *out = packets != NULL && stored < cap ? &packets[stored] : NULL;
                stored += (uint32_t)on_packet(q, nlh, verdict, v, out, counts);
            }
        }
    }
    flush(q, v, counts);
    return rc < 0 ? rc : (int)stored;
}

static void grow_receive_buffer(int fd) {
    int size = QUEUE_SOCKET_BUFFER;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0) {
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
}

// Binds queue `num` with copy mode, range and flags in one message (the kernel applies
// them in that order) and waits for the kernel's answer. 0 or -errno.
static int bind_queue(cloom_nft_queue *q, uint32_t copy_range, uint32_t flags, uint32_t verdict) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, q->num);
    nlh->nlmsg_flags |= NLM_F_ACK;
    nlh->nlmsg_seq = q->seq++;
    nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, NFQNL_CFG_CMD_BIND);
    uint32_t range = copy_range < CLOOM_NFT_QUEUE_MAX_COPY ? copy_range : CLOOM_NFT_QUEUE_MAX_COPY;
    nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, (int)range);
    mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(flags));
    mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(flags));
    ssize_t sent;
    do {
        sent = mnl_socket_sendto(q->nl, nlh, nlh->nlmsg_len);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) return -errno;

    // The kernel answers inside sendmsg, so the acknowledgement is already queued; a
    // packet queued meanwhile gets `verdict` like any other.
    cloom_nft_queue_counts counts = {0};
    uint32_t seq = nlh->nlmsg_seq;
    int ack_error = -EPROTO;  // no answer at all
    int rc = pump(q, verdict, NULL, 0, &counts, &seq, &ack_error);
    return rc < 0 ? rc : ack_error;
}

cloom_nft_queue *cloom_nft_queue_open(uint16_t num, uint32_t copy_range, uint32_t flags, uint32_t verdict, int *err) {
    cloom_nft_queue *q = calloc(1, sizeof *q);
    if (q == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    q->num = num;
    q->seq = 1;
    q->nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | SOCK_NONBLOCK);
    int rc = q->nl == NULL || mnl_socket_bind(q->nl, 0, MNL_SOCKET_AUTOPID) < 0 ? -errno : 0;
    if (rc == 0) {
        // Lost messages are the kernel's business (fail open), not a recv error.
        int one = 1;
        (void)mnl_socket_setsockopt(q->nl, NETLINK_NO_ENOBUFS, &one, sizeof one);
        grow_receive_buffer(mnl_socket_get_fd(q->nl));
        rc = bind_queue(q, copy_range, flags, verdict);
    }
    if (rc < 0) {
        *err = rc;
        if (q->nl != NULL) mnl_socket_close(q->nl);
        free(q);
        return NULL;
    }
    return q;
}

int cloom_nft_queue_fd(const cloom_nft_queue *q) { return mnl_socket_get_fd(q->nl); }

void cloom_nft_queue_close(cloom_nft_queue *q) {
    if (q == NULL) return;
    mnl_socket_close(q->nl);
    free(q);
}

int cloom_nft_queue_receive(
    cloom_nft_queue *q, uint32_t verdict, cloom_nft_queued_packet *packets, uint32_t cap,
    cloom_nft_queue_counts *counts) {
    memset(counts, 0, sizeof *counts);
    return pump(q, verdict, packets, cap, counts, NULL, NULL);
}
