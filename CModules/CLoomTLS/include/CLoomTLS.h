// CLoomTLS: X.509 certificates and TLS 1.3 streams through OpenSSL (libssl, libcrypto),
// under LoomTLS (Sources/LoomTLS).
//
// C only does what OpenSSL does and reports facts: keys and certificates are generated,
// parsed, printed and signed here; which extensions, which lifetimes, which cipher suites,
// and what an error means are decided in Swift. OpenSSL's headers stay out of this header:
// its objects are opaque pointers to Swift.
//
// Conventions: functions returning int return 1 for yes/success and 0 for no/failure
// unless said otherwise; on failure OpenSSL's reason is in the thread's error queue, to be
// taken with `cloom_tls_take_error` (which also clears the queue). Strings returned as
// `char *` are malloc'd and freed by the caller with `cloom_tls_free`; `const char *`
// strings are OpenSSL's static text.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// EVP_PKEY, X509, SSL_CTX and SSL.
typedef struct evp_pkey_st cloom_tls_key;
typedef struct x509_st cloom_tls_cert;
typedef struct ssl_ctx_st cloom_tls_ctx;
typedef struct ssl_st cloom_tls_ssl;
typedef struct ssl_session_st cloom_tls_session;

void cloom_tls_free(void *pointer);

// MARK: - errors

/// The first error queued on this thread (0 if none); the queue is cleared.
unsigned long cloom_tls_take_error(void);
/// OpenSSL's reason text for an error code (NULL if it has none).
const char *cloom_tls_error_reason(unsigned long code);
/// Whether the code is SSL_R_UNEXPECTED_EOF_WHILE_READING (EOF without close_notify).
int cloom_tls_error_is_unexpected_eof(unsigned long code);
/// X509_verify_cert_error_string.
const char *cloom_tls_verify_error_string(long result);
extern const long CLOOM_TLS_X509_V_OK;

// MARK: - keys

/// A fresh ECDSA P-256 key, or NULL.
cloom_tls_key *cloom_tls_key_generate_p256(void);
/// Parses a PEM private key (never prompts for a passphrase); NULL if it cannot.
cloom_tls_key *cloom_tls_key_parse_pem(const void *data, size_t length);
/// The key as unencrypted PKCS#8 PEM, or NULL.
char *cloom_tls_key_pem(cloom_tls_key *key);
void cloom_tls_key_free(cloom_tls_key *key);

// MARK: - certificates: facts

cloom_tls_cert *cloom_tls_cert_parse_pem(const void *data, size_t length);
char *cloom_tls_cert_pem(cloom_tls_cert *cert);
void cloom_tls_cert_free(cloom_tls_cert *cert);
/// notBefore and notAfter as Unix seconds; 0 if they cannot be read.
int cloom_tls_cert_times(const cloom_tls_cert *cert, int64_t *not_before, int64_t *not_after);
/// basicConstraints: -1 when the extension is absent, 0 for CA:FALSE, 1 for CA:TRUE;
/// `pathlen` is the path length constraint or -1.
int cloom_tls_cert_basic_constraints(cloom_tls_cert *cert, long *pathlen);
/// Subject as "O=Loom, CN=…" (empty string for an empty subject).
char *cloom_tls_cert_subject(const cloom_tls_cert *cert);
/// Serial number in lowercase hex.
char *cloom_tls_cert_serial_hex(const cloom_tls_cert *cert);
/// SHA-256 of the DER encoding into `out` (32 bytes).
int cloom_tls_cert_fingerprint(const cloom_tls_cert *cert, uint8_t out[32]);
/// The `index`-th URI subject alternative name (counting URI names only), or NULL.
char *cloom_tls_cert_uri(const cloom_tls_cert *cert, int index);
/// X509_check_private_key: whether the key is the certificate's.
int cloom_tls_cert_key_matches(cloom_tls_cert *cert, cloom_tls_key *key);
/// Verifies `leaf` against `ca` as the only trust anchor at the current time. Returns the
/// X509 verify result (CLOOM_TLS_X509_V_OK when the chain is good).
long cloom_tls_cert_verify(cloom_tls_cert *ca, cloom_tls_cert *leaf);

// MARK: - certificates: building

/// A new v3 certificate for `subject_key` with a random 128-bit serial and the validity
/// given in Unix seconds; subject, issuer and extensions are empty. NULL on failure.
cloom_tls_cert *cloom_tls_cert_new(cloom_tls_key *subject_key, int64_t not_before, int64_t not_after);
/// Appends a subject name entry, e.g. ("O", "Loom").
int cloom_tls_cert_add_subject(cloom_tls_cert *cert, const char *field, const char *value);
/// Adds an extension in openssl.cnf syntax, e.g. ("basicConstraints", "critical,CA:TRUE").
/// `issuer` is the issuing certificate (NULL: the certificate itself, self-signed).
int cloom_tls_cert_add_extension(cloom_tls_cert *cert, cloom_tls_cert *issuer, const char *name, const char *value);
/// Sets the issuer name from `issuer` (NULL: self-signed) and signs with SHA-256.
int cloom_tls_cert_sign(cloom_tls_cert *cert, cloom_tls_cert *issuer, cloom_tls_key *issuer_key);

// MARK: - contexts

extern const int CLOOM_TLS1_3_VERSION;
extern const uint64_t CLOOM_SSL_OP_NO_TICKET, CLOOM_SSL_OP_ENABLE_KTLS;
extern const long CLOOM_SSL_MODE_RELEASE_BUFFERS, CLOOM_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;

