// A workload's certificate and private key: issued by the mesh CA
// (CertificateAuthority.issue) or loaded from files an operator provides, and written out
// for `loomctl ca issue` (the key with mode 0600 from its first byte). The identity is the
// SPIFFE ID in the certificate's URI SAN.
import CLoomTLS

public final class WorkloadCertificate: @unchecked Sendable {
    // @unchecked: immutable after init; OpenSSL's X509 and EVP_PKEY are safe to read from
    // several threads.

    public let identity: SpiffeID
    /// Lowercase hex.
    public let serial: String
    /// Unix seconds.
    public let notBefore: Int64
    public let notAfter: Int64
    public let certificatePEM: String

    /// X509 and EVP_PKEY, owned.
    let x509: OpaquePointer
    let key: OpaquePointer

    init(x509: OpaquePointer, key: OpaquePointer, identity: SpiffeID) {
        let facts = CertificateFacts(x509)
        self.x509 = x509
        self.key = key
        self.identity = identity
        self.serial = facts.serial
        self.notBefore = facts.notBefore
        self.notAfter = facts.notAfter
        self.certificatePEM = X509.pem(certificate: x509)
    }

    deinit {
        cloom_tls_cert_free(x509)
        cloom_tls_key_free(key)
    }

    /// The private key as unencrypted PKCS#8 PEM, encoded on each call (not kept).
    public var privateKeyPEM: String { X509.pem(key: key) }

    /// Writes the certificate (mode 0644) and the key (mode 0600), each replacing any file
    /// there through a new file and rename(2).
    public func write(certificatePath: String, keyPath: String) throws(TLSError) {
        try PEMFiles.replace(keyPath, contents: privateKeyPEM, mode: 0o600)
        try PEMFiles.replace(certificatePath, contents: certificatePEM, mode: 0o644)
    }

    /// Loads a workload certificate and its key, with the same checks as the CA's: both
    /// files readable, the key readable by its owner only, PEM, the key the certificate's,
    /// not a CA certificate, and a SPIFFE ID as URI SAN. Validity is not checked here: the
    /// peer's verification reports an expired certificate.
    public static func load(certificatePath: String, keyPath: String) throws(TLSError) -> WorkloadCertificate {
        let hint = "issue one with `loomctl ca issue --dir CA_DIR --identity ID --out PREFIX`"
        return try X509.load(certificatePath: certificatePath, keyPath: keyPath, role: "a workload", hint: hint) {
            (pair) throws(TLSError) -> WorkloadCertificate in
            if pair.facts.isCA == true {
                throw TLSError(
                    "\(certificatePath) is a CA certificate: a workload needs a certificate issued by the CA (`loomctl ca issue`)"
                )
            }
            guard let uri = pair.facts.spiffeURI, let identity = SpiffeID(uri: uri) else {
                let found = pair.facts.uris.isEmpty ? "none" : pair.facts.uris.joined(separator: ", ")
                throw TLSError(
                    "\(certificatePath) has no URI SAN of the form spiffe://<trust domain>/ns/<namespace>/sa/<service account> (found: \(found))"
                )
            }
            return WorkloadCertificate(x509: pair.cert, key: pair.key, identity: identity)
        }
    }
}
