// Prometheus text exposition (version 0.0.4), written from counters the relay already
// keeps. Nothing is registered or updated per event: a scrape reads the loops' and pods'
// relaxed atomics and renders them, so metrics cost the data path nothing (HAProxy's
// built-in exporter works the same way). ARCHITECTURE.md says why no metrics library.

/// Builds one exposition document.
public struct PrometheusText {
    public private(set) var text = ""
    private var declared: Set<String> = []

    public init() {}

    public typealias Labels = [(String, String)]

    /// A counter family: `name` should end in `_total`.
    public mutating func counter(_ name: String, _ help: String, _ samples: [(Labels, Double)]) {
        family(name, "counter", help, samples)
    }

    public mutating func gauge(_ name: String, _ help: String, _ samples: [(Labels, Double)]) {
        family(name, "gauge", help, samples)
    }

    /// A histogram from upper bounds (seconds) and cumulative counts (one per bound,
    /// then the total for +Inf), with the sum in seconds.
    public mutating func histogram(
        _ name: String,
        _ help: String,
        bounds: [Double],
        cumulative: [Int],
        sum: Double,
        labels: Labels = []
    ) {
        declare(name, "histogram", help)
        for (bound, count) in zip(bounds, cumulative) {
            line(name + "_bucket", labels + [("le", Self.number(bound))], Double(count))
        }
        let total = cumulative.last ?? 0
        line(name + "_bucket", labels + [("le", "+Inf")], Double(total))
        line(name + "_sum", labels, sum)
        line(name + "_count", labels, Double(total))
    }

    private mutating func family(_ name: String, _ type: String, _ help: String, _ samples: [(Labels, Double)]) {
        declare(name, type, help)
        for (labels, value) in samples { line(name, labels, value) }
    }

    private mutating func declare(_ name: String, _ type: String, _ help: String) {
        precondition(!declared.contains(name), "metric \(name) declared twice")
        declared.insert(name)
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    private mutating func line(_ name: String, _ labels: Labels, _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        text += " " + Self.number(value) + "\n"
    }

    /// Integers without a fraction; others as Swift prints them.
    static func number(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    /// Label values escape backslash, quote and newline.
    static func escape(_ value: String) -> String {
        var out = ""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}
