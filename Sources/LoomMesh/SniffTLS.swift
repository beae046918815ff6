// The TLS half of the sniffer: a ClientHello's server name (RFC 8446 4.1.2, RFC 6066 3).
// Every read goes through `SniffReader`, which checks bounds, so no input can trap.

/// Bounds-checked big-endian reads over a byte buffer.
struct SniffReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func u8() -> Int? {
        guard remaining >= 1 else { return nil }
        defer { offset += 1 }
        return Int(bytes[offset])
    }

    mutating func u16() -> Int? {
        guard remaining >= 2 else { return nil }
        defer { offset += 2 }
        return Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
    }

    /// The next `count` bytes, or nil if there are fewer.
    mutating func take(_ count: Int) -> UnsafeRawBufferPointer? {
        guard count >= 0, remaining >= count else { return nil }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    }

    /// A length-prefixed block (`lengthBytes` 1 or 2) as its own reader.
    mutating func block(lengthBytes: Int) -> SniffReader? {
        guard let length = lengthBytes == 1 ? u8() : u16(), let body = take(length) else { return nil }
        return SniffReader(body)
    }
}

enum SniffTLS {
    static let handshakeRecord: UInt8 = 22
    static let clientHello = 1
    /// Largest TLSPlaintext fragment (2^14).
    static let maxFragment = 16_384
    static let recordHeader = 5
    static let handshakeHeader = 4
    static let what = "TLS ClientHello"

    /// `seen` starts with byte 22 and holds at most `limit` bytes.
    static func sniff(_ seen: UnsafeRawBufferPointer, limit: Int) -> SniffOutcome {
        // The first record's version: 3.0 (SSL 3) to 3.4; anything else is not TLS.
        if seen.count >= 2 && seen[1] != 3 { return .opaque }
        if seen.count >= 3 && seen[2] > 4 { return .opaque }

        // Walk the handshake records until they hold the whole ClientHello.
        var offset = 0
        var available = 0  // handshake bytes present in the records so far
        var handshake: UInt32 = 0  // the 4-byte handshake header, gathered across records
        var messageLength = -1  // header + body once known
        var records = 0
        var firstFragment = 0
        while messageLength < 0 || available < messageLength {
            let header = UnsafeRawBufferPointer(rebasing: seen[offset..<min(offset + recordHeader, seen.count)])
            if header.count >= 1 && header[0] != handshakeRecord { return .malformed(interleaved) }
            if header.count >= 2 && header[1] != 3 || header.count >= 3 && header[2] > 4 {
                return .malformed("bad TLS record version")
            }
            guard header.count == recordHeader else { break }
            let length = Int(seen[offset + 3]) << 8 | Int(seen[offset + 4])
            guard length > 0, length <= maxFragment else { return .malformed("bad TLS record length \(length)") }
            let start = offset + recordHeader
            let present = min(length, seen.count - start)
            if records == 0 { firstFragment = present }
            records += 1
            var i = start
            while available < handshakeHeader && i < start + present {
                handshake = handshake << 8 | UInt32(seen[i])
                available += 1
                i += 1
            }
            available += start + present - i
            if messageLength < 0 && available >= handshakeHeader {
                guard handshake >> 24 == UInt32(clientHello) else {
                    return .malformed("TLS handshake is not a ClientHello")
                }
                messageLength = handshakeHeader + Int(handshake & 0xff_ffff)
            }
            if messageLength >= 0 {
                // The fewest bytes the whole ClientHello can take: past `limit`, fail now.
                let fragments = (messageLength + maxFragment - 1) / maxFragment
                if max(records, fragments) * recordHeader + messageLength > limit {
                    return .malformed("\(what) larger than \(limit) bytes")
                }
            }
            if present < length { break }
            offset = start + length
        }
        guard messageLength >= 0, available >= messageLength else {
            return Sniffer.incomplete(seen, limit: limit, what: what)
        }
        if firstFragment >= messageLength {
            return parse(UnsafeRawBufferPointer(rebasing: seen[recordHeader..<recordHeader + messageLength]))
        }
        // Split over records: reassemble the fragments (on the stack when small).
        return withUnsafeTemporaryAllocation(byteCount: messageLength, alignment: 1) { buffer in
            var copied = 0
            var offset = 0
            while copied < messageLength {
                let length = Int(seen[offset + 3]) << 8 | Int(seen[offset + 4])
                let count = min(length, messageLength - copied)
                let from = offset + recordHeader
                UnsafeMutableRawBufferPointer(rebasing: buffer[copied..<copied + count])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: seen[from..<from + count]))
                copied += count
                offset = from + length
            }
            return parse(UnsafeRawBufferPointer(buffer))
        }
    }

    static let interleaved = "TLS ClientHello interleaved with another record type"

    /// Parses one complete ClientHello handshake message (header included).
    static func parse(_ message: UnsafeRawBufferPointer) -> SniffOutcome {
        var reader = SniffReader(message)
        reader.offset = handshakeHeader
        guard let legacyVersion = reader.u16(), legacyVersion >> 8 == 3 else {
            return .malformed("bad ClientHello version")
        }
        guard reader.take(32) != nil else { return .malformed("truncated ClientHello random") }
        guard let sessionID = reader.block(lengthBytes: 1), sessionID.remaining <= 32 else {
            return .malformed("bad ClientHello session id")
        }
        guard let suites = reader.block(lengthBytes: 2), suites.remaining >= 2, suites.remaining % 2 == 0 else {
            return .malformed("bad ClientHello cipher suites")
        }
        guard let compression = reader.block(lengthBytes: 1), compression.remaining >= 1 else {
            return .malformed("bad ClientHello compression methods")
        }
        if reader.remaining == 0 { return .tls(serverName: nil) }  // no extensions at all
        guard var extensions = reader.block(lengthBytes: 2), reader.remaining == 0 else {
            return .malformed("bad ClientHello extensions length")
        }
        var serverName: UnsafeRawBufferPointer?
        var sawServerName = false
        while extensions.remaining > 0 {
            guard let type = extensions.u16(), var body = extensions.block(lengthBytes: 2) else {
                return .malformed("truncated ClientHello extension")
            }
            guard type == 0 else { continue }
            guard !sawServerName else { return .malformed("duplicate server_name extension") }
            sawServerName = true
            guard var list = body.block(lengthBytes: 2), body.remaining == 0, list.remaining > 0 else {
                return .malformed("bad server_name extension")
            }
            while list.remaining > 0 {
                guard let nameType = list.u8(), let name = list.block(lengthBytes: 2) else {
                    return .malformed("bad server_name extension")
                }
                guard nameType == 0 else { continue }
                guard serverName == nil else { return .malformed("more than one host_name in server_name") }
                guard isHostName(name.bytes) else { return .malformed("bad TLS server name") }
                serverName = name.bytes
            }
        }
        return .tls(serverName: serverName.map(Sniffer.lowercaseName))
    }

    /// 1 to 255 bytes of letters, digits, `-`, `_` and `.` (a DNS name; IDNs as A-labels),
    /// not only a dot.
    static func isHostName(_ name: UnsafeRawBufferPointer) -> Bool {
        guard (1...255).contains(name.count), !(name.count == 1 && name[0] == UInt8(ascii: ".")) else {
            return false
        }
        for byte in name {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
                continue
            default:
                return false
            }
        }
        return true
    }
}
