// The header one Loom sends to another first thing inside the mTLS tunnel (port 15008):
// who the client is and where the connection goes (endpoint pod IP + target port). The
// receiving Loom parses it, connects to the destination and relays the rest of the stream.
//
// Format: a strict subset of HAProxy's PROXY protocol version 2 (proxy-protocol.txt,
// section 2.2), rather than a format of our own or an HTTP CONNECT (ztunnel's HBONE):
// - binary and fixed-layout: the whole length is known after 16 bytes, the addresses sit
//   at fixed offsets, so parsing is a few loads with no allocation and no text;
// - its 12-byte signature cannot begin any other protocol (it starts with CRLF CRLF NUL),
//   so a peer speaking something else is rejected at its first byte;
// - the address block is exactly the tuple the tunnel needs, and tools know the format
//   (haproxy `accept-proxy`, Envoy's proxy_protocol listener filter, Wireshark), which helps
//   when debugging a tunnel by hand.
//
// The header is 16 bytes then `len` bytes:
//   0..<12  signature  0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A
//   12      0x21       version 2 (high nibble), command PROXY (low nibble)
//   13      0x11 | 0x21  TCP over IPv4 | TCP over IPv6
//   14..<16 len        big-endian count of the bytes that follow
//   16...   source address, destination address, source port, destination port, all
//           big-endian (12 bytes for IPv4, 36 for IPv6), then TLVs (type u8, length u16
//           big-endian, value) that exactly fill the rest of `len`.
// Accepted is only what a Loom sends: PROXY (a tunnel without a destination is useless,
// so LOCAL is refused), TCP over IPv4 or IPv6, a destination port other than 0, and at
// most `maxLength` bytes in all. TLVs are checked for shape and skipped, whatever their
// type (a CRC32C TLV is not verified: the spec lets receivers that do not support it skip
// it, and TLS already protects the stream). Loom itself sends no TLVs.
//
// `parse` takes whatever bytes have arrived. Every check runs, in byte order, as soon as
// the bytes it reads are present, so garbage is refused at its first wrong byte; a prefix
// of an acceptable header gives `needMore`. The verdict on a prefix never changes with more
// bytes except from `needMore`. No input can trap: each read is within the bytes present
// (checked before reading), and lengths are at most 2^16 + 16, far from any overflow.
//
// This file imports nothing, so the fuzzer (Tests/Fuzz) can compile it on its own.

/// An IPv4 or IPv6 address with a port, as `SocketAddress` has it.
public enum TunnelAddress: Equatable, Sendable {
    /// IPv4: address in host byte order.
    case v4(address: UInt32, port: UInt16)
    /// IPv6: the 16 address bytes in network order as big-endian halves.
    case v6(hi: UInt64, lo: UInt64, port: UInt16)

    /// The TCP port.
    public var port: UInt16 {
        switch self {
        case .v4(_, let p), .v6(_, _, let p): return p
        }
    }

    /// The address as IPv6: itself, or an IPv4 address mapped as `::ffff:a.b.c.d`.
    var asV6: (hi: UInt64, lo: UInt64, port: UInt16) {
        switch self {
        case .v4(let a, let p): return (0, 0xffff_0000_0000 | UInt64(a), p)
        case .v6(let hi, let lo, let p): return (hi, lo, p)
        }
    }
}

/// The tunnel header: the original client and where the tunnel's stream goes.
public struct TunnelHeader: Equatable, Sendable {
    /// The client that opened the connection.
    public var source: TunnelAddress
    /// The endpoint to connect to: pod IP and target port.
    public var destination: TunnelAddress

    /// Source and destination may be of different families: `encode` then sends both as
    /// IPv6, the IPv4 one mapped (`::ffff:a.b.c.d`), and `parse` gives them back as such.
    public init(source: TunnelAddress, destination: TunnelAddress) {
        self.source = source
        self.destination = destination
    }

    /// Headers longer than this are invalid: Loom sends no TLVs, and no peer needs many.
    public static let maxLength = 512
    /// The fixed part: signature, version and command, family, length.
    public static let minimumLength = 16

