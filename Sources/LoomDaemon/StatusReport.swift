// The admin API's status answer: node counters in a fixed key order, then one row per
// pod.
import Foundation
import LoomRelay

/// What `loomctl status` shows.
public struct StatusReport: Sendable {
    public var config: RelayConfiguration
    public var budget: ResourceBudget?
    public var loops: [LoopCounters]
    public var pods: [PodStatus]
    /// The mesh configuration in use: version (1 = none loaded), source, services.
    public var meshVersion = 1
    public var meshSource = ""
    public var meshServices = 0
    /// Whether the kernel offers kTLS (probed at start).
    public var kernelTLS = ""
    /// The mesh CA and mTLS counters as a JSON object (`null`: no CA).
    public var mtls = "null"
    public var uptimeMs: Int64
    public var pid: Int

    public init(
        config: RelayConfiguration,
        budget: ResourceBudget?,
        loops: [LoopCounters],
        pods: [PodStatus],
        uptimeMs: Int64,
        pid: Int
    ) {
        self.config = config
        self.budget = budget
        self.loops = loops
        self.pods = pods
        self.uptimeMs = uptimeMs
        self.pid = pid
    }

    /// One JSON object, keys in a fixed order.
    public func json() -> String {
        let t = loops.reduce(LoopCounters(), +)
        var s = "{"
        s += "\"pid\":\(pid),\"uptime_ms\":\(uptimeMs),"
        s += "\"loops\":\(loops.count),"
        s += "\"listen_port\":\(config.outboundPort),\"mark\":\(config.socketMark),"
        s += "\"connections\":{\"active\":\(t.active),\"accepted\":\(t.accepted),\"refused\":\(t.refused),"
        s += "\"finished\":\(t.finished),\"failed\":\(t.failed),\"limit\":\(budget?.maxConnections ?? 0),"
        s += "\"accept_paused\":\(t.acceptPaused)},"
        s +=
            "\"pipes\":{\"in_use\":\(t.pipesInUse),\"cached\":\(t.pipesCached),\"waiters\":\(t.pipeWaiters),\"waits_total\":\(t.pipeWaits),"
        s += "\"limit\":\(budget?.maxPipes ?? 0)},"
        s += "\"bytes\":{\"client_to_upstream\":\(t.bytesOutbound),\"upstream_to_client\":\(t.bytesInbound)},"
        s += "\"per_loop\":["
        s += loops.enumerated().map { i, c in
            "{\"loop\":\(i),\"active\":\(c.active),\"accepted\":\(c.accepted),\"pipes_in_use\":\(c.pipesInUse),\"pipes_cached\":\(c.pipesCached)}"
        }.joined(separator: ",")
        s +=
            "],\"mesh\":{\"version\":\(meshVersion),\"source\":\"\(jsonEscape(meshSource))\",\"services\":\(meshServices)}"
        s += ",\"kernel_tls\":\"\(jsonEscape(kernelTLS))\""
        s += ",\"mtls\":\(mtls)"
        s += ",\"pods\":"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        s += String(decoding: (try? encoder.encode(pods)) ?? Data("[]".utf8), as: UTF8.self)
        s += "}"
        return s
    }
}

/// Escapes a string for a JSON string literal.
public func jsonEscape(_ s: String) -> String {
    var out = ""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 {
                out +=
                    "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
                    + String(scalar.value, radix: 16)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out
}
