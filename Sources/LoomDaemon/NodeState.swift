// What the operator asked for, as a value: namespaces switched on or off, the pods the
// node knows, and each pod's opt-in or opt-out. Pure: the controller turns it into
// listeners and nf_tables tables, and persists it so a restarted loomd rebuilds the same
// interception.
import LoomIntercept
import LoomSystem

/// Exemptions and fail policy, as the operator gives them (namespace- or pod-wide).
public struct InterceptOptions: Codable, Equatable, Sendable {
    public var excludeOutboundPorts: [UInt16] = []
    public var excludeInboundPorts: [UInt16] = []
    /// CIDR texts, validated when given.
    public var excludeCIDRs: [String] = []
    /// `closed` or `open`.
    public var fail: String = FailPolicy.closed.rawValue

    public init(
        excludeOutboundPorts: [UInt16] = [],
        excludeInboundPorts: [UInt16] = [],
        excludeCIDRs: [String] = [],
        fail: FailPolicy = .closed
    ) {
        self.excludeOutboundPorts = excludeOutboundPorts
        self.excludeInboundPorts = excludeInboundPorts
        self.excludeCIDRs = excludeCIDRs
        self.fail = fail.rawValue
    }

    public var failPolicy: FailPolicy { FailPolicy(rawValue: fail) ?? .closed }

    /// Checks every value, naming the first bad one.
    public func validated() throws(NodeStateError) -> InterceptOptions {
        guard FailPolicy(rawValue: fail) != nil else { throw .invalidFailPolicy(fail) }
        for port in excludeOutboundPorts + excludeInboundPorts where port == 0 {
            throw .invalid(.invalidPort(option: "exclude port", value: "0"))
        }
        var copy = self
        do {
            copy.excludeCIDRs = try excludeCIDRs.map { (text) throws(InterceptError) in
                try CIDR(parsing: text).description
            }
        } catch {
            throw .invalid(error)
        }
        copy.excludeOutboundPorts = Array(Set(excludeOutboundPorts)).sorted()
        copy.excludeInboundPorts = Array(Set(excludeInboundPorts)).sorted()
        return copy
    }

    /// The rule settings for a pod with these options.
    public func settings(base: InterceptSettings) -> InterceptSettings {
        var s = base
        s.excludeOutboundPorts = excludeOutboundPorts
        s.excludeInboundPorts = excludeInboundPorts
        s.excludeCIDRs = excludeCIDRs.compactMap { try? CIDR(parsing: $0) }
        s.failPolicy = failPolicy
        return s
    }
}

/// A mesh namespace's switch.
public struct NamespacePolicy: Codable, Equatable, Sendable {
    public var intercept: Bool
    public var options: InterceptOptions

    public init(intercept: Bool, options: InterceptOptions = InterceptOptions()) {
        self.intercept = intercept
        self.options = options
    }
}

/// A pod the node knows.
public struct PodEntry: Codable, Equatable, Sendable {
    /// The netns file (`/var/run/netns/NAME`, a path, or `/proc/PID/ns/net`).
    public var netns: String
    public var namespace: String
    public var serviceAccount: String
    /// nil: follow the namespace; true: intercepted even if the namespace is not
    /// (`enable --netns`); false: opted out (`disable --netns`).
    public var intercept: Bool?
    /// Pod-wide options replacing the namespace's (nil: the namespace's).
    public var options: InterceptOptions?
    /// Listed in loomd's configuration (kept, waiting, while its netns is missing);
    /// otherwise added at run time and forgotten when its netns is deleted.
    public var fromConfig: Bool

    public init(
        netns: String,
        namespace: String,
        serviceAccount: String = "default",
        intercept: Bool? = nil,
        options: InterceptOptions? = nil,
        fromConfig: Bool = false
    ) {
        self.netns = NetworkNamespace.resolvePath(netns)
        self.namespace = namespace
        self.serviceAccount = serviceAccount
        self.intercept = intercept
        self.options = options
        self.fromConfig = fromConfig
    }
}

/// Which pods a command is about.
public struct Selector: Codable, Equatable, Sendable {
    public var namespace: String?
    public var netns: String?

    public init(namespace: String? = nil, netns: String? = nil) {
        self.namespace = namespace
        self.netns = netns
    }
}

