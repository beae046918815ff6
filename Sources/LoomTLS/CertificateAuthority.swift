// The mesh certificate authority: an ECDSA P-256 key and a self-signed CA certificate in a
// directory (ca.key 0600, ca.crt 0644, the directory 0700), created once and never
// overwritten, loaded with every check an operator should hear about first, and used to
// issue short-lived workload certificates whose URI SAN is the workload's SPIFFE ID.
// Which names, extensions and lifetimes go into the certificates is decided here; OpenSSL
// (CLoomTLS) encodes and signs.
import CLoomTLS

public final class CertificateAuthority: @unchecked Sendable {
    // @unchecked: immutable after init; OpenSSL's X509 and EVP_PKEY are safe to read (and
    // to sign with) from several threads.

    public static let certificateFile = "ca.crt"
    public static let keyFile = "ca.key"

    public let trustDomain: String
    public let subject: String
    public let notBefore: Int64
    /// Unix seconds.
    public let notAfter: Int64
    public let certificatePEM: String
    /// SHA-256 of the certificate's DER encoding, lowercase hex.
    public let fingerprint: String
    /// What was checked on load, one line each (for `loomctl ca show`).
    public let checks: [String]

    /// X509 and EVP_PKEY, owned.
    let x509: OpaquePointer
    let key: OpaquePointer

    private init(x509: OpaquePointer, key: OpaquePointer, trustDomain: String, checks: [String]) {
        let facts = CertificateFacts(x509)
        self.x509 = x509
        self.key = key
        self.trustDomain = trustDomain
        self.subject = facts.subject
        self.notBefore = facts.notBefore
        self.notAfter = facts.notAfter
        self.certificatePEM = X509.pem(certificate: x509)
        self.fingerprint = facts.fingerprint
        self.checks = checks
    }

    deinit {
        cloom_tls_cert_free(x509)
        cloom_tls_key_free(key)
    }

    // MARK: - create

    /// Creates a CA in `directory` (made with mode 0700 if absent): ca.key (0600) and
    /// ca.crt (0644). Refuses if either file exists.
    public static func create(
        directory: String,
        trustDomain: String,
        validDays: Int = 3650
    ) throws(TLSError) -> CertificateAuthority {
        try checkTrustDomain(trustDomain)
        guard validDays > 0 && validDays <= 36500 else {
            throw TLSError("a CA must be valid for 1 to 36500 days (asked for \(validDays))")
        }
        let certificatePath = path(directory, certificateFile)
        let keyPath = path(directory, keyFile)
        for existing in [keyPath, certificatePath] where PEMFiles.exists(existing) {
            throw TLSError(
                "\(existing) already exists: a CA is never overwritten (inspect it with `loomctl ca show --dir \(directory)`, or move it away first)"
            )
        }
        try PEMFiles.makeDirectory(directory, mode: 0o700)
        try PEMFiles.checkDirectory(directory, hint: "choose another --dir")

        let key = try X509.generateKey()
        let now = unixNow()
        let cert: OpaquePointer
        do {
            cert = try X509.build(
                subjectKey: key,
                notBefore: now - 60,
                notAfter: now + Int64(validDays) * 86400,
                subject: [("O", "Loom"), ("CN", "Loom mesh CA \(trustDomain)")],
                extensions: [
                    ("basicConstraints", "critical,CA:TRUE,pathlen:0"),
                    ("keyUsage", "critical,keyCertSign,cRLSign"),
                    ("subjectKeyIdentifier", "hash"),
                    ("subjectAltName", "URI:spiffe://\(trustDomain)"),
                ],
                issuer: nil
            )
        } catch {
            cloom_tls_key_free(key)
            throw error
        }
        let authority = CertificateAuthority(x509: cert, key: key, trustDomain: trustDomain, checks: [])
        try PEMFiles.create(keyPath, contents: X509.pem(key: key), mode: 0o600)
        do {
            try PEMFiles.create(certificatePath, contents: authority.certificatePEM, mode: 0o644)
        } catch {
            PEMFiles.remove(keyPath)
            throw error
        }
        return authority
    }

    // MARK: - load

    /// Loads DIR/ca.crt and DIR/ca.key. `trustDomain` is required when the certificate has
    /// no `spiffe://<trust domain>` URI SAN, and overrides it otherwise.
    public static func load(directory: String, trustDomain: String? = nil) throws(TLSError) -> CertificateAuthority {
        try load(
            certificatePath: path(directory, certificateFile),
            keyPath: path(directory, keyFile),
            trustDomain: trustDomain
        )
    }

