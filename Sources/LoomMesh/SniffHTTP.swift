// The HTTP/1 half of the sniffer (RFC 9112): a request line and header fields up to the
// empty line. One pass checks the head and finds its end without allocating; only a
// complete, valid head is turned into strings.
//
// Strict where a lenient parser and the upstream could disagree about what the request
// says (routing by Host must see what the server sees): CRLF line ends only, no
// whitespace before a colon, no obs-fold, no control characters, one Host value.

enum SniffHTTP {
    static let what = "request head"
    /// Longer "methods" are some other protocol.
    static let maxMethod = 32
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")
    static let space = UInt8(ascii: " ")
    static let tab = UInt8(ascii: "\t")
    static let colon = UInt8(ascii: ":")

    /// tchar (RFC 9110 5.6.2).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// Where the parts of a valid head are.
    struct Layout {
        var methodEnd = 0
        var target = 0..<0
        var firstHeader = 0
        var headerCount = 0
        var end = 0
    }

    enum Scan {
        case complete(Layout)
        case incomplete
        case outcome(SniffOutcome)
    }

    /// `seen` starts with a token byte and holds at most `limit` bytes.
    static func sniff(_ seen: UnsafeRawBufferPointer, limit: Int) -> SniffOutcome {
        switch scan(seen) {
        case .incomplete: return Sniffer.incomplete(seen, limit: limit, what: what)
        case .outcome(let outcome): return outcome
        case .complete(let layout): return build(seen, layout)
        }
    }

