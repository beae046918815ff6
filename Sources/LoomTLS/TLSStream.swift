// One TLS connection over a non-blocking socket, driven by its event loop: handshake,
// read, write and shutdown each make one OpenSSL call and say what happened (bytes, wait
// for readable or writable, the peer's close_notify, or a failure with a reason fit for a
// trace). The calls allocate nothing in Swift; a failure's reason string is built only
// when there is a failure. After the handshake the stream tells the peer's SPIFFE ID and
// serial, the protocol, the cipher and whether kernel TLS took over.
//
// The socket BIO writes with write(2): the process must ignore SIGPIPE (loomd does), or a
// write to a peer that is gone kills it instead of failing with EPIPE.
import CLoomTLS

#if canImport(Glibc)
    import Glibc
#endif

/// What one TLS call did.
public enum TLSStatus: Equatable, Sendable {
    /// Bytes read or written; 0 for a finished handshake or a sent close_notify.
    case done(Int)
    /// Call again when the socket is readable.
    case wantRead
    /// Call again when the socket is writable (a write: with the same bytes and count).
    case wantWrite
    /// The peer sent close_notify: it writes no more (it may still read).
    case closed
    case failed(TLSFailure)
}

/// Why a TLS connection failed.
public struct TLSFailure: Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        /// ECONNRESET or EPIPE.
        case reset
        /// End of stream without close_notify.
        case truncated
        /// The peer's certificate did not verify.
        case verify
        /// OpenSSL refused what the peer sent (or the peer's alert).
        case protocolError
        case other
    }

    public let kind: Kind
    /// errno right after the failing call (0 if none).
    public let errno: Int32
    public let reason: String

    public init(kind: Kind, errno: Int32, reason: String) {
        self.kind = kind
        self.errno = errno
        self.reason = reason
    }

    public var description: String { reason }

    /// Decides what CLoomTLS's facts about a failed call mean.
    init(result: CInt, outcome: cloom_tls_outcome) {
        let error = outcome.sys_errno
        let eof = "peer closed the connection without close_notify (truncated)"
        switch Int(result) {
        case CLOOM_TLS_SYSCALL:
            if error == ECONNRESET || error == EPIPE {
                self.init(kind: .reset, errno: error, reason: String(cString: strerror(error)))
            } else if error == 0 && outcome.first_error == 0 {
                self.init(kind: .truncated, errno: 0, reason: eof)
            } else if error != 0 {
                self.init(kind: .other, errno: error, reason: String(cString: strerror(error)))
            } else {
                self.init(kind: .other, errno: 0, reason: OpenSSLError.reason(outcome.first_error))
            }
        case CLOOM_TLS_PROTOCOL:
            if outcome.verify_result != CLOOM_TLS_X509_V_OK {
                let text = String(cString: cloom_tls_verify_error_string(outcome.verify_result))
                self.init(kind: .verify, errno: error, reason: "certificate verify failed: \(text)")
            } else if cloom_tls_error_is_unexpected_eof(outcome.first_error) == 1 {
                self.init(kind: .truncated, errno: error, reason: eof)
            } else if error == ECONNRESET || error == EPIPE {
                self.init(kind: .reset, errno: error, reason: String(cString: strerror(error)))
            } else {
                self.init(kind: .protocolError, errno: error, reason: OpenSSLError.reason(outcome.first_error))
            }
        default:
            self.init(kind: .other, errno: error, reason: "OpenSSL SSL_get_error \(outcome.ssl_error)")
        }
    }
}

/// A TLS 1.3 session ticket (SSL_SESSION), owned; freed with the object.
public final class TLSSession {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { cloom_tls_session_free(pointer) }
}

/// One connection's TLS. Not Sendable: it belongs to the event-loop thread that drives it.
public final class TLSStream {
    public let context: TLSContext
    /// SSL, owned.
    private let ssl: OpaquePointer
    /// close_notify went out: `shutdown()` does not call OpenSSL again (a second
    /// SSL_shutdown would read and discard what the peer still sends).
    private var closeNotifySent = false

    private init(context: TLSContext, fd: Int32, server: Bool) throws(TLSError) {
        guard let ssl = cloom_tls_ssl_new(context.ctx, fd, server ? 1 : 0) else {
            throw TLSError.openssl("cannot create a TLS \(server ? "server" : "client") on fd \(fd)")
        }
        self.ssl = ssl
        self.context = context
    }

    deinit { cloom_tls_ssl_free(ssl) }

