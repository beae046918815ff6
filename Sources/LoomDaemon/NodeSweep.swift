// Finding Loom's tables anywhere on the node: every named netns (`ip netns`) and every
// process's netns, except the node's own (Loom never programs it). Used by
// `loomctl uninstall`, with or without a running loomd.
import Foundation
import Logging
import LoomIntercept
import LoomSystem

public enum NodeSweep {
    /// Network namespace files on the node, one per namespace, the node's own excluded.
    public static func namespaceFiles() -> [String] {
        var seen: Set<FileIdentity> = []
        if let own = FileIdentity(path: "/proc/1/ns/net") { seen.insert(own) }
        if let own = FileIdentity(path: "/proc/self/ns/net") { seen.insert(own) }
        var files: [String] = []
        let named = (try? FileManager.default.contentsOfDirectory(atPath: "/var/run/netns")) ?? []
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter {
            $0.allSatisfy(\.isNumber)
        }
        for path in named.sorted().map({ "/var/run/netns/" + $0 }) + pids.map({ "/proc/\($0)/ns/net" }) {
            guard let identity = FileIdentity(path: path), seen.insert(identity).inserted else { continue }
            files.append(path)
        }
        return files
    }

    /// Removes `inet loom` tables that carry Loom's comment from every namespace.
    public static func removeLoomTables(logger: Logger?) -> (removed: Int, errors: [String]) {
        var removed = 0
        var errors: [String] = []
        for path in namespaceFiles() {
            guard let netns = try? NetworkNamespace.open(path) else { continue }
            defer { netns.fd.close() }
            do {
                try netns.withEntered {
                    let socket = try NetfilterSocket()
                    defer { socket.close() }
                    if try socket.hasLoomTable() || socket.hasTraceTable() {
                        try socket.remove()
                        removed += 1
                        logger?.info("removed Loom's table in \(path)")
                    }
                }
            } catch {
                errors.append("\(path): \(error)")
            }
        }
        return (removed, errors)
    }
}
