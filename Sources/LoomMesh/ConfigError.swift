// What is wrong with a mesh configuration, and where: every diagnostic names the file,
// the line and column, and the field path (`services[2].ports[0].port`).

/// One problem in a configuration: `loom.yaml:12:7: services[2].ports[0].port: 70000 is out of range (1-65535)`.
public struct MeshConfigDiagnostic: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    /// 1-based; 0 when the problem has no place in the file (it cannot be read).
    public var line: Int
    /// 1-based, in Unicode scalars; 0 with `line`.
    public var column: Int
    /// The field, `services[2].ports[0].port`; empty for the file as a whole.
    public var path: String
    public var message: String

    public init(file: String, line: Int, column: Int, path: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.path = path
        self.message = message
    }

    public var description: String {
        let place = line > 0 ? "\(file):\(line):\(column)" : file
        return path.isEmpty ? "\(place): \(message)" : "\(place): \(path): \(message)"
    }
}

/// A configuration that cannot be used: every problem found (up to `limit`), one per line.
public struct MeshConfigError: Error, Sendable, CustomStringConvertible {
    /// At most this many diagnostics are kept; the rest are only counted.
    public static let limit = 20

    public var diagnostics: [MeshConfigDiagnostic]
    /// Problems found beyond `limit`.
    public var omitted: Int

    public init(diagnostics: [MeshConfigDiagnostic], omitted: Int = 0) {
        self.diagnostics = diagnostics
        self.omitted = omitted
    }

    /// A problem with the file as a whole (unreadable, not UTF-8).
    public init(file: String, message: String) {
        self.init(diagnostics: [MeshConfigDiagnostic(file: file, line: 0, column: 0, path: "", message: message)])
    }

    public var description: String {
        var lines = diagnostics.map(\.description)
        if omitted > 0 { lines.append("(\(omitted) more error\(omitted == 1 ? "" : "s") not shown)") }
        return lines.joined(separator: "\n")
    }
}
