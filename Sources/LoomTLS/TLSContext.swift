// One OpenSSL SSL_CTX per workload identity, for both ends of mutual TLS: TLS 1.3 only,
// three AEAD suites, X25519 or P-256, the mesh CA as the only trust anchor, and a peer
// certificate required in both directions. No session tickets or session cache yet.
// Kernel TLS (SSL_OP_ENABLE_KTLS) is asked for on request; whether a connection got it is
// on its TLSStream.
import CLoomTLS

public final class TLSContext: @unchecked Sendable {
    // @unchecked: the SSL_CTX is configured in init and never changed afterwards; OpenSSL
    // lets any number of threads create SSL objects from one SSL_CTX.

    public static let ciphersuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
    public static let groups = "X25519:P-256"

    /// What this end presents.
    public let certificate: WorkloadCertificate
    /// The only trust anchor.
    public let authority: CertificateAuthority
    /// Whether SSL_OP_ENABLE_KTLS was set.
    public let kernelTLS: Bool

    /// How long a session ticket can resume a connection (seconds). Rotation ends them
    /// sooner: a new context has new ticket keys.
    public static let sessionSeconds = 300

    /// SSL_CTX, owned.
    let ctx: OpaquePointer

    public init(
        certificate: WorkloadCertificate,
        authority: CertificateAuthority,
        kernelTLS: Bool = false
    ) throws(TLSError) {
        guard let ctx = cloom_tls_ctx_new() else { throw TLSError.openssl("cannot create a TLS context") }
        var failure: String?
        if cloom_tls_ctx_set_versions(ctx, CLOOM_TLS1_3_VERSION, CLOOM_TLS1_3_VERSION) != 1 {
            failure = "cannot restrict the TLS context to TLS 1.3"
        } else if cloom_tls_ctx_set_ciphersuites(ctx, Self.ciphersuites) != 1 {
            failure = "cannot set the TLS 1.3 cipher suites \(Self.ciphersuites)"
        } else if cloom_tls_ctx_set_groups(ctx, Self.groups) != 1 {
            failure = "cannot set the key exchange groups \(Self.groups)"
        } else if cloom_tls_ctx_use_identity(ctx, certificate.x509, certificate.key) != 1 {
            failure = "cannot use the certificate of \(certificate.identity) (serial \(certificate.serial))"
        } else if cloom_tls_ctx_trust_only(ctx, authority.x509) != 1 {
            failure = "cannot trust the CA \(authority.subject)"
        }
        if let failure {
            cloom_tls_ctx_free(ctx)
            throw TLSError.openssl(failure)
        }
        cloom_tls_ctx_require_peer_certificate(ctx)
        cloom_tls_ctx_set_mode(ctx, CLOOM_SSL_MODE_RELEASE_BUFFERS | CLOOM_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
        if kernelTLS { cloom_tls_ctx_set_options(ctx, CLOOM_SSL_OP_ENABLE_KTLS) }
        if cloom_tls_ctx_enable_resumption(ctx, Self.sessionSeconds) != 1 {
            cloom_tls_ctx_free(ctx)
            throw TLSError.openssl("cannot set up session resumption")
        }
        _ = cloom_tls_take_error()
        self.ctx = ctx
        self.certificate = certificate
        self.authority = authority
        self.kernelTLS = kernelTLS
    }

    deinit { cloom_tls_ctx_free(ctx) }
}
