// TLS contexts and non-blocking TLS streams for LoomTLS through libssl, and OpenSSL's
// error queue. Each SSL call clears the thread's error queue first and, when it fails,
// reports the first queued error and clears the queue again: many connections share one
// event-loop thread, and a stale error must never be blamed on the next connection.
// What the answers mean is decided in Swift (Sources/LoomTLS/TLSStream.swift).
#include "CLoomTLS.h"

#include <errno.h>
#include <pthread.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

const long CLOOM_TLS_X509_V_OK = X509_V_OK;
const int CLOOM_TLS1_3_VERSION = TLS1_3_VERSION;
const uint64_t CLOOM_SSL_OP_NO_TICKET = SSL_OP_NO_TICKET;
#ifdef SSL_OP_ENABLE_KTLS
const uint64_t CLOOM_SSL_OP_ENABLE_KTLS = SSL_OP_ENABLE_KTLS;
#else
const uint64_t CLOOM_SSL_OP_ENABLE_KTLS = 0;
#endif
const long CLOOM_SSL_MODE_RELEASE_BUFFERS = SSL_MODE_RELEASE_BUFFERS;
const long CLOOM_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER = SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;

// MARK: - errors

unsigned long cloom_tls_take_error(void) {
    unsigned long code = ERR_get_error();
    ERR_clear_error();
    return code;
}

const char *cloom_tls_error_reason(unsigned long code) { return ERR_reason_error_string(code); }

int cloom_tls_error_is_unexpected_eof(unsigned long code) {
    return ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

const char *cloom_tls_verify_error_string(long result) { return X509_verify_cert_error_string(result); }

// MARK: - contexts

cloom_tls_ctx *cloom_tls_ctx_new(void) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx) SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return ctx;
}

void cloom_tls_ctx_free(cloom_tls_ctx *ctx) { SSL_CTX_free(ctx); }

int cloom_tls_ctx_set_versions(cloom_tls_ctx *ctx, int min_version, int max_version) {
    return SSL_CTX_set_min_proto_version(ctx, min_version) && SSL_CTX_set_max_proto_version(ctx, max_version);
}

int cloom_tls_ctx_set_ciphersuites(cloom_tls_ctx *ctx, const char *suites) {
    return SSL_CTX_set_ciphersuites(ctx, suites);
}

int cloom_tls_ctx_set_groups(cloom_tls_ctx *ctx, const char *groups) {
    return (int)SSL_CTX_set1_groups_list(ctx, groups);
}

void cloom_tls_ctx_set_options(cloom_tls_ctx *ctx, uint64_t options) { SSL_CTX_set_options(ctx, options); }

void cloom_tls_ctx_set_mode(cloom_tls_ctx *ctx, long mode) { SSL_CTX_set_mode(ctx, mode); }

int cloom_tls_ctx_set_num_tickets(cloom_tls_ctx *ctx, size_t count) { return SSL_CTX_set_num_tickets(ctx, count); }

int cloom_tls_ctx_use_identity(cloom_tls_ctx *ctx, cloom_tls_cert *cert, cloom_tls_key *key) {
    return SSL_CTX_use_certificate(ctx, cert) == 1 && SSL_CTX_use_PrivateKey(ctx, key) == 1
        && SSL_CTX_check_private_key(ctx) == 1;
}

int cloom_tls_ctx_trust_only(cloom_tls_ctx *ctx, cloom_tls_cert *ca) {
    X509_STORE *store = X509_STORE_new();
    if (!store) return 0;
    if (!X509_STORE_add_cert(store, ca)) {
        X509_STORE_free(store);
        return 0;
    }
    SSL_CTX_set_cert_store(ctx, store);  // takes ownership, frees the default store
    return 1;
}

void cloom_tls_ctx_require_peer_certificate(cloom_tls_ctx *ctx) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
}

// MARK: - streams

cloom_tls_ssl *cloom_tls_ssl_new(cloom_tls_ctx *ctx, int fd, int server) {
    SSL *ssl = SSL_new(ctx);
    if (!ssl) return NULL;
    if (!SSL_set_fd(ssl, fd)) {
        SSL_free(ssl);
        return NULL;
    }
    if (server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
    }
    return ssl;
}

void cloom_tls_ssl_free(cloom_tls_ssl *ssl) { SSL_free(ssl); }

// MARK: - session resumption

static int session_slot = -1;
static pthread_once_t session_slot_once = PTHREAD_ONCE_INIT;

static void session_slot_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp) {
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (ptr) SSL_SESSION_free(ptr);
}

static void session_slot_init(void) { session_slot = SSL_get_ex_new_index(0, NULL, NULL, NULL, session_slot_free); }

// Client end: a ticket arrived (after the handshake, in the first reads). Keep the
// newest on the SSL; returning 1 keeps OpenSSL's reference for us.
static int session_arrived(SSL *ssl, SSL_SESSION *session) {
    SSL_SESSION *old = SSL_get_ex_data(ssl, session_slot);
    if (old) SSL_SESSION_free(old);
    SSL_set_ex_data(ssl, session_slot, session);
    return 1;
}

