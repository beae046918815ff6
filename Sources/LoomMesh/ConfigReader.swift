// Reading YAML nodes (Yams' node API, not Codable) into typed values, with every
// problem recorded as a diagnostic that names the file, line, column and field path.
// The document is composed with Yams' basic resolver: every scalar stays text and this
// file decides what is a number, a boolean or null (plain style only; "80" is a string).
import Yams

/// Where a diagnostic points: the node's line and column, and its field path.
struct ConfigSpot {
    var line: Int
    var column: Int
    var path: String

    init(line: Int, column: Int, path: String) {
        self.line = line
        self.column = column
        self.path = path
    }

    init(_ node: Node?, _ path: String) {
        self.init(line: node?.mark?.line ?? 0, column: node?.mark?.column ?? 0, path: path)
    }

    /// `services[0] (line 3)`, to point at an earlier definition.
    var reference: String { line > 0 ? "\(path) at line \(line)" : path }
}

/// A mapping whose keys were checked against the ones allowed; null values are left out.
struct ConfigMap {
    let node: Node
    let path: String
    var fields: [(name: String, key: Node, value: Node)] = []

    func value(_ name: String) -> Node? {
        for field in fields where field.name == name { return field.value }
        return nil
    }

    func child(_ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }
    func spot(_ name: String) -> ConfigSpot { ConfigSpot(value(name) ?? node, child(name)) }
}

extension Node {
    /// A plain `~`, `null` or nothing: the field counts as absent.
    var isNull: Bool {
        guard case .scalar(let scalar) = self, scalar.style == .plain || scalar.style == .any else { return false }
        switch scalar.string {
        case "", "~", "null", "Null", "NULL": return true
        default: return false
        }
    }

    /// For messages: `'80x'`, `the string "80"`, `a list`.
    var summary: String {
        switch self {
        case .scalar(let scalar):
            return scalar.style == .plain || scalar.style == .any
                ? "'\(scalar.string)'" : "the string \"\(scalar.string)\""
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }
}

/// Reads nodes and collects diagnostics (errors capped at `MeshConfigError.limit`).
final class ConfigReader {
    let file: String
    private(set) var errors: [MeshConfigDiagnostic] = []
    private(set) var warnings: [MeshConfigDiagnostic] = []
    /// Every error found, kept or not.
    private(set) var errorCount = 0

    init(file: String) { self.file = file }

    /// False once errors are only counted: costly hints are not worth computing then.
    var keepsMore: Bool { errors.count < MeshConfigError.limit }

    var failure: MeshConfigError { MeshConfigError(diagnostics: errors, omitted: errorCount - errors.count) }

    func error(_ spot: ConfigSpot, _ message: String) {
        errorCount += 1
        if errors.count < MeshConfigError.limit { errors.append(diagnostic(spot, message)) }
    }

    func error(_ node: Node?, _ path: String, _ message: String) { error(ConfigSpot(node, path), message) }

    func warning(_ spot: ConfigSpot, _ message: String) {
        if warnings.count < MeshConfigError.limit { warnings.append(diagnostic(spot, message)) }
    }

    private func diagnostic(_ spot: ConfigSpot, _ message: String) -> MeshConfigDiagnostic {
        MeshConfigDiagnostic(file: file, line: spot.line, column: spot.column, path: spot.path, message: message)
    }

    // MARK: Documents

    /// The document's root, nil when it is empty or malformed (then with an error).
    func compose(_ text: String) -> Node? {
        do {
            return try Yams.compose(yaml: text, Resolver.basic)
        } catch let error as YamlError {
            report(error, in: text)
        } catch {
            self.error(nil, "", "malformed YAML: \(error)")
        }
        return nil
    }

