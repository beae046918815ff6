// Address prefixes for exclusions, parsed and validated with errors that name the value.
import LoomSystem

/// An IPv4 or IPv6 prefix such as `10.0.0.0/8` or `fd00::/8`.
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    /// The network address (host bits zero), port 0.
    public let network: SocketAddress
    /// Prefix length in bits.
    public let length: Int

    /// Parses `ADDRESS/LENGTH`; a bare address is a host prefix (/32 or /128).
    public init(parsing text: String) throws(InterceptError) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = SocketAddress(parsing: String(parts[0]), defaultPort: 0) else {
            throw .invalidCIDR(text, reason: "'\(parts[0])' is not an IPv4 or IPv6 address")
        }
        let maximum = address.bitCount
        var length = maximum
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...maximum).contains(n) else {
                throw .invalidCIDR(text, reason: "prefix length must be 0 to \(maximum)")
            }
            length = n
        }
        let network = address.masked(to: length)
        guard network == address else {
            throw .invalidCIDR(text, reason: "host bits are set; did you mean \(network.host)/\(length)?")
        }
        self.network = network
        self.length = length
    }

    /// True for IPv4 prefixes.
    public var isIPv4: Bool {
        if case .v4 = network { return true }
        return false
    }

    /// `10.0.0.0/8`, `fd00::/8`.
    public var description: String { "\(network.host)/\(length)" }
}

extension CIDR {
    /// The mask in network byte order: `length` one bits, then zeros (4 or 16 bytes).
    var maskBytes: [UInt8] {
        (0..<network.bitCount / 8).map { index in
            let bits = min(8, max(0, length - 8 * index))
            return UInt8(truncatingIfNeeded: 0xff << (8 - bits))
        }
    }
}

extension SocketAddress {
    /// Address length in bits: 32 or 128.
    var bitCount: Int {
        if case .v4 = self { return 32 }
        return 128
    }

    /// The address in network byte order (4 or 16 bytes), as packets carry it.
    var addressBytes: [UInt8] {
        switch self {
        case .v4(let a, _): return withUnsafeBytes(of: a.bigEndian, Array.init)
        case .v6(let hi, let lo, _):
            return withUnsafeBytes(of: hi.bigEndian, Array.init) + withUnsafeBytes(of: lo.bigEndian, Array.init)
        }
    }

    /// The address with every bit past `length` cleared.
    func masked(to length: Int) -> SocketAddress {
        switch self {
        case .v4(let a, let p):
            let mask: UInt32 = length == 0 ? 0 : ~UInt32(0) << (32 - length)
            return .v4(address: a & mask, port: p)
        case .v6(let hi, let lo, let p):
            let hiMask: UInt64 = length >= 64 ? ~0 : (length == 0 ? 0 : ~UInt64(0) << (64 - length))
            let loMask: UInt64 = length <= 64 ? 0 : (length == 128 ? ~0 : ~UInt64(0) << (128 - length))
            return .v6(hi: hi & hiMask, lo: lo & loMask, port: p)
        }
    }
}
