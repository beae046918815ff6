import LoomSystem
import Testing

@testable import LoomMesh

#if canImport(Glibc)
    import Glibc
#endif

func parseTunnel(_ bytes: [UInt8]) -> TunnelHeaderParse {
    bytes.withUnsafeBytes { TunnelHeader.parse($0) }
}

/// PROXY v2 headers built byte by byte from HAProxy's proxy-protocol.txt (section 2.2),
/// independently of `TunnelHeader.encode`.
enum ProxyV2 {
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    static func u16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xff), UInt8(value & 0xff)] }

    static func tlv(_ type: UInt8, _ value: [UInt8]) -> [UInt8] { [type] + u16(value.count) + value }

    /// Signature, version/command, family, length, then `body` (addresses and TLVs).
    static func header(command: UInt8 = 0x21, family: UInt8, body: [UInt8], length: Int? = nil) -> [UInt8] {
        signature + [command, family] + u16(length ?? body.count) + body
    }

    /// TCP over IPv4; addresses as dotted quads.
    static func v4(
        _ source: [UInt8],
        _ sourcePort: Int,
        _ destination: [UInt8],
        _ destinationPort: Int,
        tlvs: [UInt8] = []
    ) -> [UInt8] {
        header(family: 0x11, body: source + destination + u16(sourcePort) + u16(destinationPort) + tlvs)
    }

    /// TCP over IPv6; 16-byte addresses.
    static func v6(
        _ source: [UInt8],
        _ sourcePort: Int,
        _ destination: [UInt8],
        _ destinationPort: Int,
        tlvs: [UInt8] = []
    ) -> [UInt8] {
        header(family: 0x21, body: source + destination + u16(sourcePort) + u16(destinationPort) + tlvs)
    }

    /// fd00::/8 address ending in `last`.
    static func ula(_ last: UInt8) -> [UInt8] { [0xfd] + [UInt8](repeating: 0, count: 14) + [last] }
}