    /// Loads a CA certificate and its key, checking (in this order) the key's directory and
    /// mode, both files, that the key is the certificate's, that the certificate is a CA,
    /// that it is valid now, and its trust domain.
    public static func load(
        certificatePath: String,
        keyPath: String,
        trustDomain: String? = nil
    ) throws(TLSError) -> CertificateAuthority {
        let directory = PEMFiles.directory(of: keyPath)
        let hint = "create a CA with `loomctl ca init --dir \(directory)`, or pass the right --dir"
        var checks: [String] = []
        try PEMFiles.checkDirectory(directory, hint: hint)
        checks.append("\(directory): not writable by group or others")
        return try X509.load(certificatePath: certificatePath, keyPath: keyPath, role: "a CA", hint: hint) {
            (pair) throws(TLSError) -> CertificateAuthority in
            checks.append("\(keyPath): mode \(PEMFiles.octal(pair.keyMode)), readable by its owner only")
            checks.append("\(keyPath): the private key of \(certificatePath)")
            let facts = pair.facts
            guard facts.isCA == true else {
                throw TLSError(
                    "\(certificatePath) is not a CA certificate (no basicConstraints CA:TRUE): pass the mesh CA's certificate, not a workload's"
                )
            }
            checks.append("\(certificatePath): a CA certificate (basicConstraints CA:TRUE)")
            let now = unixNow()
            if facts.notAfter <= now {
                throw TLSError(
                    "\(certificatePath) expired on \(utcText(facts.notAfter)): create a new CA (`loomctl ca init`) and reissue the workload certificates"
                )
            }
            if facts.notBefore > now {
                throw TLSError(
                    "\(certificatePath) is not valid before \(utcText(facts.notBefore)): check this machine's clock"
                )
            }
            checks.append("\(certificatePath): valid until \(utcText(facts.notAfter))")
            let domain: String
            if let trustDomain {
                try checkTrustDomain(trustDomain)
                domain = trustDomain
                checks.append("trust domain \(trustDomain): given by the caller")
            } else if let uri = facts.spiffeURI, let found = trustDomainOf(uri) {
                domain = found
                checks.append("trust domain \(found): from the certificate's URI SAN \(uri)")
            } else {
                throw TLSError(
                    "\(certificatePath) names no trust domain (no spiffe://<trust domain> URI SAN): pass --trust-domain"
                )
            }
            return CertificateAuthority(x509: pair.cert, key: pair.key, trustDomain: domain, checks: checks)
        }
    }

    // MARK: - issue

    /// A workload certificate for `identity` with a fresh P-256 key: no subject, the SPIFFE
    /// ID as a critical URI SAN, serverAuth and clientAuth. Valid from now +
    /// `notBeforeOffset` to now + `validSeconds` (negative: already expired, for tests).
    public func issue(
        identity: SpiffeID,
        validSeconds: Int64,
        notBeforeOffset: Int64 = -60
    ) throws(TLSError) -> WorkloadCertificate {
        guard identity.trustDomain == trustDomain else {
            throw TLSError("\(identity) is not in this CA's trust domain \(trustDomain)")
        }
        let key = try X509.generateKey()
        let now = unixNow()
        do {
            let cert = try X509.build(
                subjectKey: key,
                notBefore: now + notBeforeOffset,
                notAfter: now + validSeconds,
                subject: [],
                extensions: [
                    ("basicConstraints", "critical,CA:FALSE"),
                    ("keyUsage", "critical,digitalSignature,keyEncipherment"),
                    ("extendedKeyUsage", "serverAuth,clientAuth"),
                    ("authorityKeyIdentifier", "keyid:always"),
                    ("subjectAltName", "critical,URI:\(identity.uri)"),
                ],
                issuer: (x509, self.key)
            )
            return WorkloadCertificate(x509: cert, key: key, identity: identity)
        } catch {
            cloom_tls_key_free(key)
            throw error
        }
    }

    /// Checks that `certificate` chains to this CA and is valid now; the error carries
    /// OpenSSL's verify reason ("certificate has expired", …).
    public func verify(_ certificate: WorkloadCertificate) throws(TLSError) {
        let result = cloom_tls_cert_verify(x509, certificate.x509)
        _ = cloom_tls_take_error()
        if result != CLOOM_TLS_X509_V_OK {
            throw TLSError(
                "\(certificate.identity) (serial \(certificate.serial)): certificate verify failed: \(String(cString: cloom_tls_verify_error_string(result)))"
            )
        }
    }

    private static func checkTrustDomain(_ trustDomain: String) throws(TLSError) {
        guard SpiffeID.isValidTrustDomain(trustDomain) else {
            throw TLSError(
                "'\(trustDomain)' is not a trust domain: use lowercase letters, digits, '.', '-' and '_' (e.g. cluster.local)"
            )
        }
    }

    private static func path(_ directory: String, _ file: String) -> String {
        directory.hasSuffix("/") ? directory + file : "\(directory)/\(file)"
    }

    /// "td" from "spiffe://td" (a trust domain ID: no path).
    private static func trustDomainOf(_ uri: String) -> String? {
        let domain = String(uri.dropFirst("spiffe://".count))
        return SpiffeID.isValidTrustDomain(domain) ? domain : nil
    }
}