/// SSL_CTX_new(TLS_method()) with the session cache off; NULL on failure.
cloom_tls_ctx *cloom_tls_ctx_new(void);
void cloom_tls_ctx_free(cloom_tls_ctx *ctx);
int cloom_tls_ctx_set_versions(cloom_tls_ctx *ctx, int min_version, int max_version);
int cloom_tls_ctx_set_ciphersuites(cloom_tls_ctx *ctx, const char *suites);
int cloom_tls_ctx_set_groups(cloom_tls_ctx *ctx, const char *groups);
void cloom_tls_ctx_set_options(cloom_tls_ctx *ctx, uint64_t options);
void cloom_tls_ctx_set_mode(cloom_tls_ctx *ctx, long mode);
int cloom_tls_ctx_set_num_tickets(cloom_tls_ctx *ctx, size_t count);
/// The certificate and key this end presents (and a check that they match).
int cloom_tls_ctx_use_identity(cloom_tls_ctx *ctx, cloom_tls_cert *cert, cloom_tls_key *key);
/// A trust store holding `ca` only.
int cloom_tls_ctx_trust_only(cloom_tls_ctx *ctx, cloom_tls_cert *ca);
/// SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT.
void cloom_tls_ctx_require_peer_certificate(cloom_tls_ctx *ctx);

// MARK: - streams

/// What an SSL call answered (SSL_get_error, folded).
enum {
    CLOOM_TLS_OK = 0,
    CLOOM_TLS_WANT_READ = 1,
    CLOOM_TLS_WANT_WRITE = 2,
    /// The peer's close_notify (SSL_ERROR_ZERO_RETURN).
    CLOOM_TLS_CLOSED = 3,
    /// SSL_ERROR_SYSCALL: see `sys_errno`.
    CLOOM_TLS_SYSCALL = 4,
    /// SSL_ERROR_SSL: see `first_error` and `verify_result`.
    CLOOM_TLS_PROTOCOL = 5,
    /// Any other SSL_get_error value (in `ssl_error`).
    CLOOM_TLS_OTHER = 6,
};

/// Facts about a failed call, filled only when the result is CLOOM_TLS_SYSCALL or later.
typedef struct {
    int ssl_error;
    /// errno right after the call.
    int sys_errno;
    /// The first error that was queued (the queue is cleared afterwards).
    unsigned long first_error;
    /// SSL_get_verify_result.
    long verify_result;
} cloom_tls_outcome;

/// SSL_new + SSL_set_fd + connect or accept state; NULL on failure.
cloom_tls_ssl *cloom_tls_ssl_new(cloom_tls_ctx *ctx, int fd, int server);
void cloom_tls_ssl_free(cloom_tls_ssl *ssl);
int cloom_tls_handshake(cloom_tls_ssl *ssl, cloom_tls_outcome *outcome);
/// SSL_read_ex: `*count` bytes read on CLOOM_TLS_OK.
int cloom_tls_read(cloom_tls_ssl *ssl, void *buffer, size_t length, size_t *count, cloom_tls_outcome *outcome);
/// SSL_write_ex: `*count` bytes written on CLOOM_TLS_OK.
int cloom_tls_write(cloom_tls_ssl *ssl, const void *buffer, size_t length, size_t *count, cloom_tls_outcome *outcome);
/// SSL_shutdown: CLOOM_TLS_OK once close_notify is sent (whether or not the peer's came).
int cloom_tls_shutdown(cloom_tls_ssl *ssl, cloom_tls_outcome *outcome);

/// The peer's certificate, borrowed (valid while `ssl` lives); NULL if none.
cloom_tls_cert *cloom_tls_ssl_peer_certificate(const cloom_tls_ssl *ssl);
const char *cloom_tls_ssl_version(const cloom_tls_ssl *ssl);
/// The negotiated cipher's name, or NULL before the handshake.
const char *cloom_tls_ssl_cipher(const cloom_tls_ssl *ssl);
int cloom_tls_ssl_session_reused(const cloom_tls_ssl *ssl);

// MARK: - session resumption (TLS 1.3 tickets)

/// Turns resumption on for a context used at both ends: the server end issues one
/// stateless ticket per handshake (sessions live `seconds`; the ticket keys are the
/// context's own, so a new context, as at certificate rotation, ends them); the client
/// end keeps the last ticket it received on the SSL until `cloom_tls_ssl_take_session`.
/// Returns 1 on success.
int cloom_tls_ctx_enable_resumption(cloom_tls_ctx *ctx, long seconds);
/// The newest session ticket the server sent on this connection (the caller owns it),
/// or NULL.
cloom_tls_session *cloom_tls_ssl_take_session(cloom_tls_ssl *ssl);
/// Offers `session` for resumption (before the handshake); 1 on success.
int cloom_tls_ssl_set_session(cloom_tls_ssl *ssl, cloom_tls_session *session);
void cloom_tls_session_free(cloom_tls_session *session);
/// BIO_get_ktls_send / BIO_get_ktls_recv of the SSL's write / read BIO.
int cloom_tls_ssl_ktls_send(const cloom_tls_ssl *ssl);
int cloom_tls_ssl_ktls_receive(const cloom_tls_ssl *ssl);

#ifdef __cplusplus
}
#endif
