// A loaded mesh configuration and where configurations come from. A file is the only
// source today; a distributed registry will be another `MeshSource`.
import Foundation

/// Everything one configuration says: the validated mesh, and the interception settings
/// loomd maps onto its own node state (kept as written, so LoomMesh needs no LoomDaemon).
public struct MeshConfig: Sendable {
    public var snapshot: MeshSnapshot
    /// `namespaces:` by name.
    public var namespaces: [String: NamespaceConfig]
    /// `pods:` in file order.
    public var pods: [PodConfig]
    /// Problems that do not stop the configuration (routes that can never match).
    public var warnings: [MeshConfigDiagnostic]

    public init(
        snapshot: MeshSnapshot,
        namespaces: [String: NamespaceConfig] = [:],
        pods: [PodConfig] = [],
        warnings: [MeshConfigDiagnostic] = []
    ) {
        self.snapshot = snapshot
        self.namespaces = namespaces
        self.pods = pods
        self.warnings = warnings
    }

    /// Parses and validates a configuration; `file` names it in diagnostics.
    public static func parse(_ yaml: String, file: String) throws(MeshConfigError) -> MeshConfig {
        try ConfigParser(file: file).parse(yaml)
    }

    /// Reads, parses and validates a configuration file.
    public static func load(path: String) throws(MeshConfigError) -> MeshConfig {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw MeshConfigError(file: path, message: "cannot read it: \(error.localizedDescription)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw MeshConfigError(file: path, message: "is not UTF-8 text")
        }
        return try parse(text, file: path)
    }
}

/// A mesh namespace's interception settings, as written under `namespaces:`. Unset
/// fields are nil or empty; loomd applies its own defaults.
public struct NamespaceConfig: Sendable, Equatable {
    /// What intercepted connections do while loomd is gone.
    public enum FailPolicy: String, Sendable, CaseIterable {
        case closed
        case open
    }

    public var intercept: Bool?
    public var fail: FailPolicy?
    public var excludeOutboundPorts: [UInt16]
    public var excludeInboundPorts: [UInt16]
    /// Prefixes as written (`10.96.0.0/12`, `fd00::/8`, or a bare address); syntax checked.
    public var excludeCIDRs: [String]
    /// What happens to destinations that are no service (also in the snapshot).
    public var unmatched: UnmatchedPolicy?
    /// Write one access-log line per connection of this namespace's pods.
    public var accessLog: Bool?
    /// Whether plaintext inbound connections are accepted (also in the snapshot).
    public var mtls: MTLSMode?

    public init(
        intercept: Bool? = nil,
        fail: FailPolicy? = nil,
        excludeOutboundPorts: [UInt16] = [],
        excludeInboundPorts: [UInt16] = [],
        excludeCIDRs: [String] = [],
        unmatched: UnmatchedPolicy? = nil,
        accessLog: Bool? = nil,
        mtls: MTLSMode? = nil
    ) {
        self.intercept = intercept
        self.fail = fail
        self.excludeOutboundPorts = excludeOutboundPorts
        self.excludeInboundPorts = excludeInboundPorts
        self.excludeCIDRs = excludeCIDRs
        self.unmatched = unmatched
        self.accessLog = accessLog
        self.mtls = mtls
    }
}

/// A pod as written under `pods:`.
public struct PodConfig: Sendable, Equatable {
    /// `ip netns` name, netns path, or PID.
    public var netns: String
    public var namespace: String?
    public var serviceAccount: String?
    /// nil: follow the namespace; false: opted out; true: opted in.
    public var intercept: Bool?

    public init(netns: String, namespace: String? = nil, serviceAccount: String? = nil, intercept: Bool? = nil) {
        self.netns = netns
        self.namespace = namespace
        self.serviceAccount = serviceAccount
        self.intercept = intercept
    }
}

/// Somewhere mesh configurations come from: a file today, a registry later.
public protocol MeshSource: Sendable {
    /// For logs and status: a path, a URL.
    var name: String { get }
    /// The current configuration, validated.
    func load() throws(MeshConfigError) -> MeshConfig
}

/// A YAML file, read again on every `load()`.
public struct FileMeshSource: MeshSource {
    public let path: String
    public init(path: String) { self.path = path }
    public var name: String { path }
    public func load() throws(MeshConfigError) -> MeshConfig { try MeshConfig.load(path: path) }
}

/// YAML held in memory (tests, an embedded default).
public struct TextMeshSource: MeshSource {
    public let name: String
    public let yaml: String
    public init(name: String, yaml: String) {
        self.name = name
        self.yaml = yaml
    }
    public func load() throws(MeshConfigError) -> MeshConfig { try MeshConfig.parse(yaml, file: name) }
}