int cloom_tls_ctx_enable_resumption(cloom_tls_ctx *ctx, long seconds) {
    pthread_once(&session_slot_once, session_slot_init);
    if (session_slot < 0) return 0;
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, session_arrived);
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_timeout(ctx, seconds);
    static const unsigned char id[] = "loom-mtls";
    return SSL_CTX_set_num_tickets(ctx, 1) == 1 && SSL_CTX_set_session_id_context(ctx, id, sizeof id - 1) == 1;
}

cloom_tls_session *cloom_tls_ssl_take_session(cloom_tls_ssl *ssl) {
    if (session_slot < 0) return NULL;
    SSL_SESSION *session = SSL_get_ex_data(ssl, session_slot);
    if (session) SSL_set_ex_data(ssl, session_slot, NULL);
    return session;
}

int cloom_tls_ssl_set_session(cloom_tls_ssl *ssl, cloom_tls_session *session) {
    return SSL_set_session(ssl, session);
}

void cloom_tls_session_free(cloom_tls_session *session) { SSL_SESSION_free(session); }

/// Folds the answer of an SSL call returning `ret` (with `saved_errno` right after it).
static int outcome_of(SSL *ssl, int ret, int saved_errno, cloom_tls_outcome *outcome) {
    int error = SSL_get_error(ssl, ret);
    switch (error) {
    case SSL_ERROR_NONE: return CLOOM_TLS_OK;
    case SSL_ERROR_WANT_READ: ERR_clear_error(); return CLOOM_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE: ERR_clear_error(); return CLOOM_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: ERR_clear_error(); return CLOOM_TLS_CLOSED;
    default: break;
    }
    outcome->ssl_error = error;
    outcome->sys_errno = saved_errno;
    outcome->first_error = ERR_get_error();
    outcome->verify_result = SSL_get_verify_result(ssl);
    ERR_clear_error();
    if (error == SSL_ERROR_SYSCALL) return CLOOM_TLS_SYSCALL;
    if (error == SSL_ERROR_SSL) return CLOOM_TLS_PROTOCOL;
    return CLOOM_TLS_OTHER;
}

int cloom_tls_handshake(cloom_tls_ssl *ssl, cloom_tls_outcome *outcome) {
    ERR_clear_error();
    errno = 0;
    int ret = SSL_do_handshake(ssl);
    int saved = errno;
    return ret == 1 ? CLOOM_TLS_OK : outcome_of(ssl, ret, saved, outcome);
}

int cloom_tls_read(cloom_tls_ssl *ssl, void *buffer, size_t length, size_t *count, cloom_tls_outcome *outcome) {
    ERR_clear_error();
    errno = 0;
    int ret = SSL_read_ex(ssl, buffer, length, count);
    int saved = errno;
    return ret == 1 ? CLOOM_TLS_OK : outcome_of(ssl, ret, saved, outcome);
}

int cloom_tls_write(cloom_tls_ssl *ssl, const void *buffer, size_t length, size_t *count, cloom_tls_outcome *outcome) {
    ERR_clear_error();
    errno = 0;
    int ret = SSL_write_ex(ssl, buffer, length, count);
    int saved = errno;
    return ret == 1 ? CLOOM_TLS_OK : outcome_of(ssl, ret, saved, outcome);
}

int cloom_tls_shutdown(cloom_tls_ssl *ssl, cloom_tls_outcome *outcome) {
    ERR_clear_error();
    errno = 0;
    int ret = SSL_shutdown(ssl);  // 0: close_notify sent, the peer's not yet seen; 1: both
    int saved = errno;
    return ret >= 0 ? CLOOM_TLS_OK : outcome_of(ssl, ret, saved, outcome);
}

cloom_tls_cert *cloom_tls_ssl_peer_certificate(const cloom_tls_ssl *ssl) { return SSL_get0_peer_certificate(ssl); }

const char *cloom_tls_ssl_version(const cloom_tls_ssl *ssl) { return SSL_get_version(ssl); }

const char *cloom_tls_ssl_cipher(const cloom_tls_ssl *ssl) {
    const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
    return cipher ? SSL_CIPHER_get_name(cipher) : NULL;
}

int cloom_tls_ssl_session_reused(const cloom_tls_ssl *ssl) { return SSL_session_reused(ssl); }

int cloom_tls_ssl_ktls_send(const cloom_tls_ssl *ssl) {
#ifndef OPENSSL_NO_KTLS
    BIO *bio = SSL_get_wbio(ssl);
    return bio && BIO_get_ktls_send(bio);
#else
    (void)ssl;
    return 0;
#endif
}

int cloom_tls_ssl_ktls_receive(const cloom_tls_ssl *ssl) {
#ifndef OPENSSL_NO_KTLS
    BIO *bio = SSL_get_rbio(ssl);
    return bio && BIO_get_ktls_recv(bio);
#else
    (void)ssl;
    return 0;
#endif
}
