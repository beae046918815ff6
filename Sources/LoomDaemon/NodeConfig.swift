// loomd's configuration file (YAML, parsed strictly by LoomMesh: every error names the
// file, line, column and field): the pods of this node, the namespaces switched on at
// start, and the mesh (services, endpoints, routes). The embedded default is empty: no
// pods, nothing intercepted, no services (pass-through).
import LoomIntercept
import LoomMesh

/// A configuration file that cannot be used, naming the file and what is wrong.
public struct NodeConfigError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { message.hasPrefix(path) ? message : "configuration \(path): \(message)" }
}

public enum NodeConfig {
    /// Reads a configuration file: the interception state it asks for, and the mesh.
    public static func load(path: String) throws(NodeConfigError) -> (state: NodeState, mesh: MeshConfig) {
        let mesh: MeshConfig
        do {
            mesh = try MeshConfig.load(path: path)
        } catch {
            throw NodeConfigError(path: path, message: error.description)
        }
        return (try state(of: mesh, path: path), mesh)
    }

    /// Parses configuration text (tests, `loomctl config validate`).
    public static func parse(_ text: String, path: String) throws(NodeConfigError) -> NodeState {
        do {
            return try state(of: try MeshConfig.parse(text, file: path), path: path)
        } catch let error as NodeConfigError {
            throw error
        } catch {
            throw NodeConfigError(path: path, message: "\(error)")
        }
    }

    /// The interception part of a configuration as node state.
    public static func state(of config: MeshConfig, path: String) throws(NodeConfigError) -> NodeState {
        var state = NodeState()
        do {
            for (name, ns) in config.namespaces {
                let options = try InterceptOptions(
                    excludeOutboundPorts: ns.excludeOutboundPorts,
                    excludeInboundPorts: ns.excludeInboundPorts,
                    excludeCIDRs: ns.excludeCIDRs,
                    fail: ns.fail.flatMap { FailPolicy(rawValue: $0.rawValue) } ?? .closed
                ).validated()
                state.namespaces[name] = NamespacePolicy(intercept: ns.intercept ?? false, options: options)
            }
            for pod in config.pods {
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
}