    /// The connecting end; `fd` must be non-blocking and stays the caller's to close.
    /// `session`, a ticket from an earlier connection to the same server with the same
    /// context, is offered for resumption (the server may refuse: then a full handshake).
    public static func client(context: TLSContext, fd: Int32, session: TLSSession? = nil) throws(TLSError)
        -> TLSStream
    {
        let stream = try TLSStream(context: context, fd: fd, server: false)
        if let session { _ = cloom_tls_ssl_set_session(stream.ssl, session.pointer) }
        return stream
    }

    /// The newest session ticket the server sent on this connection (once: taking it
    /// leaves none), for the next connection to the same server.
    public func takeSession() -> TLSSession? {
        cloom_tls_ssl_take_session(ssl).map(TLSSession.init)
    }

    /// The accepting end; `fd` must be non-blocking and stays the caller's to close.
    public static func server(context: TLSContext, fd: Int32) throws(TLSError) -> TLSStream {
        try TLSStream(context: context, fd: fd, server: true)
    }

    /// Advances the handshake: `.done(0)` when finished (the peer's certificate verified).
    public func handshake() -> TLSStatus {
        var outcome = cloom_tls_outcome()
        return status(cloom_tls_handshake(ssl, &outcome), bytes: 0, outcome)
    }

    /// Reads decrypted bytes: `.done(n)` with n > 0, `.closed` after the peer's
    /// close_notify.
    @inline(__always)
    public func read(into buffer: UnsafeMutableRawPointer, count: Int) -> TLSStatus {
        var outcome = cloom_tls_outcome()
        var n = 0
        return status(cloom_tls_read(ssl, buffer, count, &n, &outcome), bytes: n, outcome)
    }

    /// Encrypts and sends: `.done(count)` when all of it went out. After `.wantWrite`, call
    /// again with the same bytes and count (the buffer may have moved).
    @inline(__always)
    public func write(from buffer: UnsafeRawPointer, count: Int) -> TLSStatus {
        var outcome = cloom_tls_outcome()
        var n = 0
        return status(cloom_tls_write(ssl, buffer, count, &n, &outcome), bytes: n, outcome)
    }

    /// Sends close_notify once (`.done(0)`); later calls do nothing. Reading goes on
    /// afterwards: OpenSSL lets SSL_read continue after the first SSL_shutdown, so the
    /// peer can finish sending, like a TCP half close.
    public func shutdown() -> TLSStatus {
        if closeNotifySent { return .done(0) }
        var outcome = cloom_tls_outcome()
        let result = status(cloom_tls_shutdown(ssl, &outcome), bytes: 0, outcome)
        if result == .done(0) { closeNotifySent = true }
        return result
    }

    @inline(__always)
    private func status(_ result: CInt, bytes: Int, _ outcome: cloom_tls_outcome) -> TLSStatus {
        switch Int(result) {
        case CLOOM_TLS_OK: return .done(bytes)
        case CLOOM_TLS_WANT_READ: return .wantRead
        case CLOOM_TLS_WANT_WRITE: return .wantWrite
        case CLOOM_TLS_CLOSED: return .closed
        default: return .failed(TLSFailure(result: result, outcome: outcome))
        }
    }

    // MARK: - after the handshake

    /// The first spiffe:// URI SAN of the peer's certificate.
    public var peerURI: String? {
        guard let cert = cloom_tls_ssl_peer_certificate(ssl) else { return nil }
        var index: CInt = 0
        while let uri = takeString(cloom_tls_cert_uri(cert, index)) {
            if uri.hasPrefix("spiffe://") { return uri }
            index += 1
        }
        return nil
    }

    /// The peer's identity, if its URI SAN is a Loom SPIFFE ID.
    public var peerIdentity: SpiffeID? { peerURI.flatMap { SpiffeID(uri: $0) } }

    /// The peer certificate's serial number, lowercase hex.
    public var peerSerial: String? {
        guard let cert = cloom_tls_ssl_peer_certificate(ssl) else { return nil }
        return takeString(cloom_tls_cert_serial_hex(cert))
    }

    /// "TLSv1.3".
    public var version: String { String(cString: cloom_tls_ssl_version(ssl)) }

    /// The cipher suite's name, e.g. "TLS_AES_128_GCM_SHA256"; nil before the handshake.
    public var cipher: String? { cloom_tls_ssl_cipher(ssl).map { String(cString: $0) } }

    /// Whether the kernel encrypts (send) and decrypts (receive) this connection.
    public var kernelTLS: (send: Bool, receive: Bool) {
        (cloom_tls_ssl_ktls_send(ssl) == 1, cloom_tls_ssl_ktls_receive(ssl) == 1)
    }

    public var sessionReused: Bool { cloom_tls_ssl_session_reused(ssl) == 1 }
}
