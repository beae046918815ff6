// `GET /v1/top`: cumulative per-service and per-pod counters; `loomctl top` polls it and
// turns the differences into rates.
import Foundation
import LoomRelay
import LoomSystem
import LoomTrace
import Synchronization

/// One row of `loomctl top`: cumulative counts at `atMs`.
public struct TopRow: Codable, Equatable, Sendable {
    public var name: String
    public var connections: Int
    public var active: Int
    public var errors: Int
    public var bytesOut: UInt64
    public var bytesIn: UInt64

    public init(name: String, connections: Int, active: Int, errors: Int, bytesOut: UInt64, bytesIn: UInt64) {
        self.name = name
        self.connections = connections
        self.active = active
        self.errors = errors
        self.bytesOut = bytesOut
        self.bytesIn = bytesIn
    }
}

public struct TopReport: Codable, Equatable, Sendable {
    /// Monotonic milliseconds of loomd when taken.
    public var atMs: Int64
    public var services: [TopRow]
    public var pods: [TopRow]

    public init(atMs: Int64, services: [TopRow], pods: [TopRow]) {
        self.atMs = atMs
        self.services = services
        self.pods = pods
    }

    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }
}

extension Daemon {
    func topReport() -> TopReport {
        let runtime = mesh.runtime
        var services: [TopRow] = []
        for (service, c) in zip(runtime.snapshot.services, runtime.counters) {
            let total = c.total.load(ordering: .relaxed)
            let rejected = c.rejected.load(ordering: .relaxed)
            guard total > 0 || rejected > 0 else { continue }
            services.append(
                TopRow(
                    name: service.qualifiedName,
                    connections: total + rejected,
                    active: c.active.load(ordering: .relaxed),
                    errors: c.failed.load(ordering: .relaxed) + rejected,
                    bytesOut: c.bytesOut.load(ordering: .relaxed),
                    bytesIn: c.bytesIn.load(ordering: .relaxed)
                )
            )
        }
        let pods = (controller?.podContexts() ?? []).map { pod in
            let s = pod.stats.snapshot()
            return TopRow(
                name: pod.name,
                connections: s.accepted,
                active: s.active,
                errors: s.failed + s.refused,
                bytesOut: UInt64(pod.stats.bytesOut.value),
                bytesIn: UInt64(pod.stats.bytesIn.value)
            )
        }
        return TopReport(atMs: SystemProcess.nowMilliseconds(), services: services, pods: pods)
    }
}
