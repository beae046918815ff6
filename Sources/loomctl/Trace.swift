// `loomctl trace`, `loomctl top`, `loomctl metrics`: watching connections live.
import ArgumentParser
import Foundation
import LoomDaemon
import LoomSystem
import LoomTrace

#if canImport(Glibc)
    import Glibc
#endif

struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream one line per connection event: the kernel's decision and the proxy's.",
        discussion: """
            Each line joins what the kernel decided for the connection's first packet (redirected \
            to Loom or bypassed, and the rule that decided: excluded port, excluded CIDR, \
            loopback, ...) with what Loom did (service, route, endpoint, bytes each way, \
            duration, how it ended). While a trace runs, loomd adds an NFQUEUE rule (with \
            `bypass`) for new TCP connections in the traced pods and removes it when the trace \
            ends; if loomd dies mid-trace, traffic is unaffected. With no filter, every \
            intercepted pod is traced. Stop with Ctrl-C.
            """
    )
    @Option(name: .long, help: "Trace every intercepted pod of this mesh namespace (now and later).")
    var namespace: String?
    @Option(name: .long, help: "Trace one pod: its netns name, path or PID.")
    var netns: String?
    @Option(name: .long, help: "Only connections to this service (name or namespace/name).")
    var service: String?
    @Option(name: .long, help: "Only connections to this destination port.")
    var port: UInt16?
    @Flag(name: .long, help: "Print JSON lines instead of human-readable ones.")
    var json = false
    @Option(name: .long, help: "Stop after this many records.")
    var count: Int?
    @Option(name: .long, help: "Stop after this many seconds.")
    var duration: Double?
    @OptionGroup var admin: AdminOptions

    func validate() throws {
        if let count, count <= 0 { throw ValidationError("--count must be at least 1") }
        if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
        if port == 0 { throw ValidationError("--port must be 1-65535") }
    }

    func run() throws {
        var query: [String] = []
        func add(_ key: String, _ value: String?) {
            guard let value else { return }
            let escaped =
                value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(.init(charactersIn: "-._~/")))
                ?? value
            query.append("\(key)=\(escaped)")
        }
        add("namespace", namespace)
        add("netns", netns)
        add("service", service)
        add("port", port.map(String.init))
        let path = "/v1/trace" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        let colour = !json && isatty(1) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
        let deadline = duration.map { Date().addingTimeInterval($0) }
        var seen = 0
        let client = AdminClient(path: admin.adminSocket)
        try client.stream(path, idleCheck: { deadline.map { Date() >= $0 } ?? false }) { line in
            if json {
                emit(line)
            } else if let record = TraceRecord.parse(line) {
                emit(record.human(colour: colour))
            } else {
                emit(line)
            }
            if record(line) { seen += 1 }
            if let count, seen >= count { return false }
            if let deadline, Date() >= deadline { return false }
            return true
        }
    }

    /// Whether a line counts toward --count (`dropped` notices do not).
    private func record(_ line: String) -> Bool { !line.contains("\"event\":\"dropped\"") }
}

struct Top: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A live view of services and pods: new connections/s, active, throughput each way, errors/s.",
        discussion: "Refreshed every second (--interval). Press Ctrl-C to leave."
    )
    @Option(name: .long, help: "Seconds between refreshes.")
    var interval: Double = 1
    @Option(name: .long, help: "Stop after this many refreshes (default: run until interrupted).")
    var iterations: Int?
    @OptionGroup var admin: AdminOptions

    func validate() throws {
        if interval < 0.1 { throw ValidationError("--interval must be at least 0.1 seconds") }
        if let iterations, iterations <= 0 { throw ValidationError("--iterations must be at least 1") }
    }

    func run() throws {
        let client = AdminClient(path: admin.adminSocket)
        let terminal = isatty(1) == 1
        var previous = try fetch(client)
        var done = 0
        while iterations.map({ done < $0 }) ?? true {
            Thread.sleep(forTimeInterval: interval)
            let current = try fetch(client)
            let screen = TopScreen.render(previous: previous, current: current)
            // Clear and home on a terminal; a plain separator when piped.
            emit(terminal ? "\u{1b}[H\u{1b}[2J" + screen : screen + "\n")
            previous = current
            done += 1
        }
    }

    private func fetch(_ client: AdminClient) throws -> TopReport {
        let (status, body) = try client.call("GET", "/v1/top")
        guard status == 200, let report = try? JSONDecoder().decode(TopReport.self, from: Data(body.utf8)) else {
            throw LoomdError(description: (try? AdminReply.parse(body).error) ?? "loomd answered \(status): \(body)")
        }
        return report
    }
}