/// A request the node state cannot take, naming the value.
public enum NodeStateError: Error, Equatable, CustomStringConvertible, Sendable {
    case noSelector(command: String)
    case conflictingNamespace(netns: String, has: String, given: String)
    case unknownPod(String)
    case unknownNamespace(String)
    case invalid(InterceptError)
    case invalidFailPolicy(String)

    public var description: String {
        switch self {
        case .noSelector(let command):
            return "\(command) needs --namespace NS or --netns NAME|PATH|PID"
        case .conflictingNamespace(let netns, let has, let given):
            return "conflicting selector: pod \(netns) is in namespace '\(has)', not '\(given)'"
        case .unknownPod(let netns):
            return "pod \(netns) is not known to loomd; add it with `loomctl pod add` or `loomctl enable --netns`"
        case .unknownNamespace(let ns):
            return "namespace '\(ns)' has no pods and no policy; nothing to disable"
        case .invalid(let error):
            return error.description
        case .invalidFailPolicy(let value):
            return "fail policy must be 'closed' or 'open' (got '\(value)')"
        }
    }
}

/// Everything the operator decided about interception on this node.
public struct NodeState: Codable, Equatable, Sendable {
    public var namespaces: [String: NamespacePolicy] = [:]
    public var pods: [PodEntry] = []

    public init(namespaces: [String: NamespacePolicy] = [:], pods: [PodEntry] = []) {
        self.namespaces = namespaces
        self.pods = pods
    }

    public static let defaultNamespace = "default"

    public func pod(_ netns: String) -> PodEntry? {
        let path = NetworkNamespace.resolvePath(netns)
        return pods.first { $0.netns == path }
    }

    /// The options a pod is intercepted with, or nil if it is not intercepted.
    public func effectiveOptions(_ pod: PodEntry) -> InterceptOptions? {
        let policy = namespaces[pod.namespace]
        guard pod.intercept ?? policy?.intercept ?? false else { return nil }
        return pod.options ?? policy?.options ?? InterceptOptions()
    }

    /// Adds a pod (or checks that a known pod is in `namespace`).
    public mutating func addPod(_ entry: PodEntry) throws(NodeStateError) {
        if let known = pod(entry.netns) {
            guard known.namespace == entry.namespace else {
                throw .conflictingNamespace(netns: entry.netns, has: known.namespace, given: entry.namespace)
            }
            return
        }
        pods.append(entry)
    }

    public mutating func removePod(_ netns: String) throws(NodeStateError) {
        let path = NetworkNamespace.resolvePath(netns)
        guard let index = pods.firstIndex(where: { $0.netns == path }) else { throw .unknownPod(path) }
        pods.remove(at: index)
    }

    /// `enable`: a namespace (with its options), or one pod (registered if new).
    public mutating func enable(_ selector: Selector, options: InterceptOptions?) throws(NodeStateError) {
        try setIntercept(true, selector, options: options, command: "enable")
    }

    /// `disable`: a namespace, or one pod (an opt-out that outlives namespace changes).
    public mutating func disable(_ selector: Selector) throws(NodeStateError) {
        try setIntercept(false, selector, options: nil, command: "disable")
    }

    private mutating func setIntercept(
        _ on: Bool,
        _ selector: Selector,
        options: InterceptOptions?,
        command: String
    ) throws(NodeStateError) {
        let checked = try options?.validated()
        if let netns = selector.netns {
            let path = NetworkNamespace.resolvePath(netns)
            if let index = pods.firstIndex(where: { $0.netns == path }) {
                if let ns = selector.namespace, ns != pods[index].namespace {
                    throw .conflictingNamespace(netns: path, has: pods[index].namespace, given: ns)
                }
                pods[index].intercept = on
                if on { pods[index].options = checked }
            } else {
                guard on else { throw .unknownPod(path) }
                pods.append(
                    PodEntry(
                        netns: path,
                        namespace: selector.namespace ?? Self.defaultNamespace,
                        intercept: true,
                        options: checked
                    )
                )
            }
            return
        }
        guard let ns = selector.namespace else { throw .noSelector(command: command) }
        if on {
            namespaces[ns] = NamespacePolicy(intercept: true, options: checked ?? InterceptOptions())
        } else {
            guard namespaces[ns] != nil || pods.contains(where: { $0.namespace == ns }) else {
                throw .unknownNamespace(ns)
            }
            namespaces[ns, default: NamespacePolicy(intercept: false)].intercept = false
        }
    }
}
