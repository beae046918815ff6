// loomd's configuration file (YAML): the pods of this node and the namespaces switched
// on at start. The embedded default is empty: no pods, nothing intercepted.
//
//   namespaces:
//     shop: {intercept: true, fail: open, excludeOutboundPorts: [53]}
//   pods:
//     - {netns: web-1, namespace: shop, serviceAccount: web}
//     - {netns: batch-7, namespace: shop, intercept: false}     # opted out
import Foundation
import LoomIntercept
import Yams

/// The file as written; every field optional.
struct NodeConfigFile: Decodable {
    struct Namespace: Decodable {
        var intercept: Bool?
        var fail: String?
        var excludeOutboundPorts: [UInt16]?
        var excludeInboundPorts: [UInt16]?
        var excludeCIDRs: [String]?
    }
    struct Pod: Decodable {
        var netns: String
        var namespace: String?
        var serviceAccount: String?
        var intercept: Bool?
    }
    var namespaces: [String: Namespace]?
    var pods: [Pod]?
}

/// A configuration file that cannot be used, naming the file and what is wrong.
public struct NodeConfigError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "configuration \(path): \(message)" }
}

public enum NodeConfig {
    /// Reads a configuration file into the state it asks for.
    public static func load(path: String) throws(NodeConfigError) -> NodeState {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw NodeConfigError(path: path, message: "cannot read it: \(error.localizedDescription)")
        }
        return try parse(text, path: path)
    }

    public static func parse(_ text: String, path: String) throws(NodeConfigError) -> NodeState {
        let file: NodeConfigFile
        do {
            file = try YAMLDecoder().decode(NodeConfigFile.self, from: text)
        } catch {
            throw NodeConfigError(path: path, message: describe(error))
        }
        var state = NodeState()
        do {
            for (name, ns) in file.namespaces ?? [:] {
                let options = try InterceptOptions(
                    excludeOutboundPorts: ns.excludeOutboundPorts ?? [],
                    excludeInboundPorts: ns.excludeInboundPorts ?? [],
                    excludeCIDRs: ns.excludeCIDRs ?? [],
                    fail: FailPolicy(rawValue: ns.fail ?? "closed") ?? .closed
                ).validated()
                if let fail = ns.fail, FailPolicy(rawValue: fail) == nil {
                    throw NodeStateError.invalidFailPolicy(fail)
                }
                state.namespaces[name] = NamespacePolicy(intercept: ns.intercept ?? false, options: options)
            }
            for pod in file.pods ?? [] {
                try state.addPod(
                    PodEntry(
                        netns: pod.netns,
                        namespace: pod.namespace ?? NodeState.defaultNamespace,
                        serviceAccount: pod.serviceAccount ?? "default",
                        intercept: pod.intercept,
                        fromConfig: true
                    )
                )
            }
        } catch {
            throw NodeConfigError(path: path, message: "\(error)")
        }
        return state
    }

    /// The persisted state (`state.json`) merged over the configuration: what loomctl
    /// changed at run time wins; configured pods and namespaces the state does not
    /// mention are added.
    public static func merge(config: NodeState, saved: NodeState?) -> NodeState {
        guard var merged = saved else { return config }
        for (name, policy) in config.namespaces where merged.namespaces[name] == nil {
            merged.namespaces[name] = policy
        }
        for pod in config.pods {
            if let index = merged.pods.firstIndex(where: { $0.netns == pod.netns }) {
                merged.pods[index].fromConfig = true
            } else {
                merged.pods.append(pod)
            }
        }
        return merged
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.typeMismatch(let type, let context), DecodingError.valueNotFound(let type, let context):
            return "\(path(context)): expected \(type)"
        case DecodingError.keyNotFound(let key, let context):
            return "\(path(context)): missing '\(key.stringValue)'"
        case DecodingError.dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }

    private static func path(_ context: DecodingError.Context) -> String {
        let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? "." + $0.stringValue }.joined()
        return keys.isEmpty ? "top level" : String(keys.drop { $0 == "." })
    }
}