/// The text of one `loomctl top` refresh.
enum TopScreen {
    static func render(previous: TopReport, current: TopReport) -> String {
        let seconds = max(0.001, Double(current.atMs - previous.atMs) / 1000)
        func rows(_ now: [TopRow], _ before: [TopRow]) -> [String] {
            let old = Dictionary(before.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            return now.map { row in
                let last = old[row.name]
                let new = Double(row.connections - (last?.connections ?? 0)) / seconds
                let out = Double(row.bytesOut &- (last?.bytesOut ?? 0)) / seconds
                let inn = Double(row.bytesIn &- (last?.bytesIn ?? 0)) / seconds
                let errors = Double(row.errors - (last?.errors ?? 0)) / seconds
                return pad(row.name, 36) + pad(String(format: "%.1f", new), 10, right: true)
                    + pad("\(row.active)", 8, right: true) + pad(rate(out), 12, right: true)
                    + pad(rate(inn), 12, right: true) + pad(String(format: "%.1f", errors), 8, right: true)
            }
        }
        let header =
            pad("", 36) + pad("NEW/s", 10, right: true) + pad("ACTIVE", 8, right: true) + pad("OUT/s", 12, right: true)
            + pad("IN/s", 12, right: true) + pad("ERR/s", 8, right: true)
        var lines = ["loomctl top: every \(String(format: "%.1f", seconds)) s (OUT: client to upstream)", ""]
        lines.append("SERVICE" + header.dropFirst(7))
        let services = rows(current.services, previous.services)
        lines += services.isEmpty ? ["(no service has carried a connection yet)"] : services
        lines.append("")
        lines.append("POD" + header.dropFirst(3))
        let pods = rows(current.pods, previous.pods)
        lines += pods.isEmpty ? ["(no pod is intercepted)"] : pods
        return lines.joined(separator: "\n")
    }

    static func rate(_ bytesPerSecond: Double) -> String {
        let units = ["B", "kB", "MB", "GB"]
        var value = bytesPerSecond
        var unit = 0
        while value >= 1000 && unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return String(format: unit == 0 ? "%.0f%@" : "%.1f%@", value, units[unit])
    }

    static func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let cut = text.count > width - 1 ? String(text.prefix(width - 2)) + "…" : text
        let space = String(repeating: " ", count: max(0, width - cut.count))
        return right ? space + cut : cut + space
    }
}

struct Metrics: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print loomd's Prometheus metrics (what GET /metrics serves).",
        discussion: "Also: curl --unix-socket /run/loom/admin.sock http://loom/metrics, or --metrics-address on loomd."
    )
    @OptionGroup var admin: AdminOptions

    func run() throws {
        let (status, body) = try AdminClient(path: admin.adminSocket).call("GET", "/metrics")
        guard status == 200 else { throw LoomdError(description: "loomd answered \(status): \(body)") }
        print(body, terminator: "")
    }
}

/// Writes a line to standard output now (unbuffered: a trace piped into another program
/// shows each record as it happens).
func emit(_ line: String) {
    try? FileDescriptor(rawValue: 1).writeAll(line + "\n")
}