    private func report(_ yamlError: YamlError, in text: String) {
        func located(_ line: Int, _ column: Int, _ message: String) {
            error(ConfigSpot(line: line, column: column, path: ""), "malformed YAML: " + message)
        }
        func detail(_ context: YamlError.Context?, _ problem: String) -> String {
            guard let context else { return problem }
            return "\(problem) (\(context.text) at line \(context.mark.line), column \(context.mark.column))"
        }
        switch yamlError {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            located(mark.line, mark.column, detail(context, problem))
        case .reader(let problem, let offset, _, _):
            let prefix = text.utf8.prefix(offset ?? 0)
            let line = prefix.reduce(1) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
            let column = prefix.reversed().prefix { $0 != UInt8(ascii: "\n") }.count + 1
            located(line, column, problem)
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.map { "'\($0)'" }.joined(separator: ", ")
            located(context.mark.line, context.mark.column, "duplicate key \(keys) in one mapping")
        default:
            error(nil, "", "malformed YAML: \(yamlError)")
        }
    }

    // MARK: Shapes

    /// A mapping whose keys must be among `keys` (an unknown key is an error, with a
    /// suggestion when one is close).
    func map(_ node: Node, _ path: @autoclosure () -> String, keys: [String]) -> ConfigMap? {
        guard case .mapping(let mapping) = node else {
            error(node, path(), "expected a mapping, got \(node.summary)")
            return nil
        }
        var result = ConfigMap(node: node, path: path())
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key else {
                error(key, result.path, "expected a field name, got \(key.summary)")
                continue
            }
            guard keys.contains(scalar.string) else {
                if scalar.string == "<<" {
                    error(key, result.path, "YAML merge keys (<<) are not supported; write the fields out")
                    continue
                }
                let hint = Self.suggestion(for: scalar.string, among: keys).map { "did you mean '\($0)'?" }
                let known = "known: " + keys.joined(separator: ", ")
                error(key, result.child(scalar.string), "unknown field '\(scalar.string)' (\(hint ?? known))")
                continue
            }
            if !value.isNull { result.fields.append((scalar.string, key, value)) }
        }
        return result
    }

    /// A mapping with names of the user's choosing as keys (namespaces, headers).
    func entries(_ node: Node, _ path: @autoclosure () -> String) -> [(name: String, key: Node, value: Node)]? {
        guard case .mapping(let mapping) = node else {
            error(node, path(), "expected a mapping, got \(node.summary)")
            return nil
        }
        return mapping.compactMap { key, value in
            guard case .scalar(let scalar) = key else {
                error(key, path(), "expected a name, got \(key.summary)")
                return nil
            }
            return (scalar.string, key, value)
        }
    }

    func list(_ node: Node, _ path: @autoclosure () -> String) -> [Node]? {
        guard case .sequence(let sequence) = node else {
            error(node, path(), "expected a list, got \(node.summary)")
            return nil
        }
        return Array(sequence)
    }

    /// A field that must be present (and not null).
    func required(_ map: ConfigMap, _ name: String) -> Node? {
        if let value = map.value(name) { return value }
        error(map.node, map.child(name), "missing (required)")
        return nil
    }

    // MARK: Scalars

    func string(_ node: Node, _ path: @autoclosure () -> String) -> String? {
        guard case .scalar(let scalar) = node else {
            error(node, path(), "expected a string, got \(node.summary)")
            return nil
        }
        return scalar.string
    }

    func int(_ node: Node, _ path: @autoclosure () -> String, _ range: ClosedRange<Int>) -> Int? {
        guard case .scalar(let scalar) = node, scalar.style == .plain, let value = Int(scalar.string) else {
            error(node, path(), "expected an integer, got \(node.summary)")
            return nil
        }
        guard range.contains(value) else {
            let bounds =
                range.upperBound == Int.max ? "\(range.lowerBound) or more" : "\(range.lowerBound)-\(range.upperBound)"
            error(node, path(), "\(value) is out of range (\(bounds))")
            return nil
        }
        return value
    }

    func port(_ node: Node, _ path: @autoclosure () -> String) -> UInt16? {
        int(node, path(), 1...65535).map { UInt16($0) }
    }