    static let signatureLength = 12
    /// The signature's first 8 bytes and last 4, big-endian.
    static let signatureHigh: UInt64 = 0x0D0A_0D0A_000D_0A51
    static let signatureLow: UInt32 = 0x5549_540A
    static let versionCommand: UInt8 = 0x21  // version 2, PROXY
    static let tcp4: UInt8 = 0x11
    static let tcp6: UInt8 = 0x21
    static let v4Block = 12
    static let v6Block = 36

    static func signatureByte(_ index: Int) -> UInt8 {
        if index < 8 { return UInt8(truncatingIfNeeded: signatureHigh >> (56 - 8 * index)) }
        return UInt8(truncatingIfNeeded: signatureLow >> (24 - 8 * (index - 8)))
    }

    /// Parses a header at the start of `bytes`; bytes after it are not looked at.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> TunnelHeaderParse {
        let count = bytes.count
        // The signature, byte by byte.
        var index = 0
        while index < signatureLength && index < count {
            if bytes[index] != signatureByte(index) { return .invalid("not a PROXY v2 header (bad signature)") }
            index &+= 1
        }
        guard count > 12 else { return .needMore }
        let versionCommand = bytes[12]
        if versionCommand >> 4 != 2 { return .invalid("unsupported PROXY version \(versionCommand >> 4)") }
        switch versionCommand & 0x0f {
        case 1: break
        case 0: return .invalid("unsupported command LOCAL")
        default: return .invalid("unknown command \(versionCommand & 0x0f)")
        }
        guard count > 13 else { return .needMore }
        let block: Int
        switch bytes[13] {
        case tcp4: block = v4Block
        case tcp6: block = v6Block
        case let other: return .invalid(unsupported(family: other))
        }
        // The length: its high byte alone can already say the header is too long.
        guard count > 14 else { return .needMore }
        if minimumLength &+ Int(bytes[14]) << 8 > maxLength { return tooLong }
        guard count > 15 else { return .needMore }
        let declared = Int(bytes[14]) << 8 | Int(bytes[15])
        if declared < block { return .invalid("length \(declared) too short for the addresses (\(block))") }
        let total = minimumLength &+ declared
        if total > maxLength { return tooLong }

        // The address block; the destination port is its last two bytes.
        let tlvs = minimumLength &+ block
        guard count >= tlvs else { return .needMore }
        if bytes[tlvs &- 2] == 0 && bytes[tlvs &- 1] == 0 { return .invalid("destination port 0") }

        // TLVs: shape only, as far as they have arrived.
        var offset = tlvs
        while offset < total {
            if total &- offset < 3 { return .invalid("truncated TLV at byte \(offset)") }
            guard count > offset &+ 1 else { return .needMore }
            let type = bytes[offset]
            // The length's high byte alone can already overrun the header.
            let high = Int(bytes[offset &+ 1]) << 8
            if offset &+ 3 &+ high > total { return .invalid(overrun(type: type)) }
            guard count > offset &+ 2 else { return .needMore }
            let end = offset &+ 3 &+ (high | Int(bytes[offset &+ 2]))
            if end > total { return .invalid(overrun(type: type)) }
            offset = end
        }
        guard count >= total else { return .needMore }