@Suite struct TunnelHeaderTests {
    static let v4Header = TunnelHeader(
        source: .v4(address: 0x0A01_0203, port: 45678),
        destination: .v4(address: 0x0A04_0506, port: 8080)
    )
    static let v6Header = TunnelHeader(
        source: .v6(hi: 0xfd00_0000_0000_0000, lo: 1, port: 40000),
        destination: .v6(hi: 0x2001_0db8_0000_0000, lo: 0x0000_0000_0000_0042, port: 443)
    )
    /// The v4 header, byte by byte: 10.1.2.3:45678 -> 10.4.5.6:8080.
    static let v4Bytes: [UInt8] =
        ProxyV2.signature + [0x21, 0x11, 0x00, 0x0C]
        + [10, 1, 2, 3] + [10, 4, 5, 6] + [0xB2, 0x6E] + [0x1F, 0x90]
    /// The v6 header, byte by byte: [fd00::1]:40000 -> [2001:db8::42]:443.
    static let v6Bytes: [UInt8] =
        ProxyV2.signature + [0x21, 0x21, 0x00, 0x24]
        + [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        + [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42]
        + [0x9C, 0x40] + [0x01, 0xBB]

    /// TLVs as HAProxy's `send-proxy-v2-ssl-cn` with `proxy-v2-options` would send them
    /// (section 2.2.1-2.2.7): ALPN, authority, CRC32C, NOOP, unique id, and the SSL TLV
    /// with its sub-TLVs (version, CN, cipher).
    static let haproxyTLVs: [UInt8] = {
        let ssl =
            [0x07] + [0, 0, 0, 0]  // client: SSL, cert in connection, cert in session; verify: 0
            + ProxyV2.tlv(0x21, Array("TLSv1.3".utf8))  // PP2_SUBTYPE_SSL_VERSION
            + ProxyV2.tlv(0x22, Array("client.example".utf8))  // PP2_SUBTYPE_SSL_CN
            + ProxyV2.tlv(0x23, Array("TLS_AES_128_GCM_SHA256".utf8))  // PP2_SUBTYPE_SSL_CIPHER
        return ProxyV2.tlv(0x01, Array("h2".utf8))  // PP2_TYPE_ALPN
            + ProxyV2.tlv(0x02, Array("reviews.default.svc".utf8))  // PP2_TYPE_AUTHORITY
            + ProxyV2.tlv(0x03, [0xDE, 0xAD, 0xBE, 0xEF])  // PP2_TYPE_CRC32C (not checked)
            + ProxyV2.tlv(0x04, [])  // PP2_TYPE_NOOP
            + ProxyV2.tlv(0x05, [UInt8](repeating: 0x41, count: 16))  // PP2_TYPE_UNIQUE_ID
            + ProxyV2.tlv(0x20, ssl)  // PP2_TYPE_SSL
            + ProxyV2.tlv(0xE0, [1, 2, 3])  // a custom type (PP2_TYPE_MIN_CUSTOM)
    }()

    static func invalid(_ bytes: [UInt8]) -> String? {
        if case .invalid(let why) = parseTunnel(bytes) { return why }
        return nil
    }

    @Test func handBuiltHeadersParse() {
        #expect(Self.v4Bytes.count == 28 && Self.v6Bytes.count == 52)
        #expect(parseTunnel(Self.v4Bytes) == .header(Self.v4Header, length: 28))
        #expect(parseTunnel(Self.v6Bytes) == .header(Self.v6Header, length: 52))
        // The same bytes from the other builder.
        #expect(ProxyV2.v4([10, 1, 2, 3], 45678, [10, 4, 5, 6], 8080) == Self.v4Bytes)
    }

    @Test func encodeGivesTheHandBuiltBytesAndRoundTrips() {
        #expect(Self.v4Header.encoded() == Self.v4Bytes)
        #expect(Self.v6Header.encoded() == Self.v6Bytes)
        #expect(Self.v4Header.encodedLength == 28 && Self.v6Header.encodedLength == 52)
        let headers = [
            Self.v4Header,
            Self.v6Header,
            TunnelHeader(source: .v4(address: 0, port: 0), destination: .v4(address: 0xFFFF_FFFF, port: 65535)),
            TunnelHeader(
                source: .v6(hi: .max, lo: .max, port: 65535),
                destination: .v6(hi: 0, lo: 0, port: 1)
            ),
        ]
        for header in headers {
            #expect(parseTunnel(header.encoded()) == .header(header, length: header.encodedLength))
        }
    }

    @Test func encodeWritesExactlyItsLength() {
        for header in [Self.v4Header, Self.v6Header] {
            var buffer = [UInt8](repeating: 0xA5, count: 80)
            let n = buffer.withUnsafeMutableBytes { header.encode(into: $0.baseAddress!) }
            #expect(n == header.encodedLength)
            #expect(buffer[n...].allSatisfy { $0 == 0xA5 })
            #expect(Array(buffer[..<n]) == header.encoded())
        }
    }

    @Test func mixedFamiliesAreSentAsIPv6WithTheIPv4OneMapped() {
        let mixed = TunnelHeader(source: .v4(address: 0x0A00_0001, port: 5000), destination: Self.v6Header.destination)
        #expect(mixed.encodedLength == 52)
        let mapped = TunnelHeader(
            source: .v6(hi: 0, lo: 0x0000_FFFF_0A00_0001, port: 5000),
            destination: Self.v6Header.destination
        )
        #expect(parseTunnel(mixed.encoded()) == .header(mapped, length: 52))
        let other = TunnelHeader(source: Self.v6Header.source, destination: .v4(address: 0x0A00_0002, port: 80))
        let bytes = other.encoded()
        #expect(Array(bytes[32..<48]) == [UInt8](repeating: 0, count: 10) + [0xff, 0xff, 10, 0, 0, 2])
    }

    @Test func everyPartialHeaderNeedsMore() {
        let headers = [
            Self.v4Bytes,
            Self.v6Bytes,
            ProxyV2.v4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, tlvs: Self.haproxyTLVs),
            ProxyV2.v6(ProxyV2.ula(1), 1, ProxyV2.ula(2), 2, tlvs: Self.haproxyTLVs),
        ]
        for header in headers {
            guard case .header(_, let length) = parseTunnel(header) else {
                Issue.record("does not parse: \(header)")
                continue
            }
            #expect(length == header.count)
            for n in 0..<header.count {
                #expect(parseTunnel(Array(header.prefix(n))) == .needMore, "\(n) of \(header.count)")
            }
        }
    }

    @Test func garbageIsRefusedAtItsFirstWrongByte() {
        let badSignature = TunnelHeaderParse.invalid("not a PROXY v2 header (bad signature)")
        for position in 0..<12 {
            var bytes = Array(Self.v4Bytes.prefix(position + 1))
            bytes[position] ^= 0x01
            #expect(parseTunnel(bytes) == badSignature, "byte \(position)")
            #expect(parseTunnel(Array(bytes.prefix(position))) == .needMore)
        }
        let others = [
            Array("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".utf8),  // version 1
            Array("GET / HTTP/1.1\r\n\r\n".utf8),
            [0x16, 0x03, 0x01, 0x00, 0x10],  // a TLS record
            [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0B],
            [0x00],
        ]
        for bytes in others {
            #expect(parseTunnel(bytes) == badSignature)
            // Refused as soon as the wrong byte is there.
            let first = (0..<bytes.count).first { parseTunnel(Array(bytes.prefix($0 + 1))) != .needMore }
            #expect(first == (0..<12).first { bytes[$0] != ProxyV2.signature[$0] })
        }
    }