    static func scan(_ b: UnsafeRawBufferPointer) -> Scan {
        var layout = Layout()
        // method SP
        var i = 0
        while i < b.count && isTokenByte(b[i]) {
            i += 1
            if i > maxMethod { return .outcome(.opaque) }
        }
        guard i < b.count else { return .incomplete }
        guard b[i] == space else { return .outcome(.opaque) }
        layout.methodEnd = i
        i += 1
        // request-target SP
        let targetStart = i
        while i < b.count && b[i] != space {
            guard b[i] > space && b[i] != 0x7f else { return .outcome(.opaque) }
            i += 1
        }
        guard i < b.count else { return .incomplete }
        guard i > targetStart else { return .outcome(.opaque) }
        layout.target = targetStart..<i
        i += 1
        // HTTP-version CRLF: "HTTP/1.x". Until "HTTP/" it may be another protocol (an SSH
        // banner, a Redis inline command); another major version (the HTTP/2 preface) is not
        // HTTP/1 either.
        let version = "HTTP/1.".utf8
        for (k, expected) in version.enumerated() {
            guard i + k < b.count else { return .incomplete }
            guard b[i + k] == expected else {
                if k < 5 || k == 5 && b[i + k] &- UInt8(ascii: "0") < 10 { return .outcome(.opaque) }
                return .outcome(.malformed("bad HTTP version"))
            }
        }
        i += version.count
        guard i < b.count else { return .incomplete }
        guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[i]) else {
            return .outcome(.malformed("bad HTTP version"))
        }
        i += 1
        switch lineEnd(b, i) {
        case .none: return .incomplete
        case .some(false): return .outcome(.malformed("request line does not end in CRLF"))
        case .some(true): i += 2
        }
        layout.firstHeader = i
        // field-line CRLF ... CRLF
        var host: Range<Int>?
        while true {
            guard i < b.count else { return .incomplete }
            if b[i] == cr {
                guard i + 1 < b.count else { return .incomplete }
                guard b[i + 1] == lf else { return .outcome(.malformed("bare CR in request head")) }
                layout.end = i + 2
                return .complete(layout)
            }
            if b[i] == space || b[i] == tab { return .outcome(.malformed("obsolete line folding")) }
            let nameStart = i
            while i < b.count && isTokenByte(b[i]) { i += 1 }
            guard i < b.count else { return .incomplete }
            guard b[i] == colon else {
                if b[i] == cr || b[i] == lf { return .outcome(.malformed("header line without a colon")) }
                return .outcome(.malformed("bad character in header name"))
            }
            guard i > nameStart else { return .outcome(.malformed("empty header name")) }
            let name = nameStart..<i
            i += 1
            let valueStart = i
            while i < b.count && b[i] != cr {
                guard b[i] >= space && b[i] != 0x7f || b[i] == tab else {
                    return .outcome(.malformed("control character in header value"))
                }
                i += 1
            }
            switch lineEnd(b, i) {
            case .none: return .incomplete
            case .some(false): return .outcome(.malformed("bare CR in request head"))
            case .some(true): break
            }
            let value = trimmed(b, valueStart..<i)
            if isHost(b, name) {
                if let first = host, !sameIgnoringCase(b, first, value) {
                    return .outcome(.malformed("conflicting Host headers"))
                }
                host = value
            }
            layout.headerCount += 1
            i += 2
        }
    }

    /// True at CRLF, false at anything else, nil if the bytes end first.
    static func lineEnd(_ b: UnsafeRawBufferPointer, _ i: Int) -> Bool? {
        guard i < b.count else { return nil }
        guard b[i] == cr else { return false }
        guard i + 1 < b.count else { return nil }
        return b[i + 1] == lf
    }

    static func trimmed(_ b: UnsafeRawBufferPointer, _ range: Range<Int>) -> Range<Int> {
        var lower = range.lowerBound
        var upper = range.upperBound
        while lower < upper && (b[lower] == space || b[lower] == tab) { lower += 1 }
        while upper > lower && (b[upper - 1] == space || b[upper - 1] == tab) { upper -= 1 }
        return lower..<upper
    }

    static func isHost(_ b: UnsafeRawBufferPointer, _ name: Range<Int>) -> Bool {
        let host = "host".utf8
        return name.count == host.count && zip(name, host).allSatisfy { Sniffer.asciiLowercase(b[$0]) == $1 }
    }

    static func sameIgnoringCase(_ b: UnsafeRawBufferPointer, _ x: Range<Int>, _ y: Range<Int>) -> Bool {
        x.count == y.count && zip(x, y).allSatisfy { Sniffer.asciiLowercase(b[$0]) == Sniffer.asciiLowercase(b[$1]) }
    }

    /// The strings of a complete, valid head.
    static func build(_ b: UnsafeRawBufferPointer, _ layout: Layout) -> SniffOutcome {
        func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: b[range]) }
        func text(_ range: Range<Int>) -> String { String(decoding: slice(range), as: UTF8.self) }

        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(layout.headerCount)
        var hostHeader: Range<Int>?
        var i = layout.firstHeader
        while i < layout.end - 2 {
            var colon = i
            while b[colon] != SniffHTTP.colon { colon += 1 }
            var end = colon
            while b[end] != cr { end += 1 }
            let value = trimmed(b, colon + 1..<end)
            if isHost(b, i..<colon) { hostHeader = value }
            headers.append((name: Sniffer.lowercased(slice(i..<colon)), value: text(value)))
            i = end + 2
        }

        let method = text(0..<layout.methodEnd)
        var path = text(layout.target)
        var authority = hostHeader.map(slice)
        switch requestTarget(slice(layout.target), isConnect: method == "CONNECT") {
        case .origin: break
        case .authority: authority = slice(layout.target)
        case .absolute(let targetAuthority, let rest):
            authority = slice(targetAuthority.shifted(by: layout.target.lowerBound))
            let restText = text(rest.shifted(by: layout.target.lowerBound))
            path = restText.hasPrefix("/") ? restText : "/" + restText
        case .invalid(let reason): return .malformed(reason)
        }
        var host: String?
        if let authority {
            switch hostName(authority) {
            case .some(let name): host = name.isEmpty ? nil : name
            case .none: return .malformed("bad Host")
            }
        }
        return .http(HTTPRequestHead(method: method, path: path, host: host, headers: headers))
    }

    enum Target {
        /// `/path?query` or `*`.
        case origin
        /// `host:port` (CONNECT).
        case authority
        /// `scheme://authority/rest`: ranges within the target.
        case absolute(authority: Range<Int>, rest: Range<Int>)
        case invalid(String)
    }

    static func requestTarget(_ t: UnsafeRawBufferPointer, isConnect: Bool) -> Target {
        if isConnect { return .authority }
        if t[0] == UInt8(ascii: "/") || (t.count == 1 && t[0] == UInt8(ascii: "*")) { return .origin }
        // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then "://"
        var i = 0
        while i < t.count {
            let c = t[i]
            let isAlpha = Sniffer.asciiLowercase(c) &- UInt8(ascii: "a") < 26
            let isDigit = c &- UInt8(ascii: "0") < 10
            guard
                isAlpha
                    || (i > 0
                        && (isDigit || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") || c == UInt8(ascii: ".")))
            else {
                break
            }
            i += 1
        }
        guard i > 0, t.count >= i + 3, t[i] == colon, t[i + 1] == UInt8(ascii: "/"), t[i + 2] == UInt8(ascii: "/")
        else { return .invalid("bad request target") }
        let start = i + 3
        var end = start
        while end < t.count && t[end] != UInt8(ascii: "/") && t[end] != UInt8(ascii: "?") && t[end] != UInt8(ascii: "#")
        {
            if t[end] == UInt8(ascii: "@") { return .invalid("user info in request target") }
            end += 1
        }
        return .absolute(authority: start..<end, rest: end..<t.count)
    }

    /// `host`, `host:port`, `[v6]` or `[v6]:port` → the host, lowercase, without brackets,
    /// port or trailing dot ("" for an empty value); nil if malformed.
    static func hostName(_ a: UnsafeRawBufferPointer) -> String? {
        var hostRange = 0..<a.count
        var portStart = a.count
        if a.first == UInt8(ascii: "[") {
            guard let close = a.firstIndex(of: UInt8(ascii: "]")), close > 1 else { return nil }
            hostRange = 1..<close
            guard close + 1 == a.count || a[close + 1] == colon else { return nil }
            portStart = close + 1
            for i in hostRange {
                let c = Sniffer.asciiLowercase(a[i])
                guard c == colon || c == UInt8(ascii: ".") || c &- UInt8(ascii: "0") < 10 || c &- UInt8(ascii: "a") < 6
                else {
                    return nil
                }
            }
        } else {
            if let c = a.firstIndex(of: colon) { portStart = c }
            hostRange = 0..<portStart
            for i in hostRange where !isRegNameByte(a[i]) { return nil }
        }
        if portStart < a.count {
            for i in portStart + 1..<a.count where a[i] &- UInt8(ascii: "0") >= 10 { return nil }
        }
        return Sniffer.lowercaseName(UnsafeRawBufferPointer(rebasing: a[hostRange]))
    }

    /// unreserved / sub-delims / "%" (RFC 3986 reg-name, IPv4address).
    static func isRegNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "/"), UInt8(ascii: "?"), UInt8(ascii: "#"), UInt8(ascii: "@"), UInt8(ascii: "["),
            UInt8(ascii: "]"), colon, UInt8(ascii: "\""), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "\\"),
            UInt8(ascii: "^"), UInt8(ascii: "`"), UInt8(ascii: "{"), UInt8(ascii: "|"), UInt8(ascii: "}"):
            return false
        default:
            return byte > space && byte < 0x7f
        }
    }
}

extension Range where Bound == Int {
    fileprivate func shifted(by delta: Int) -> Range<Int> { lowerBound + delta..<upperBound + delta }
}
