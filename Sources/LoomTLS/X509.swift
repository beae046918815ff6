// Certificates and keys as CLoomTLS hands them over: what a certificate says (read once
// into a value), PEM parsing with errors that name the file, and building a certificate
// from a list of subject entries and extensions decided by the caller (the CA's profile is
// in CertificateAuthority.swift).
import CLoomTLS

#if canImport(Glibc)
    import Glibc
#endif

/// What a certificate says.
struct CertificateFacts {
    let subject: String
    /// Lowercase hex.
    let serial: String
    let notBefore: Int64
    let notAfter: Int64
    /// The URI subject alternative names, in order.
    let uris: [String]
    /// SHA-256 of the DER encoding, lowercase hex.
    let fingerprint: String
    /// basicConstraints CA flag; nil when the extension is absent.
    let isCA: Bool?

    init(_ cert: OpaquePointer) {
        subject = takeString(cloom_tls_cert_subject(cert)) ?? ""
        serial = takeString(cloom_tls_cert_serial_hex(cert)) ?? ""
        var before: Int64 = 0
        var after: Int64 = 0
        _ = cloom_tls_cert_times(cert, &before, &after)
        notBefore = before
        notAfter = after
        var uris: [String] = []
        while let uri = takeString(cloom_tls_cert_uri(cert, CInt(uris.count))) { uris.append(uri) }
        self.uris = uris
        var digest = [UInt8](repeating: 0, count: 32)
        _ = cloom_tls_cert_fingerprint(cert, &digest)
        fingerprint = hex(digest)
        var pathlen = 0
        switch cloom_tls_cert_basic_constraints(cert, &pathlen) {
        case 1: isCA = true
        case 0: isCA = false
        default: isCA = nil
        }
        _ = cloom_tls_take_error()
    }

    /// The first URI SAN that is a SPIFFE ID.
    var spiffeURI: String? { uris.first { $0.hasPrefix("spiffe://") } }
}

func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0xf)])
    }
    return String(decoding: out, as: UTF8.self)
}

enum X509 {
    /// The certificate in a PEM file's contents (the first one if there are several).
    static func parseCertificate(_ contents: PEMFiles.Contents, path: String) throws(TLSError) -> OpaquePointer {
        let cert = contents.bytes.withUnsafeBytes { cloom_tls_cert_parse_pem($0.baseAddress, $0.count) }
        guard let cert else {
            throw TLSError(
                "\(path) is not a PEM certificate (OpenSSL: \(OpenSSLError.takeReason())): expected -----BEGIN CERTIFICATE-----"
            )
        }
        return cert
    }

    /// The private key in a PEM file's contents (unencrypted: there is no one to ask for a
    /// passphrase).
    static func parseKey(_ contents: PEMFiles.Contents, path: String) throws(TLSError) -> OpaquePointer {
        let key = contents.bytes.withUnsafeBytes { cloom_tls_key_parse_pem($0.baseAddress, $0.count) }
        guard let key else {
            throw TLSError(
                "\(path) is not an unencrypted PEM private key (OpenSSL: \(OpenSSLError.takeReason())): expected -----BEGIN PRIVATE KEY-----"
            )
        }
        return key
    }

    /// A certificate and its private key as read from two PEM files.
    struct LoadedPair {
        let cert: OpaquePointer
        let key: OpaquePointer
        let facts: CertificateFacts
        let keyMode: mode_t
    }

    /// Reads a certificate and its key, checking that both files are readable, that the key
    /// is readable by its owner only, that both parse, and that the key is the
    /// certificate's; then `accept` decides the rest. What `accept` returns owns the
    /// certificate and the key; if it throws, both are freed. `role` names the key in
    /// errors ("a CA"), `hint` says what to do about a missing file.
    static func load<T>(
        certificatePath: String,
        keyPath: String,
        role: String,
        hint: String,
        accept: (LoadedPair) throws(TLSError) -> T
    ) throws(TLSError) -> T {
        let certificateFile = try PEMFiles.read(certificatePath, hint: hint)
        var keyContents = try PEMFiles.read(keyPath, hint: hint)
        defer { keyContents.wipe() }
        try PEMFiles.checkOwnerOnly(keyPath, mode: keyContents.mode, role: role)
        let cert = try parseCertificate(certificateFile, path: certificatePath)
        let key: OpaquePointer
        do {
            key = try parseKey(keyContents, path: keyPath)
        } catch {
            cloom_tls_cert_free(cert)
            throw error
        }
        do throws(TLSError) {
            try checkKeyMatches(cert: cert, key: key, certificatePath: certificatePath, keyPath: keyPath)
            let pair = LoadedPair(cert: cert, key: key, facts: CertificateFacts(cert), keyMode: keyContents.mode)
            return try accept(pair)
        } catch {
            cloom_tls_cert_free(cert)
            cloom_tls_key_free(key)
            throw error
        }
    }

    /// Fails unless `key` is the private key of `cert`.
    static func checkKeyMatches(
        cert: OpaquePointer,
        key: OpaquePointer,
        certificatePath: String,
        keyPath: String
    ) throws(TLSError) {
        if cloom_tls_cert_key_matches(cert, key) != 1 {
            throw TLSError(
                "\(keyPath) does not match \(certificatePath) (OpenSSL: \(OpenSSLError.takeReason())): use the key that was created with this certificate"
            )
        }
    }

    static func generateKey() throws(TLSError) -> OpaquePointer {
        guard let key = cloom_tls_key_generate_p256() else { throw TLSError.openssl("cannot generate a P-256 key") }
        return key
    }

    /// A certificate for `subjectKey`, signed by `issuer` (nil: self-signed with
    /// `subjectKey`).
    static func build(
        subjectKey: OpaquePointer,
        notBefore: Int64,
        notAfter: Int64,
        subject: [(field: String, value: String)],
        extensions: [(name: String, value: String)],
        issuer: (cert: OpaquePointer, key: OpaquePointer)?
    ) throws(TLSError) -> OpaquePointer {
        guard let cert = cloom_tls_cert_new(subjectKey, notBefore, notAfter) else {
            throw TLSError.openssl("cannot create a certificate")
        }
        for entry in subject where cloom_tls_cert_add_subject(cert, entry.field, entry.value) != 1 {
            cloom_tls_cert_free(cert)
            throw TLSError.openssl("cannot set subject \(entry.field)=\(entry.value)")
        }
        for ext in extensions where cloom_tls_cert_add_extension(cert, issuer?.cert, ext.name, ext.value) != 1 {
            cloom_tls_cert_free(cert)
            throw TLSError.openssl("cannot add extension \(ext.name)=\(ext.value)")
        }
        if cloom_tls_cert_sign(cert, issuer?.cert, issuer?.key ?? subjectKey) != 1 {
            cloom_tls_cert_free(cert)
            throw TLSError.openssl("cannot sign the certificate")
        }
        return cert
    }

    static func pem(certificate: OpaquePointer) -> String {
        guard let text = takeString(cloom_tls_cert_pem(certificate)) else {
            preconditionFailure("PEM encoding of a certificate failed: \(OpenSSLError.takeReason())")
        }
        return text
    }

    static func pem(key: OpaquePointer) -> String {
        guard let text = takeString(cloom_tls_key_pem(key)) else {
            preconditionFailure("PEM encoding of a key failed: \(OpenSSLError.takeReason())")
        }
        return text
    }
}