    @Test func versionAndCommand() {
        #expect(Self.invalid(ProxyV2.signature + [0x11]) == "unsupported PROXY version 1")
        #expect(Self.invalid(ProxyV2.signature + [0x31]) == "unsupported PROXY version 3")
        #expect(Self.invalid(ProxyV2.signature + [0x20]) == "unsupported command LOCAL")
        #expect(Self.invalid(ProxyV2.signature + [0x22]) == "unknown command 2")
        #expect(Self.invalid(ProxyV2.signature + [0x2F]) == "unknown command 15")
        // The spec's health check: LOCAL, UNSPEC, no addresses.
        #expect(Self.invalid(ProxyV2.header(command: 0x20, family: 0x00, body: [])) == "unsupported command LOCAL")
        // LOCAL with addresses is still LOCAL.
        var local = Self.v4Bytes
        local[12] = 0x20
        #expect(Self.invalid(local) == "unsupported command LOCAL")
    }

    @Test func onlyTCPOverIPv4OrIPv6() {
        let cases: [(UInt8, String)] = [
            (0x00, "unsupported family UNSPEC"),
            (0x01, "unsupported family UNSPEC"),
            (0x10, "unsupported protocol UNSPEC"),
            (0x12, "unsupported protocol UDP"),
            (0x22, "unsupported protocol UDP"),
            (0x31, "unsupported family UNIX"),
            (0x32, "unsupported family UNIX"),
            (0x13, "unknown family/protocol 0x13"),
            (0x41, "unknown family/protocol 0x41"),
            (0x03, "unknown family/protocol 0x03"),
        ]
        for (family, why) in cases {
            #expect(Self.invalid(ProxyV2.signature + [0x21, family]) == why)
            var full = Self.v6Bytes
            full[13] = family
            #expect(Self.invalid(full) == why)
        }
        // The spec's PROXY over UNSPEC (sender could not tell): no addresses to use.
        #expect(Self.invalid(ProxyV2.header(family: 0x00, body: [])) == "unsupported family UNSPEC")
        // UNIX: 216 bytes of paths.
        let unix = ProxyV2.header(family: 0x31, body: [UInt8](repeating: 0x2F, count: 216))
        #expect(Self.invalid(unix) == "unsupported family UNIX")
    }

