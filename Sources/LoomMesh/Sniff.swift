// What the first bytes of a connection say: a TLS ClientHello (its SNI), an HTTP/1
// request head, or something else. The relay peeks (MSG_PEEK) and may call again with
// more bytes; every answer but `.needMore` is final. The parsers (SniffTLS.swift,
// SniffHTTP.swift) only read inside the buffer, never trap on any input, and allocate
// nothing until they build the result.

/// The start of an HTTP/1 request.
public struct HTTPRequestHead: Sendable, Equatable {
    public var method: String
    /// The request target: as sent in origin form (`/a?b`), authority form (CONNECT's
    /// `host:port`) and asterisk form (`*`); of an absolute-form target (`http://h/a?b`) its
    /// path and query (`/a?b`, `/` when empty).
    public var path: String
    /// Host, lowercase, without port, brackets (IPv6) or trailing dot: from an absolute-form
    /// or authority-form target, else from the Host header; nil if neither or empty.
    public var host: String?
    /// Every header line in order: name lowercase, value without surrounding spaces and tabs.
    public var headers: [(name: String, value: String)]

    public init(method: String, path: String, host: String? = nil, headers: [(name: String, value: String)] = []) {
        self.method = method
        self.path = path
        self.host = host
        self.headers = headers
    }

    public static func == (a: HTTPRequestHead, b: HTTPRequestHead) -> Bool {
        a.method == b.method && a.path == b.path && a.host == b.host
            && a.headers.map(\.name) == b.headers.map(\.name) && a.headers.map(\.value) == b.headers.map(\.value)
    }
}

public enum SniffOutcome: Sendable, Equatable {
    /// Not enough bytes yet to tell.
    case needMore
    /// A TLS ClientHello; its SNI if it has one.
    case tls(serverName: String?)
    case http(HTTPRequestHead)
    /// Neither TLS nor HTTP/1.
    case opaque
    /// Looks like TLS or HTTP but breaks the rules, or exceeds the limit.
    case malformed(String)
}

public enum Sniffer {
    /// Classifies the first bytes of a connection, looking at no more than `limit` bytes.
    ///
    /// - A first byte that can start neither a TLS handshake record (22) nor an HTTP method
    ///   (a token character) is `.opaque` at once; so is a record header whose version is not
    ///   3.0-3.4, a method longer than 32 characters, or a request line of another HTTP major
    ///   version (the HTTP/2 preface).
    /// - `.needMore` while what arrived is a valid prefix of a ClientHello or request head;
    ///   when `limit` bytes are in and it is still incomplete, `.malformed("... larger than
    ///   N bytes")` (for TLS as soon as the lengths say it cannot fit).
    /// - TLS: the ClientHello may span several handshake records. `serverName` is the first
    ///   `host_name` of the `server_name` extension, lowercase, without a trailing dot.
    /// - HTTP/1: the request line needs CRLF line ends (a bare CR or LF is malformed), then
    ///   headers until the empty line. See `HTTPRequestHead` and SniffHTTP.swift for the rules.
    public static func sniff(_ bytes: UnsafeRawBufferPointer, limit: Int) -> SniffOutcome {
        let limit = max(limit, 1)
        let seen = UnsafeRawBufferPointer(rebasing: bytes.prefix(limit))
        guard let first = seen.first else { return .needMore }
        if first == SniffTLS.handshakeRecord { return SniffTLS.sniff(seen, limit: limit) }
        if SniffHTTP.isTokenByte(first) { return SniffHTTP.sniff(seen, limit: limit) }
        return .opaque
    }

    /// Whether `name` matches `pattern`: exactly, or `*.suffix` for one or more labels in
    /// front of the suffix (`*.example.com` matches `a.example.com` and `a.b.example.com`,
    /// not `example.com`); `*` alone matches any name. ASCII case-insensitive; a trailing dot
    /// on either side is ignored.
    public static func nameMatches(_ pattern: String, _ name: String) -> Bool {
        var pattern = pattern.utf8[...]
        var name = name.utf8[...]
        if pattern.last == UInt8(ascii: ".") { pattern = pattern.dropLast() }
        if name.last == UInt8(ascii: ".") { name = name.dropLast() }
        guard pattern.first == UInt8(ascii: "*") else { return asciiEqualIgnoringCase(pattern, name) }
        let suffix = pattern.dropFirst()
        if suffix.isEmpty { return !name.isEmpty }
        guard suffix.first == UInt8(ascii: "."), name.count > suffix.count else { return false }
        let tail = name.dropFirst(name.count - suffix.count)
        return asciiEqualIgnoringCase(suffix, tail)
    }

    static func asciiEqualIgnoringCase(_ a: Substring.UTF8View, _ b: Substring.UTF8View) -> Bool {
        guard a.count == b.count else { return false }
        for (x, y) in zip(a, b) where asciiLowercase(x) != asciiLowercase(y) { return false }
        return true
    }

    @inline(__always)
    static func asciiLowercase(_ byte: UInt8) -> UInt8 {
        byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte
    }

    /// The bytes as a string, ASCII letters lowercased.
    static func lowercased(_ bytes: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: bytes.count) { out in
            for i in 0..<bytes.count { out[i] = asciiLowercase(bytes[i]) }
            return bytes.count
        }
    }

    /// A host or server name as a string: lowercase, without one trailing dot.
    static func lowercaseName(_ bytes: UnsafeRawBufferPointer) -> String {
        let dot = bytes.last == UInt8(ascii: ".") ? 1 : 0
        return lowercased(UnsafeRawBufferPointer(rebasing: bytes.dropLast(dot)))
    }

    /// `.needMore`, or `.malformed` once the whole `limit` was given.
    @inline(__always)
    static func incomplete(_ seen: UnsafeRawBufferPointer, limit: Int, what: String) -> SniffOutcome {
        seen.count >= limit ? .malformed("\(what) larger than \(limit) bytes") : .needMore
    }
}

extension RouteMatch {
    /// Whether a connection whose first bytes said `outcome` matches. All given fields must
    /// match: `sni` only a TLS ClientHello with that server name; `host`, `pathPrefix` and
    /// `headers` only an HTTP/1 request head. An empty match matches anything.
    public func matches(_ outcome: SniffOutcome) -> Bool {
        if let sni {
            guard case .tls(let serverName?) = outcome, Sniffer.nameMatches(sni, serverName) else { return false }
        }
        if host == nil && pathPrefix == nil && headers.isEmpty { return true }
        guard case .http(let head) = outcome else { return false }
        if let host {
            guard let actual = head.host, Sniffer.nameMatches(host, actual) else { return false }
        }
        if let pathPrefix, !head.path.utf8.starts(with: pathPrefix.utf8) { return false }
        for wanted in headers {
            let found = head.headers.contains { header in
                Sniffer.asciiEqualIgnoringCase(header.name.utf8[...], wanted.name.utf8[...])
                    && header.value.utf8.elementsEqual(wanted.value.utf8)
            }
            if !found { return false }
        }
        return true
    }
}
