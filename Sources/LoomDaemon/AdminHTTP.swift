// The admin API's HTTP values: what a route handler receives and answers. The server
// (AdminServer.swift) speaks HTTP/1.1 and knows no routes; loomd's handler
// (Daemon.route) knows no HTTP beyond these values.

/// One admin request, read whole (the body is limited, see `AdminServer.bodyLimit`).
public struct AdminHTTPRequest: Sendable {
    /// `GET`, `POST`, ...
    public var method: String
    /// The request target's path, without the query (not percent-decoded).
    public var path: String
    /// The query's `name=value` pairs, percent-decoded (`+` is a space); the last of a
    /// repeated name wins.
    public var query: [String: String]
    public var body: [UInt8]
    /// True when the request came over the metrics TCP listener (which serves only
    /// `GET /metrics`), false over the root-only Unix socket.
    public var viaTCP: Bool

    public init(method: String, path: String, query: [String: String] = [:], body: [UInt8] = [], viaTCP: Bool = false) {
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.viaTCP = viaTCP
    }

    /// A request for `target` (`/path?query`).
    public init(method: String, target: String, body: [UInt8] = [], viaTCP: Bool = false) {
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        self.init(
            method: method,
            path: String(parts.first ?? ""),
            query: parts.count > 1 ? Self.parseQuery(parts[1]) : [:],
            body: body,
            viaTCP: viaTCP
        )
    }

    /// The body as UTF-8 text.
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// `a=1&b=x%20y` as `["a": "1", "b": "x y"]`. A name without `=` has the value "".
    static func parseQuery(_ query: Substring) -> [String: String] {
        var result: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            result[percentDecoded(kv[0])] = kv.count > 1 ? percentDecoded(kv[1]) : ""
        }
        return result
    }

    /// `%XX` escapes decoded, `+` as a space; a malformed escape is kept as it is.
    static func percentDecoded(_ text: Substring) -> String {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "%"), i + 2 < bytes.count, let hi = hexValue(bytes[i + 1]),
                let lo = hexValue(bytes[i + 2])
            {
                out.append(hi << 4 | lo)
                i += 3
                continue
            }
            out.append(b == UInt8(ascii: "+") ? UInt8(ascii: " ") : b)
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// A whole answer.
public struct AdminHTTPResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: String

    public init(status: Int = 200, contentType: String = "application/json", body: String) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    /// `{"error":"MESSAGE"}` with `status`.
    public static func error(_ status: Int, _ message: String) -> AdminHTTPResponse {
        AdminHTTPResponse(status: status, body: "{\"error\":\"\(jsonEscape(message))\"}")
    }
}

/// A live answer (the trace stream). The server sends `200`, `application/x-ndjson`,
/// chunked, then calls `poll()` on its event loop about every 50 ms, and only while the
/// client keeps up: never while the connection's send buffer is full, so the server
/// buffers at most one poll's lines and the stream's own bounded queue must drop. Each
/// line is sent followed by "\n". After `ended`, the response ends and the connection
/// closes.
///
/// `cancel()` is called exactly once for every stream a handler returns, when the server
/// is done with it: after `poll()` reported `ended`, when the client went away, or when
/// loomd stops (then possibly from another thread, while a last `poll()` runs: make both
/// thread-safe). `poll()` is not called after `cancel()` returned.
public protocol AdminStream: AnyObject, Sendable {
    /// The lines produced since the last call (without newlines), and whether the stream
    /// is over. Must not block.
    func poll() -> (lines: [String], ended: Bool)
    /// The server is done with this stream: release what it holds.
    func cancel()
}

/// What a route handler answers.
public enum AdminAnswer: Sendable {
    case response(AdminHTTPResponse)
    case stream(AdminStream)

    /// `{"error":"MESSAGE"}` with `status`.
    public static func error(_ status: Int, _ message: String) -> AdminAnswer {
        .response(.error(status, message))
    }
}

/// `--metrics-address HOST:PORT`: where Prometheus scrapes `GET /metrics`.
public struct MetricsAddress: Sendable, Equatable, CustomStringConvertible {
    /// An IP address or a host name; IPv6 without brackets.
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `127.0.0.1:15090`, `[::1]:15090`, `0.0.0.0:15090`, `localhost:15090`; nil when it
    /// is not HOST:PORT with a port from 1 to 65535.
    public init?(parsing text: String) {
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[close...].hasPrefix("]:") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, !host.contains(where: \.isWhitespace), let number = Int(port), (1...65535).contains(number)
        else { return nil }
        self.init(host: String(host), port: number)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return String(s)
    }
}