        let header: TunnelHeader
        if block == v4Block {
            header = TunnelHeader(
                source: .v4(address: load(bytes, 16), port: load(bytes, 24)),
                destination: .v4(address: load(bytes, 20), port: load(bytes, 26))
            )
        } else {
            header = TunnelHeader(
                source: .v6(hi: load(bytes, 16), lo: load(bytes, 24), port: load(bytes, 48)),
                destination: .v6(hi: load(bytes, 32), lo: load(bytes, 40), port: load(bytes, 50))
            )
        }
        return .header(header, length: total)
    }

    /// A big-endian integer at `offset`; the caller has checked that it is in `bytes`.
    static func load<T: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> T {
        T(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    static var tooLong: TunnelHeaderParse { .invalid("header longer than \(maxLength) bytes") }

    static func unsupported(family: UInt8) -> String {
        switch (family >> 4, family & 0x0f) {
        case (0, 0...2): return "unsupported family UNSPEC"
        case (3, 0...2): return "unsupported family UNIX"
        case (1...2, 2): return "unsupported protocol UDP"
        case (1...2, 0): return "unsupported protocol UNSPEC"
        default: return "unknown family/protocol \(hex(family))"
        }
    }

    static func overrun(type: UInt8) -> String { "TLV \(hex(type)) overruns the header" }

    static func hex(_ byte: UInt8) -> String { (byte < 16 ? "0x0" : "0x") + String(byte, radix: 16) }

    /// 28 bytes for two IPv4 addresses, 52 otherwise.
    public var encodedLength: Int {
        if case .v4 = source, case .v4 = destination { return TunnelHeader.minimumLength + TunnelHeader.v4Block }
        return TunnelHeader.minimumLength + TunnelHeader.v6Block
    }

    /// Writes the header, without TLVs, at `buffer`, which must hold `encodedLength`
    /// bytes; returns that length. Writes what it is given: a destination port 0 is
    /// written, and refused by `parse`.
    @discardableResult
    public func encode(into buffer: UnsafeMutableRawPointer) -> Int {
        buffer.storeBytes(of: TunnelHeader.signatureHigh.bigEndian, toByteOffset: 0, as: UInt64.self)
        buffer.storeBytes(of: TunnelHeader.signatureLow.bigEndian, toByteOffset: 8, as: UInt32.self)
        buffer.storeBytes(of: TunnelHeader.versionCommand, toByteOffset: 12, as: UInt8.self)
        if case .v4(let sourceAddress, let sourcePort) = source,
            case .v4(let destinationAddress, let destinationPort) = destination
        {
            buffer.storeBytes(of: TunnelHeader.tcp4, toByteOffset: 13, as: UInt8.self)
            buffer.storeBytes(of: UInt16(TunnelHeader.v4Block).bigEndian, toByteOffset: 14, as: UInt16.self)
            buffer.storeBytes(of: sourceAddress.bigEndian, toByteOffset: 16, as: UInt32.self)
            buffer.storeBytes(of: destinationAddress.bigEndian, toByteOffset: 20, as: UInt32.self)
            buffer.storeBytes(of: sourcePort.bigEndian, toByteOffset: 24, as: UInt16.self)
            buffer.storeBytes(of: destinationPort.bigEndian, toByteOffset: 26, as: UInt16.self)
            return TunnelHeader.minimumLength + TunnelHeader.v4Block
        }
        let s = source.asV6
        let d = destination.asV6
        buffer.storeBytes(of: TunnelHeader.tcp6, toByteOffset: 13, as: UInt8.self)
        buffer.storeBytes(of: UInt16(TunnelHeader.v6Block).bigEndian, toByteOffset: 14, as: UInt16.self)
        buffer.storeBytes(of: s.hi.bigEndian, toByteOffset: 16, as: UInt64.self)
        buffer.storeBytes(of: s.lo.bigEndian, toByteOffset: 24, as: UInt64.self)
        buffer.storeBytes(of: d.hi.bigEndian, toByteOffset: 32, as: UInt64.self)
        buffer.storeBytes(of: d.lo.bigEndian, toByteOffset: 40, as: UInt64.self)
        buffer.storeBytes(of: s.port.bigEndian, toByteOffset: 48, as: UInt16.self)
        buffer.storeBytes(of: d.port.bigEndian, toByteOffset: 50, as: UInt16.self)
        return TunnelHeader.minimumLength + TunnelHeader.v6Block
    }

    /// The encoded header as an array (tests, tools).
    public func encoded() -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: encodedLength) { buffer, initialized in
            initialized = encode(into: UnsafeMutableRawPointer(buffer.baseAddress!))
        }
    }
}

/// What `TunnelHeader.parse` makes of the bytes so far.
public enum TunnelHeaderParse: Equatable, Sendable {
    /// A prefix of an acceptable header: wait for more bytes.
    case needMore
    /// A header of `length` bytes; what follows is the tunnelled stream.
    case header(TunnelHeader, length: Int)
    /// Not an acceptable header, whatever follows: why, in a few words.
    case invalid(String)
}