    func bool(_ node: Node, _ path: @autoclosure () -> String) -> Bool? {
        if case .scalar(let scalar) = node, scalar.style == .plain {
            switch scalar.string {
            case "true", "True", "TRUE": return true
            case "false", "False", "FALSE": return false
            default: break
            }
        }
        error(node, path(), "expected true or false, got \(node.summary)")
        return nil
    }

    /// `250ms`, `5s`, `1m`, `1h` (a whole number and a unit), in milliseconds, above 0.
    func duration(_ node: Node, _ path: @autoclosure () -> String) -> Int64? {
        guard let text = string(node, path()) else { return nil }
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let units: [Substring: Int64] = ["ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000]
        guard !digits.isEmpty, let unit = units[text.dropFirst(digits.count)], let count = Int64(digits) else {
            error(node, path(), "'\(text)' is not a duration (a whole number and ms, s, m or h: 250ms, 5s, 1m)")
            return nil
        }
        let (ms, overflow) = count.multipliedReportingOverflow(by: unit)
        guard !overflow, ms > 0, ms <= 365 * 86_400_000 else {
            error(node, path(), "'\(text)' is out of range (1ms to 365 days)")
            return nil
        }
        return ms
    }

    /// One of an enumeration's raw values, with a suggestion when the text is close to one.
    func choice<E: RawRepresentable & CaseIterable>(
        _ node: Node,
        _ path: @autoclosure () -> String,
        _ what: String
    ) -> E? where E.RawValue == String {
        guard let text = string(node, path()) else { return nil }
        if let value = E(rawValue: text) { return value }
        let names = E.allCases.map(\.rawValue)
        let hint = Self.suggestion(for: text, among: names).map { "did you mean '\($0)'?" }
        error(node, path(), "unknown \(what) '\(text)' (\(hint ?? "expected " + names.joined(separator: ", ")))")
        return nil
    }

    // MARK: Fields of a checked mapping

    func string(_ map: ConfigMap, _ name: String) -> String? {
        map.value(name).flatMap { string($0, map.child(name)) }
    }

    func int(_ map: ConfigMap, _ name: String, _ range: ClosedRange<Int>) -> Int? {
        map.value(name).flatMap { int($0, map.child(name), range) }
    }

    func port(_ map: ConfigMap, _ name: String) -> UInt16? {
        map.value(name).flatMap { port($0, map.child(name)) }
    }

    func bool(_ map: ConfigMap, _ name: String) -> Bool? {
        map.value(name).flatMap { bool($0, map.child(name)) }
    }

    func duration(_ map: ConfigMap, _ name: String) -> Int64? {
        map.value(name).flatMap { duration($0, map.child(name)) }
    }

    func choice<E: RawRepresentable & CaseIterable>(
        _ map: ConfigMap,
        _ name: String,
        _ what: String
    ) -> E? where E.RawValue == String {
        map.value(name).flatMap { choice($0, map.child(name), what) }
    }

    /// A list of ports (`[53, 8080]`).
    func ports(_ map: ConfigMap, _ name: String) -> [UInt16] {
        guard let node = map.value(name), let items = list(node, map.child(name)) else { return [] }
        return items.enumerated().compactMap { i, item in port(item, "\(map.child(name))[\(i)]") }
    }

    // MARK: Suggestions

    /// The candidate closest to `word` (ignoring case), if it is close enough to be a typo.
    static func suggestion(for word: String, among candidates: [String]) -> String? {
        let typed = Array(word.lowercased())
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let target = Array(candidate.lowercased())
            let distance = editDistance(typed, target)
            let allowed = max(1, min(3, target.count / 3))
            if distance <= allowed, distance < (best?.distance ?? Int.max) { best = (candidate, distance) }
        }
        return best?.candidate
    }

    /// Edits (insert, delete, replace, swap neighbours) that turn `a` into `b`.
    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
        var before = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    current[j] = min(current[j], before[j - 2] + 1)
                }
            }
            (before, previous, current) = (previous, current, before)
        }
        return previous[b.count]
    }
}
