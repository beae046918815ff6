// Whether this kernel offers kernel TLS (kTLS: setsockopt TCP_ULP "tls"), which would let
// encrypted connections be spliced after the handshake. Probed once at start on a
// loopback connection of the node's namespace; without it, encrypted bytes are copied
// through one user-space buffer per direction (issue 5).
import CLoomLinux

#if canImport(Glibc)
    import Glibc
#endif

public enum KernelTLS {
    public enum Availability: Equatable, Sendable, CustomStringConvertible {
        case available
        case unavailable(errno: CInt)

        public var description: String {
            switch self {
            case .available: return "available (TCP_ULP tls)"
            case .unavailable(let e) where e == ENOENT:
                return "unavailable: the kernel has no tls module (CONFIG_TLS off, or tls.ko missing)"
            case .unavailable(let e): return "unavailable: TCP_ULP tls failed (errno \(e))"
            }
        }

        public var isAvailable: Bool { self == .available }
    }

    /// Connects two sockets over 127.0.0.1 and asks for the TLS upper-layer protocol on
    /// one; everything it opens is closed again.
    public static func probe() -> Availability {
        do {
            let listener = try FileDescriptor.tcpSocket(family: AF_INET)
            defer { listener.close() }
            try listener.listen(on: .v4(address: 0x7f00_0001, port: 0), reusePort: false, backlog: 1)
            guard let address = listener.localAddress() else { return .unavailable(errno: EADDRNOTAVAIL) }
            let client = try FileDescriptor.tcpSocket(family: AF_INET)
            defer { client.close() }
            _ = try client.connect(to: address)
            // The non-blocking connect completes on loopback at once; wait for it.
            var p = pollfd(fd: client.rawValue, events: Int16(POLLOUT), revents: 0)
            _ = poll(&p, 1, 1000)
            let rc = cloom_tcp_ulp_tls(client.rawValue)
            if case .processed(let (server, _)) = try listener.accept() { server.close() }
            return rc == 0 ? .available : .unavailable(errno: -rc)
        } catch {
            return .unavailable(errno: error.errno)
        }
    }
}
