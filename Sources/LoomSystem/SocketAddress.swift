// IP socket addresses as values, and the distinct roles they play in a relayed connection.
// This file converts to and from sockaddr storage; those sites use unsafe pointers
// only to reinterpret a sockaddr_storage as the family-specific struct the kernel filled.
import CLoomLinux

#if canImport(Glibc)
    import Glibc
#endif

/// An IPv4 or IPv6 address with a port.
public enum SocketAddress: Hashable, Sendable, CustomStringConvertible {
    /// IPv4: address in host byte order.
    case v4(address: UInt32, port: UInt16)
    /// IPv6: 16 address bytes in network order (hi, lo as big-endian halves).
    case v6(hi: UInt64, lo: UInt64, port: UInt16)

    /// The TCP/UDP port.
    public var port: UInt16 {
        switch self {
        case .v4(_, let p), .v6(_, _, let p): return p
        }
    }

    /// AF_INET or AF_INET6.
    public var family: CInt {
        switch self {
        case .v4: return CLOOM_AF_INET
        case .v6: return CLOOM_AF_INET6
        }
    }

    /// True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104.
    public var isLoopback: Bool {
        switch self {
        case .v4(let a, _): return a >> 24 == 127
        case .v6(let hi, let lo, _):
            if hi == 0 && lo == 1 { return true }
            return hi == 0 && lo >> 32 == 0xffff && (lo >> 24) & 0xff == 127
        }
    }

    /// True for 0.0.0.0 and ::.
    public var isUnspecified: Bool {
        switch self {
        case .v4(let a, _): return a == 0
        case .v6(let hi, let lo, _): return hi == 0 && lo == 0
        }
    }

    /// The same address with another port.
    public func with(port: UInt16) -> SocketAddress {
        switch self {
        case .v4(let a, _): return .v4(address: a, port: port)
        case .v6(let hi, let lo, _): return .v6(hi: hi, lo: lo, port: port)
        }
    }

    /// `10.0.0.1:80` or `[fd00::1]:80`.
    public var description: String {
        switch self {
        case .v4(_, let p): return "\(host):\(p)"
        case .v6(_, _, let p): return "[\(host)]:\(p)"
        }
    }

    /// The address without the port, in the usual text form.
    public var host: String {
        var storage = sockaddr_storage()
        _ = write(to: &storage)
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        withUnsafePointer(to: &storage) { ptr in
            switch self {
            case .v4:
                // Safe: write(to:) filled a sockaddr_in at the start of the storage.
                ptr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var a = sin.pointee.sin_addr
                    _ = inet_ntop(AF_INET, &a, &buffer, socklen_t(buffer.count))
                }
            case .v6:
                ptr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var a = sin6.pointee.sin6_addr
                    _ = inet_ntop(AF_INET6, &a, &buffer, socklen_t(buffer.count))
                }
            }
        }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Parses `1.2.3.4:80`, `[::1]:80`, or with `defaultPort` a bare address.
    public init?(parsing text: String, defaultPort: UInt16? = nil) {
        var hostPart = Substring(text)
        var port = defaultPort
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            hostPart = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if rest.hasPrefix(":") { port = UInt16(rest.dropFirst()) } else if !rest.isEmpty { return nil }
        } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            hostPart = text[..<colon]
            port = UInt16(text[text.index(after: colon)...])
        }
        guard let port else { return nil }
        let host = String(hostPart)
        var a4 = in_addr()
        if inet_pton(AF_INET, host, &a4) == 1 {
            self = .v4(address: UInt32(bigEndian: a4.s_addr), port: port)
            return
        }
        var a6 = in6_addr()
        if inet_pton(AF_INET6, host, &a6) == 1 {
            let (hi, lo) = withUnsafeBytes(of: &a6) { raw in
                (
                    UInt64(bigEndian: raw.load(fromByteOffset: 0, as: UInt64.self)),
                    UInt64(bigEndian: raw.load(fromByteOffset: 8, as: UInt64.self))
                )
            }
            self = .v6(hi: hi, lo: lo, port: port)
            return
        }
        return nil
    }

    /// Reads an address the kernel wrote into `storage`; nil for other families.
    public init?(storage: sockaddr_storage) {
        var storage = storage
        let family = CInt(storage.ss_family)
        let parsed: SocketAddress? = withUnsafePointer(to: &storage) { ptr in
            if family == AF_INET {
                // Safe: ss_family says the kernel wrote a sockaddr_in.
                return ptr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    .v4(
                        address: UInt32(bigEndian: sin.pointee.sin_addr.s_addr),
                        port: UInt16(bigEndian: sin.pointee.sin_port)
                    )
                }
            } else if family == AF_INET6 {
                return ptr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var a = sin6.pointee.sin6_addr
                    let (hi, lo) = withUnsafeBytes(of: &a) { raw in
                        (
                            UInt64(bigEndian: raw.load(fromByteOffset: 0, as: UInt64.self)),
                            UInt64(bigEndian: raw.load(fromByteOffset: 8, as: UInt64.self))
                        )
                    }
                    return .v6(hi: hi, lo: lo, port: UInt16(bigEndian: sin6.pointee.sin6_port))
                }
            }
            return nil
        }
        guard let parsed else { return nil }
        self = parsed
    }

    /// Writes the address into `storage`; returns the length to pass to the kernel.
    public func write(to storage: inout sockaddr_storage) -> socklen_t {
        storage = sockaddr_storage()
        return withUnsafeMutablePointer(to: &storage) { ptr in
            switch self {
            case .v4(let a, let p):
                // Safe: sockaddr_storage is large and aligned enough for any sockaddr.
                return ptr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    sin.pointee.sin_family = sa_family_t(AF_INET)
                    sin.pointee.sin_port = p.bigEndian
                    sin.pointee.sin_addr.s_addr = a.bigEndian
                    return socklen_t(MemoryLayout<sockaddr_in>.size)
                }
            case .v6(let hi, let lo, let p):
                return ptr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                    sin6.pointee.sin6_port = p.bigEndian
                    withUnsafeMutableBytes(of: &sin6.pointee.sin6_addr) { raw in
                        raw.storeBytes(of: hi.bigEndian, toByteOffset: 0, as: UInt64.self)
                        raw.storeBytes(of: lo.bigEndian, toByteOffset: 8, as: UInt64.self)
                    }
                    return socklen_t(MemoryLayout<sockaddr_in6>.size)
                }
            }
        }
    }
}

/// The peer that connected to Loom (the application in the pod).
public struct ClientAddress: Hashable, Sendable, CustomStringConvertible {
    public let address: SocketAddress
    public init(_ address: SocketAddress) { self.address = address }
    public var description: String { address.description }
}

/// Where the application meant to connect, before the kernel redirected it to Loom.
public struct OriginalDestination: Hashable, Sendable, CustomStringConvertible {
    public let address: SocketAddress
    public init(_ address: SocketAddress) { self.address = address }
    public var description: String { address.description }
}

/// Where Loom connects on the application's behalf.
public struct UpstreamAddress: Hashable, Sendable, CustomStringConvertible {
    public let address: SocketAddress
    public init(_ address: SocketAddress) { self.address = address }
    public var description: String { address.description }
}
