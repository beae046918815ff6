// A packet the trace table queued, as loomd sees it: which hook, the addresses and ports
// from its headers, the interfaces and the mark. Reading the headers is pure, so unit tests
// feed it hand-made packets; TraceQueue fills in the rest from the kernel's message.
import LoomSystem

/// The first SYN of a TCP connection, as the kernel queued it (TraceQueue).
public struct KernelPacket: Sendable, Equatable {
    /// Where the trace table saw it: leaving the pod (output) or arriving (prerouting).
    public enum Hook: String, Sendable, Equatable {
        case output, prerouting
    }

    public var hook: Hook
    /// Addresses and ports from the packet: before Loom's nat chains, so the destination is
    /// the one the application (or the remote client) chose.
    public var source: SocketAddress
    public var destination: SocketAddress
    /// Interface indexes, 0 when there is none (no input interface on output). The loopback
    /// interface is always 1.
    public var inInterface: UInt32
    public var outInterface: UInt32
    /// The packet's mark (0: none).
    public var mark: UInt32
    /// When loomd read it: milliseconds on the monotonic clock of `SystemProcess.nowMilliseconds()`.
    public var receivedAtMs: Int64

    /// The loopback interface's index in every network namespace (LOOPBACK_IFINDEX).
    public static let loopbackInterface: UInt32 = 1

    public init(
        hook: Hook,
        source: SocketAddress,
        destination: SocketAddress,
        inInterface: UInt32 = 0,
        outInterface: UInt32 = 0,
        mark: UInt32 = 0,
        receivedAtMs: Int64 = 0
    ) {
        self.hook = hook
        self.source = source
        self.destination = destination
        self.inInterface = inInterface
        self.outInterface = outInterface
        self.mark = mark
        self.receivedAtMs = receivedAtMs
    }

    /// Source and destination (with ports) of a TCP packet, from its first bytes (network
    /// header on): IPv4, or IPv6 with any hop-by-hop, routing, destination options or
    /// (first) fragment headers. Nil for anything else, a later fragment, or too few bytes.
    public static func addresses(ofPacket bytes: [UInt8]) -> (source: SocketAddress, destination: SocketAddress)? {
        guard let first = bytes.first else { return nil }
        func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
        func u32(_ at: Int) -> UInt32 { UInt32(u16(at)) << 16 | UInt32(u16(at + 2)) }
        func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) << 32 | UInt64(u32(at + 4)) }
        switch first >> 4 {
        case 4:
            guard bytes.count >= 20 else { return nil }
            let headerLength = Int(first & 0x0f) * 4
            // TCP, and the first fragment (offset 0) if it is one.
            guard headerLength >= 20, bytes[9] == ipProtoTCP, u16(6) & 0x1fff == 0, bytes.count >= headerLength + 4
            else { return nil }
            return (
                .v4(address: u32(12), port: u16(headerLength)),
                .v4(address: u32(16), port: u16(headerLength + 2))
            )
        case 6:
            guard bytes.count >= 40 else { return nil }
            var next = bytes[6]
            var offset = 40
            while next != ipProtoTCP {
                guard bytes.count >= offset + 8 else { return nil }
                switch next {
                case 0, 43, 60:  // hop-by-hop, routing, destination options: (length + 1) × 8 bytes
                    let length = (Int(bytes[offset + 1]) + 1) * 8
                    next = bytes[offset]
                    offset += length
                case 44:  // fragment: 8 bytes; only the first fragment has the TCP header
                    guard u16(offset + 2) & 0xfff8 == 0 else { return nil }
                    next = bytes[offset]
                    offset += 8
                default: return nil
                }
            }
            guard bytes.count >= offset + 4 else { return nil }
            return (
                .v6(hi: u64(8), lo: u64(16), port: u16(offset)),
                .v6(hi: u64(24), lo: u64(32), port: u16(offset + 2))
            )
        default: return nil
        }
    }

    private static let ipProtoTCP: UInt8 = 6
}
