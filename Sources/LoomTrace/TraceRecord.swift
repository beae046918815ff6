// One line of `loomctl trace` and of the access log: a connection's story joining the
// kernel's decision (from the NFQUEUE reader) with the proxy's (from the relay loops).
// Rendered as one JSON object per line; loomctl turns it into a human line.
import Foundation

/// The kernel's decision on a connection's first SYN, by the rule that made it.
public struct KernelVerdict: Codable, Equatable, Sendable {
    /// `redirected` or `bypassed`.
    public var verdict: String
    /// The deciding rule's reason (its nft comment), e.g. `excluded outbound port`.
    public var rule: String
    /// The rule as `nft` prints it.
    public var nft: String
    /// `output` or `prerouting`.
    public var chain: String
    /// The port redirected to (15001, 15006), if redirected.
    public var port: Int?

    public init(verdict: String, rule: String, nft: String, chain: String, port: Int? = nil) {
        self.verdict = verdict
        self.rule = rule
        self.nft = nft
        self.chain = chain
        self.port = port
    }
}

/// The mTLS side of a connection: who this Loom was, whom it verified, and how.
public struct MTLSDetail: Codable, Equatable, Sendable {
    /// `client` (this node opened the tunnel) or `server` (it accepted it on 15008).
    public var role: String
    /// The local workload identity and the serial of the certificate used.
    public var local: String
    public var serial: String
    /// The peer's verified SPIFFE ID (absent when the handshake failed).
    public var peer: String?
    public var version: String?
    public var cipher: String?
    /// `user` (copied through buffers) or `kernel` (kTLS).
    public var dataPath: String
    /// Client role: where the tunnel went (the endpoint pod's tunnel port).
    public var tunnel: String?
    /// The handshake resumed an earlier session (identities from that session's
    /// certificates).
    public var resumed: Bool?

    public init(
        role: String,
        local: String,
        serial: String,
        peer: String?,
        version: String?,
        cipher: String?,
        dataPath: String
    ) {
        self.role = role
        self.local = local
        self.serial = serial
        self.peer = peer
        self.version = version
        self.cipher = cipher
        self.dataPath = dataPath
    }

    enum CodingKeys: String, CodingKey {
        case role, local, serial, peer, version, cipher, tunnel, resumed
        case dataPath = "data_path"
    }
}

/// One trace event.
public struct TraceRecord: Codable, Equatable, Sendable {
    /// `open` (upstream connected), `close` (ended; `end` says how), `bypass` (the kernel
    /// let it pass Loom; only the kernel saw it), `dropped` (this tracer fell behind and
    /// `dropped` events were lost).
    public var event: String
    /// Wall-clock time, RFC 3339 with milliseconds, UTC.
    public var time: String
    public var pod: String?
    public var namespace: String?
    /// `outbound` (the pod connects out) or `inbound` (a connection to the pod).
    public var direction: String?
    public var client: String?
    /// The original destination, before any redirect.
    public var destination: String?
    public var kernel: KernelVerdict?
    /// `namespace/name` of the service the destination belongs to.
    public var service: String?
    public var route: String?
    /// The service the route sent it to (when a route changed it).
    public var target: String?
    /// Where Loom connected.
    public var endpoint: String?
    /// `none` (plaintext) or `mtls` (the node-to-node tunnel; `mtls` has the identities).
    public var tls: String?
    public var mtls: MTLSDetail?
    public var bytesOut: UInt64?
    public var bytesIn: UInt64?
    public var durationMs: Double?
    public var connectMs: Double?
    /// How it ended: `fin`, `client_reset`, `upstream_reset`, `upstream_refused`,
    /// `connect_timeout`, `idle_timeout`, `denied_unmatched`, `circuit_open`, ...
    public var end: String?
    public var detail: String?
    /// For `dropped`: how many events were lost.
    public var dropped: Int?

    public init(event: String, time: String) {
        self.event = event
        self.time = time
    }

    enum CodingKeys: String, CodingKey {
        case event, time, pod, namespace, direction, client, destination, kernel, service, route, target, endpoint,
            tls, mtls
        case bytesOut = "bytes_out"
        case bytesIn = "bytes_in"
        case durationMs = "duration_ms"
        case connectMs = "connect_ms"
        case end, detail, dropped
    }

    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// One JSON line (no newline).
    public func json() -> String {
        String(decoding: (try? Self.encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }

    public static func parse(_ line: String) -> TraceRecord? {
        try? JSONDecoder().decode(TraceRecord.self, from: Data(line.utf8))
    }

    /// The human line `loomctl trace` prints; `colour` adds ANSI colours for terminals.
    public func human(colour: Bool) -> String {
        func paint(_ text: String, _ code: String) -> String { colour ? "\u{1b}[\(code)m\(text)\u{1b}[0m" : text }
        let clock = time.split(separator: "T").last.map { String($0.dropLast()) } ?? time
        if event == "dropped" {
            return paint("\(clock) trace fell behind: \(dropped ?? 0) event(s) dropped", "33")
        }
        var parts = [clock, pod ?? "-", direction == "inbound" ? "in " : "out"]
        parts.append("\(client ?? "?") -> \(destination ?? "?")")
        if let kernel {
            let text = "\(kernel.verdict) (\(kernel.rule))"
            parts.append(paint(text, kernel.verdict == "redirected" ? "36" : "35"))
        }
        if event == "bypass" { return parts.joined(separator: " ") }
        if let service {
            var text = "svc \(service)"
            if let route { text += " route \(route)" }
            if let target, target != service { text += " => \(target)" }
            parts.append(text)
        }
        if let endpoint { parts.append("-> \(endpoint)") }
        if let mtls {
            var text = "mtls \(mtls.role) \(mtls.local)"
            if let peer = mtls.peer { text += mtls.role == "client" ? " => \(peer)" : " <= \(peer)" }
            parts.append(paint(text, "34"))
        }
        switch event {
        case "open":
            parts.append(paint("open", "32"))
            if let connectMs { parts.append(String(format: "connect %.2fms", connectMs)) }
        default:
            let ok = end == "fin"
            parts.append(paint("close \(end ?? "?")", ok ? "32" : "31"))
            parts.append("out \(Self.bytes(bytesOut ?? 0)) in \(Self.bytes(bytesIn ?? 0))")
            if let durationMs { parts.append(String(format: "%.1fms", durationMs)) }
            if !ok, let detail { parts.append("(\(detail))") }
        }
        return parts.joined(separator: " ")
    }

    static func bytes(_ n: UInt64) -> String {
        if n < 10_000 { return "\(n)B" }
        if n < 10_000_000 { return "\(n / 1000)kB" }
        return "\(n / 1_000_000)MB"
    }
}
