// STUB (to be completed by the sniffing work): what the first bytes of a connection say.

/// The start of an HTTP/1 request.
public struct HTTPRequestHead: Sendable, Equatable {
    public var method: String
    public var path: String
    /// Host header, lowercase, without a port.
    public var host: String?
    /// Header names lowercase.
    public var headers: [(name: String, value: String)]

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
    public static func sniff(_ bytes: UnsafeRawBufferPointer, limit: Int) -> SniffOutcome { .opaque }
}

extension RouteMatch {
    /// Whether a connection whose first bytes said `outcome` matches.
    public func matches(_ outcome: SniffOutcome) -> Bool { !needsPeek }
}