    @Test func declaredLengths() {
        // Too short for the address block.
        let short: [(family: UInt8, length: Int, block: Int)] = [
            (0x11, 11, 12), (0x11, 0, 12), (0x21, 12, 36), (0x21, 35, 36),
        ]
        for (family, length, block) in short {
            let bytes = ProxyV2.header(family: family, body: [], length: length)
            #expect(Self.invalid(bytes) == "length \(length) too short for the addresses (\(block))")
        }
        // A v6 header that says v4 is read as v4: the zeros in the middle of the v6 source
        // address land on the destination port.
        var v4Family = Self.v6Bytes
        v4Family[13] = 0x11
        #expect(Self.invalid(v4Family) == "destination port 0")

        // Exactly maxLength is accepted; one more is not, before any of it arrives.
        let padding = TunnelHeader.maxLength - 28 - 3
        let noop = ProxyV2.tlv(0x04, .init(repeating: 0, count: padding))
        let longest = ProxyV2.v4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, tlvs: noop)
        #expect(longest.count == TunnelHeader.maxLength)
        guard case .header(_, let length) = parseTunnel(longest) else {
            Issue.record("the longest header does not parse")
            return
        }
        #expect(length == TunnelHeader.maxLength)
        let tooLong = "header longer than 512 bytes"
        #expect(Self.invalid(ProxyV2.signature + [0x21, 0x11] + ProxyV2.u16(497)) == tooLong)
        #expect(Self.invalid(ProxyV2.signature + [0x21, 0x21] + ProxyV2.u16(0xFFFF)) == tooLong)
        // The high byte alone: 2 * 256 + 16 > 512.
        #expect(Self.invalid(ProxyV2.signature + [0x21, 0x11, 0x02]) == tooLong)
        #expect(parseTunnel(ProxyV2.signature + [0x21, 0x11, 0x01]) == .needMore)
    }

    @Test func tlvsAreSkipped() {
        let v4 = ProxyV2.v4([10, 1, 2, 3], 45678, [10, 4, 5, 6], 8080, tlvs: Self.haproxyTLVs)
        #expect(parseTunnel(v4) == .header(Self.v4Header, length: v4.count))
        let v6 = ProxyV2.header(family: 0x21, body: Array(Self.v6Bytes[16...]) + Self.haproxyTLVs)
        #expect(parseTunnel(v6) == .header(Self.v6Header, length: v6.count))
        // One empty TLV, the smallest there is.
        let noop = ProxyV2.v4([10, 1, 2, 3], 45678, [10, 4, 5, 6], 8080, tlvs: [0x04, 0, 0])
        #expect(parseTunnel(noop) == .header(Self.v4Header, length: 31))
    }

    @Test func malformedTLVs() {
        let address = Array(Self.v4Bytes[16...])
        func withTLVs(_ tlvs: [UInt8]) -> [UInt8] { ProxyV2.header(family: 0x11, body: address + tlvs) }
        // Leftovers too short for a TLV header: refused without waiting for them.
        #expect(Self.invalid(withTLVs([0x04])) == "truncated TLV at byte 28")
        #expect(Self.invalid(withTLVs([0x04, 0x00])) == "truncated TLV at byte 28")
        #expect(Self.invalid(Array(withTLVs([0x04, 0x00]).prefix(28))) == "truncated TLV at byte 28")
        #expect(Self.invalid(withTLVs([0x04, 0, 0, 0x01, 0x00])) == "truncated TLV at byte 31")
        // A TLV longer than what the header has left.
        #expect(Self.invalid(withTLVs([0x01, 0x00, 0x03, 0x68, 0x32])) == "TLV 0x01 overruns the header")
        #expect(Self.invalid(withTLVs([0x02, 0x01, 0x00, 0x68, 0x32])) == "TLV 0x02 overruns the header")
        // ... seen from the length's high byte alone.
        #expect(
            Self.invalid(Array(withTLVs([0x02, 0x01, 0x00, 0x68, 0x32]).prefix(30))) == "TLV 0x02 overruns the header"
        )
        // A TLV that stops short of the end leaves a truncated one behind.
        #expect(Self.invalid(withTLVs([0x01, 0x00, 0x01, 0x68, 0x32])) == "truncated TLV at byte 32")
        // The SSL TLV's sub-TLVs are not looked into.
        let ssl = withTLVs(ProxyV2.tlv(0x20, [0, 0, 0, 0, 0, 0x21, 0xFF, 0xFF]))
        #expect(parseTunnel(ssl) == .header(Self.v4Header, length: ssl.count))
    }

    @Test func destinationPortZero() {
        var v4 = Self.v4Bytes
        v4[26] = 0
        v4[27] = 0
        #expect(Self.invalid(v4) == "destination port 0")
        var v6 = Self.v6Bytes
        v6[50] = 0
        v6[51] = 0
        #expect(Self.invalid(v6) == "destination port 0")
        // Refused before any TLV arrives.
        let withTLVs = ProxyV2.v4([10, 1, 2, 3], 1, [10, 4, 5, 6], 0, tlvs: Self.haproxyTLVs)
        #expect(Self.invalid(Array(withTLVs.prefix(28))) == "destination port 0")
        // Port 0 at the source is the client's business.
        var source = Self.v4Bytes
        source[24] = 0
        source[25] = 0
        let anySource = TunnelHeader(source: .v4(address: 0x0A01_0203, port: 0), destination: Self.v4Header.destination)
        #expect(parseTunnel(source) == .header(anySource, length: 28))
        let noPort = TunnelHeader(source: Self.v4Header.source, destination: .v4(address: 1, port: 0))
        #expect(Self.invalid(noPort.encoded()) == "destination port 0")
    }

    @Test func thePayloadAfterTheHeaderIsNotLookedAt() {
        let payload = Array("GET / HTTP/1.1\r\nHost: reviews\r\n\r\n".utf8) + [0, 0xFF, 0x0D, 0x0A]
        #expect(parseTunnel(Self.v4Bytes + payload) == .header(Self.v4Header, length: 28))
        #expect(parseTunnel(Self.v6Bytes + payload) == .header(Self.v6Header, length: 52))
        let tlvs = ProxyV2.v4([10, 1, 2, 3], 45678, [10, 4, 5, 6], 8080, tlvs: Self.haproxyTLVs)
        #expect(parseTunnel(tlvs + Self.v4Bytes) == .header(Self.v4Header, length: tlvs.count))
        // Payload beyond maxLength in the same read is fine.
        let big = Self.v6Bytes + [UInt8](repeating: 0x17, count: 4096)
        #expect(parseTunnel(big) == .header(Self.v6Header, length: 52))
    }

    @Test func theSpecsVersion1ExampleAsVersion2() {
        // Section 2.1's `PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n`, in binary.
        let bytes: [UInt8] =
            [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C]
            + [0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8, 0x00, 0x0B, 0xDC, 0x04, 0x01, 0xBB]
        let expected = TunnelHeader(
            source: .v4(address: 0xC0A8_0001, port: 56324),
            destination: .v4(address: 0xC0A8_000B, port: 443)
        )
        #expect(parseTunnel(bytes) == .header(expected, length: 28))
        #expect(expected.encoded() == bytes)
    }

    @Test func aVerdictOnlyChangesFromNeedMore() {
        var inputs = [
            Self.v4Bytes, Self.v6Bytes, ProxyV2.v4([1, 2, 3, 4], 1, [5, 6, 7, 8], 9, tlvs: Self.haproxyTLVs),
        ]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var bytes = inputs[Int.random(in: 0..<3, using: &generator)]
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            inputs.append(bytes)
        }
        for bytes in inputs {
            var previous = TunnelHeaderParse.needMore
            for n in 0...bytes.count {
                let verdict = parseTunnel(Array(bytes.prefix(n)))
                if previous != .needMore { #expect(verdict == previous, "\(bytes) at \(n)") }
                previous = verdict
            }
        }
    }

    @Test func socketAddressConversions() {
        let client = ClientAddress(SocketAddress(parsing: "10.1.2.3:45678")!)
        let upstream = UpstreamAddress(SocketAddress(parsing: "10.4.5.6:8080")!)
        let header = TunnelHeader(client: client, destination: upstream)
        #expect(header == Self.v4Header)
        #expect(header.client == client && header.upstream == upstream)
        let client6 = ClientAddress(SocketAddress(parsing: "[fd00::1]:40000")!)
        let upstream6 = UpstreamAddress(SocketAddress(parsing: "[2001:db8::42]:443")!)
        let header6 = TunnelHeader(client: client6, destination: upstream6)
        #expect(header6 == Self.v6Header)
        #expect(header6.encoded() == Self.v6Bytes)
        #expect(header6.client == client6 && header6.upstream == upstream6)
        #expect(header6.upstream.description == "[2001:db8::42]:443")
    }

    /// Opt-in: parsing and encoding allocate nothing, valid input or cut short. Counted by
    /// the integration tests' LD_PRELOAD counter; run alone, optimized:
    ///
    ///     cc -shared -fPIC -O2 -o /tmp/libmc.so Tests/Integration/malloc_count.c -ldl
    ///     LD_PRELOAD=/tmp/libmc.so LOOM_MALLOC_COUNT_FILE=/tmp/mc.txt \
    ///         swift test -c release -Xswiftc -enable-testing --filter parsingAllocatesNothing
    @Test(.enabled(if: getenv("LOOM_MALLOC_COUNT_FILE") != nil))
    func parsingAllocatesNothing() {
        let inputs = [
            Self.v4Bytes, Self.v6Bytes, Array(Self.v6Bytes.prefix(40)),
            ProxyV2.v4([1, 2, 3, 4], 1, [5, 6, 7, 8], 9, tlvs: Self.haproxyTLVs),
        ]
        var sink = 0
        var buffer = [UInt8](repeating: 0, count: 64)
        _ = BalancerAllocationTests.allocations()  // the first read sets the counter up
        let start = BalancerAllocationTests.allocations()
        let baseline = BalancerAllocationTests.allocations() - start
        let before = BalancerAllocationTests.allocations()
        for _ in 0..<10_000 {
            for input in inputs {
                input.withUnsafeBytes {
                    switch TunnelHeader.parse($0) {
                    case .header(let h, let length):
                        sink &+= length &+ Int(h.destination.port)
                        sink &+= buffer.withUnsafeMutableBytes { h.encode(into: $0.baseAddress!) }
                    case .needMore: sink &+= 1
                    case .invalid: sink &+= 2
                    }
                }
            }
        }
        let used = BalancerAllocationTests.allocations() - before - baseline
        #expect(sink != 0)
        #expect(used == 0)
    }
}
