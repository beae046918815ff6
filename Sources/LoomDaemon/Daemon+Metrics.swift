// `GET /metrics`: Prometheus text rendered at scrape time from the counters the loops,
// pods, services, controller and trace hub already keep. Labels stay bounded: pods are
// this node's, services only those that carried a connection.
import LoomRelay
import LoomSystem
import LoomTrace
import Synchronization

extension Daemon {
    public func metricsText() -> String {
        var p = PrometheusText()
        let loopCounters = loops.map { $0.stats.snapshot() }
        let total = loopCounters.reduce(LoopCounters(), +)
        let pods = controller?.podContexts() ?? []

        func podLabels(_ pod: PodContext) -> PrometheusText.Labels {
            [("namespace", pod.namespace), ("pod", pod.name)]
        }
        p.counter(
            "loom_connections_opened_total",
            "Connections accepted from intercepted pods (outbound and inbound capture).",
            pods.map { (podLabels($0), Double($0.stats.snapshot().accepted)) }
        )
        p.gauge(
            "loom_connections_active",
            "Connections open now.",
            pods.map { (podLabels($0), Double($0.stats.snapshot().active)) }
        )
        var closed: [(PrometheusText.Labels, Double)] = []
        for pod in pods {
            for code in EndCode.allCases {
                let n = pod.stats.closed[code.rawValue].value
                if n > 0 { closed.append((podLabels(pod) + [("reason", code.label)], Double(n))) }
            }
        }
        p.counter(
            "loom_connections_closed_total",
            "Connections ended, by how they ended (fin, client_reset, upstream_refused, ...).",
            closed
        )
        p.counter(
            "loom_bytes_total",
            "Bytes relayed: direction client_to_upstream or upstream_to_client.",
            pods.flatMap {
                [
                    (podLabels($0) + [("direction", "client_to_upstream")], Double($0.stats.bytesOut.value)),
                    (podLabels($0) + [("direction", "upstream_to_client")], Double($0.stats.bytesIn.value)),
                ]
            }
        )

        let runtime = mesh.runtime
        let used = zip(runtime.snapshot.services, runtime.counters).filter { $0.1.total.load(ordering: .relaxed) > 0 }
        func load(_ a: borrowing Atomic<Int>) -> Double { Double(a.load(ordering: .relaxed)) }
        p.counter(
            "loom_service_connections_total",
            "Connections routed to a service.",
            used.map { ([("service", $0.0.qualifiedName)], load($0.1.total)) }
        )
        p.gauge(
            "loom_service_connections_active",
            "Connections to a service open now.",
            used.map { ([("service", $0.0.qualifiedName)], load($0.1.active)) }
        )
        p.counter(
            "loom_service_connections_failed_total",
            "Connections to a service that ended in a reset, refusal or timeout.",
            used.map { ([("service", $0.0.qualifiedName)], load($0.1.failed)) }
        )
        p.counter(
            "loom_service_connect_failures_total",
            "Upstream connects to a service's endpoints that failed (each retry counts).",
            used.map { ([("service", $0.0.qualifiedName)], load($0.1.connectFailures)) }
        )
        p.counter(
            "loom_service_bytes_total",
            "Bytes relayed for a service's connections.",
            used.flatMap {
                [
                    (
                        [("service", $0.0.qualifiedName), ("direction", "client_to_upstream")],
                        Double($0.1.bytesOut.load(ordering: .relaxed))
                    ),
                    (
                        [("service", $0.0.qualifiedName), ("direction", "upstream_to_client")],
                        Double($0.1.bytesIn.load(ordering: .relaxed))
                    ),
                ]
            }
        )
        p.counter(
            "loom_routing_decisions_total",
            "What the mesh decided for new connections.",
            RoutingDecision.allCases.map { decision in
                (
                    [("decision", decision.label)],
                    Double(loops.reduce(0) { $0 + $1.metrics.decisions[decision.rawValue].value })
                )
            }
        )
        p.counter(
            "loom_policy_denials_total",
            "Connections the mesh's policy refused (unmatched destination, circuit breaker, malformed first bytes, loops).",
            EndCode.allCases.filter(\.isDenial).map { code in
                ([("reason", code.label)], Double(pods.reduce(0) { $0 + $1.stats.closed[code.rawValue].value }))
            }
        )
        let bounds = LatencyHistogram.boundsMicros.map { Double($0) / 1_000_000 }
        var cumulative = Array(repeating: 0, count: bounds.count + 1)
        var sum = 0
        for loop in loops {
            for (i, n) in loop.metrics.connectLatency.cumulative().enumerated() { cumulative[i] += n }
            sum += loop.metrics.connectLatency.sumMicros.value
        }
        p.histogram(
            "loom_upstream_connect_seconds",
            "Time from starting an upstream connect to its completion.",
            bounds: bounds,
            cumulative: cumulative,
            sum: Double(sum) / 1_000_000
        )
        if certificates != nil {
            p.counter(
                "loom_tls_handshakes_total",
                "Completed mTLS handshakes: role client (outbound tunnel) or server (tunnel port).",
                [
                    ([("role", "client")], Double(loops.reduce(0) { $0 + $1.metrics.handshakesClient.value })),
                    ([("role", "server")], Double(loops.reduce(0) { $0 + $1.metrics.handshakesServer.value })),
                ]
            )
            p.counter(
                "loom_tls_handshakes_resumed_total",
                "Of the completed mTLS handshakes, those that resumed an earlier session (no certificate exchange).",
                [([], Double(loops.reduce(0) { $0 + $1.metrics.handshakesResumed.value }))]
            )
            var handshakes = Array(repeating: 0, count: bounds.count + 1)
            var handshakeSum = 0
            for loop in loops {
                for (i, n) in loop.metrics.handshakeLatency.cumulative().enumerated() { handshakes[i] += n }
                handshakeSum += loop.metrics.handshakeLatency.sumMicros.value
            }
            p.histogram(
                "loom_tls_handshake_seconds",
                "Time an mTLS handshake took, from its first flight to verified peer.",
                bounds: bounds,
                cumulative: handshakes,
                sum: Double(handshakeSum) / 1_000_000
            )
            p.gauge(
                "loom_tls_copy_buffers",
                "Copy buffers (64 KiB) held by mTLS connections with bytes in flight.",
                [([], Double(total.copyBuffers))]
            )
        }
        if let programming = controller?.programming {
            p.histogram(
                "loom_rule_programming_seconds",
                "Time to install a pod's nf_tables table (one netlink batch).",
                bounds: bounds,
                cumulative: programming.cumulative(),
                sum: Double(programming.sumMicros.value) / 1_000_000
            )
        }
        p.gauge(
            "loom_pipes_in_use",
            "Pipes lent to connections with bytes in flight.",
            [([], Double(total.pipesInUse))]
        )
        p.gauge("loom_pipes_cached", "Empty pipes kept for reuse.", [([], Double(total.pipesCached))])
        p.counter(
            "loom_pipe_waits_total",
            "Times a direction waited for a pipe (page budget used up).",
            [([], Double(total.pipeWaits))]
        )
        if let budget {
            p.gauge(
                "loom_fd_budget_connections",
                "Connections the fd budget allows.",
                [([], Double(budget.maxConnections))]
            )
            p.gauge(
                "loom_fd_budget_used_connections",
                "Connections open now, against that budget.",
                [([], Double(total.active))]
            )
            p.gauge("loom_open_files_limit", "loomd's open files limit.", [([], Double(budget.fileLimit))])
        }
        p.gauge("loom_pods_intercepted", "Pods whose traffic Loom intercepts.", [([], Double(pods.count))])
        p.gauge(
            "loom_config_version",
            "Version of the mesh configuration in use (1, then one more per reload).",
            [([], Double(runtime.version))]
        )
        if let hub = traceHub {
            let s = hub.stats
            p.gauge("loom_tracers", "loomctl trace streams connected.", [([], Double(s.tracers))])
            p.gauge(
                "loom_trace_kernel_pods",
                "Pods with the NFQUEUE trace table installed.",
                [([], Double(s.kernelPods))]
            )
            p.counter("loom_trace_records_total", "Trace records produced.", [([], Double(s.records))])
            p.counter(
                "loom_trace_dropped_total",
                "Trace events lost: at the relay (the hub fell behind) or at a tracer that did not read.",
                [([("where", "relay")], Double(s.droppedAtRelay)), ([("where", "tracer")], Double(s.droppedAtTracers))]
            )
            p.counter("loom_access_log_lines_total", "Access-log lines written.", [([], Double(s.accessLogLines))])
        }
        p.gauge(
            "loom_uptime_seconds",
            "Seconds since loomd started.",
            [([], Double(SystemProcess.nowMilliseconds() - startedAt) / 1000)]
        )
        return p.text
    }
}
