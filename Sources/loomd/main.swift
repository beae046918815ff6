// loomd: the Loom node daemon. Parses arguments and wires the daemon together.
import ArgumentParser
import Logging
import LoomDaemon
import LoomIntercept
import LoomRelay
import LoomSystem

struct Loomd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loomd",
        abstract: "Loom node daemon: intercepts pods' TCP connections and relays them to their destination.",
        discussion: """
            loomd programs one nf_tables table (inet loom) in each intercepted pod's network \
            namespace and listens there on the capture ports. Pods come from --config, --netns, \
            or `loomctl pod add` / `loomctl enable`; the embedded default has no pods. With no \
            routing configured loomd is a transparent pass-through proxy: every redirected \
            connection goes to the destination the application asked for.
            """
    )

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Intercept this pod (namespace 'default'): a name under /var/run/netns, a path, or a PID. Repeatable.",
            valueName: "netns"
        )
    )
    var netns: [String] = []

    @Option(
        name: .long,
        help:
            "Configuration file (YAML): pods, namespaces, services and routes. Reloaded on change, SIGHUP or `loomctl reload`. Default: none (no pods, no services)."
    )
    var config: String?

    @Option(name: .long, help: "Directory for the lock and the interception state kept across restarts.")
    var stateDir: String = "/run/loom"

    @Option(name: .long, help: "Relay loops (threads). Default: one per core.")
    var loops: Int?

    @Option(name: .long, help: "Outbound capture port inside each pod.")
    var outboundPort: UInt16 = LoomPorts.outbound

    @Option(name: .long, help: "Inbound capture port inside each pod.")
    var inboundPort: UInt16 = LoomPorts.inbound

    @Option(name: .long, help: "Seconds a fail-open pod stays intercepted after loomd stops refreshing it.")
    var heartbeat: Int = 3

    @Option(name: .long, help: "SO_MARK set on upstream sockets (decimal or 0x hex); the redirect rules exempt it.")
    var mark: String = "0x" + String(LoomPorts.socketMark, radix: 16)

    @Option(name: .long, help: "Connection limit across loops. Default: what the fd and pipe budget allows.")
    var maxConnections: Int?

    @Option(name: .long, help: "Upstream connect timeout in seconds.")
    var connectTimeout: Double = 10

    @Option(name: .long, help: "Close connections idle this many seconds (0: never).")
    var idleTimeout: Double = 3600

    @Option(name: .long, help: "Bytes a bulk transfer's pipe grows to (pipes start at 64 KiB; 65536: never grow).")
    var pipeSize: Int = 1 << 20

    @Option(name: .long, help: "Pages all pipes together may take (default: fs.pipe-user-pages-soft).")
    var pipePages: Int?

    @Option(
        name: .long,
        help:
            "Seconds a connection to a port with first-bytes routes waits for the client to speak before it is routed without them."
    )
    var peekTimeout: Double = 0.5

    @Option(name: .long, help: "Microseconds a relay loop keeps polling after work before it sleeps (0: off).")
    var busyPoll: Int64 = 0

    @Flag(name: .long, help: "Do not listen on IPv6.")
    var noIpv6 = false

    @Option(name: .long, help: "Admin API Unix socket.")
    var adminSocket: String = "/run/loom/admin.sock"

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Serve Prometheus metrics (GET /metrics) over HTTP on this address, e.g. 127.0.0.1:15090. Default: off.",
            valueName: "host:port"
        )
    )
    var metricsAddress: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Where access-log lines go (one JSON line per connection of namespaces with accessLog: true); - is standard output.",
            valueName: "path"
        )
    )
    var accessLog: String = "-"

    @Option(name: .long, help: "Trace records queued per tracer; a tracer that falls further behind loses some.")
    var traceBuffer: Int = 4096

    @Flag(
        name: .long,
        help:
            "Hitless upgrade: if a loomd runs on this --state-dir, take over its listeners and lock (it finishes its connections within --drain-timeout, then exits)."
    )
    var takeover = false

    @Flag(
        name: .long,
        help:
            "After handing over to a new loomd, wait for SIGTERM instead of exiting (Kubernetes: the old container is not restarted before its pod is deleted)."
    )
    var lingerAfterHandover = false

    @Option(name: .long, help: "On SIGTERM, seconds to let connections finish before resetting them.")
    var drainTimeout: Double = 5

    @Flag(
        name: .long,
        help:
            "Keep every capability loomd starts with (debugging). By default, once set up, loomd keeps only NET_ADMIN, SYS_ADMIN and SYS_PTRACE."
    )
    var keepCapabilities = false

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Mesh CA directory (ca.crt, ca.key; `loomctl ca init` makes one): switches mTLS on: workload certificates for every pod, the tunnel port, encrypted connections to endpoints that carry an identity.",
            valueName: "dir"
        )
    )
    var caDir: String?

    @Option(name: .long, help: ArgumentHelp("An existing CA's certificate (PEM), with --ca-key.", valueName: "file"))
    var caCert: String?

    @Option(name: .long, help: ArgumentHelp("An existing CA's private key (PEM, mode 0600).", valueName: "file"))
    var caKey: String?

    @Option(name: .long, help: "SPIFFE trust domain (default: the CA certificate's spiffe:// URI).")
    var trustDomain: String?

    @Option(
        name: .long,
        help: "Lifetime of workload certificates (90s, 30m, 24h, 7d); each is re-issued after half of it."
    )
    var certTtl: String = "24h"

    @Option(name: .long, help: "mTLS tunnel port inside each pod (other Loom nodes connect to it).")
    var tunnelPort: UInt16 = LoomPorts.tunnel

    @Option(name: .long, help: "Seconds an mTLS handshake (with the tunnel header) may take.")
    var handshakeTimeout: Double = 10

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        if let loops, loops < 1 || loops > 256 {
            throw ValidationError("--loops must be between 1 and 256 (got \(loops))")
        }
        if UInt32(decimalOrHex: mark) == nil {
            throw ValidationError("--mark must be a 32-bit number such as 0x4c4f (got '\(mark)')")
        }
        if Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        if connectTimeout <= 0 { throw ValidationError("--connect-timeout must be positive") }
        if peekTimeout <= 0 || peekTimeout > 60 {
            throw ValidationError("--peek-timeout must be between 0 and 60 seconds")
        }
        if idleTimeout < 0 { throw ValidationError("--idle-timeout must be 0 or positive") }
        if pipeSize < 65536 || pipeSize > 1 << 20 {
            throw ValidationError("--pipe-size must be between 65536 and 1048576 (fs.pipe-max-size)")
        }
        if busyPoll < 0 || busyPoll > 100_000 {
            throw ValidationError("--busy-poll must be between 0 and 100000 microseconds")
        }
        if let pipePages, pipePages < 32 {
            throw ValidationError("--pipe-pages must be at least 32 (two 64 KiB pipes)")
        }
        if let maxConnections, maxConnections < 1 { throw ValidationError("--max-connections must be at least 1") }
        if heartbeat < 1 || heartbeat > 60 { throw ValidationError("--heartbeat must be between 1 and 60 seconds") }
        if outboundPort == inboundPort || outboundPort == 0 || inboundPort == 0 {
            throw ValidationError("--outbound-port and --inbound-port must be two different ports")
        }
        if traceBuffer < 1 || traceBuffer > 1_000_000 {
            throw ValidationError("--trace-buffer must be between 1 and 1000000 records")
        }
        if accessLog.isEmpty { throw ValidationError("--access-log must be a file path, or - for standard output") }
        guard let ttl = Self.seconds(certTtl), ttl >= 10 else {
            throw ValidationError(
                "--cert-ttl must be a duration of at least 10s, such as 90s, 30m, 24h or 7d (got '\(certTtl)')"
            )
        }
        if ttl > 366 * 86400 {
            throw ValidationError("--cert-ttl must be at most 366d: workload certificates are short-lived")
        }
        if (caCert == nil) != (caKey == nil) { throw ValidationError("--ca-cert and --ca-key go together") }
        if caDir != nil && caCert != nil {
            throw ValidationError("give either --ca-dir or --ca-cert/--ca-key, not both")
        }
        if [outboundPort, inboundPort].contains(tunnelPort) || tunnelPort == 0 {
            throw ValidationError("--tunnel-port must differ from --outbound-port and --inbound-port")
        }
        if handshakeTimeout <= 0 || handshakeTimeout > 300 {
            throw ValidationError("--handshake-timeout must be between 0 and 300 seconds")
        }
        if let metricsAddress, MetricsAddress(parsing: metricsAddress) == nil {
            throw ValidationError(
                "--metrics-address must be HOST:PORT, such as 127.0.0.1:15090 or [::1]:15090 (got '\(metricsAddress)')"
            )
        }
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "loomd")
        let relay = RelayConfiguration(
            loops: loops ?? max(1, SystemProcess.processorCount),
            outboundPort: outboundPort,
            socketMark: UInt32(decimalOrHex: mark)!,
            connectTimeoutMs: Int64(connectTimeout * 1000),
            idleTimeoutMs: Int64(idleTimeout * 1000),
            pipeSize: pipeSize,
            maxConnections: maxConnections,
            ipv6: !noIpv6,
            busyPollMicroseconds: busyPoll,
            peekTimeoutMs: Int64(peekTimeout * 1000),
            tunnelPort: tunnelPort,
            handshakeTimeoutMs: Int64(handshakeTimeout * 1000)
        )
        var settings = DaemonSettings(
            relay: relay,
            intercept: InterceptSettings(
                outboundPort: outboundPort,
                inboundPort: inboundPort,
                tunnelPort: tunnelPort,
                mark: relay.socketMark,
                heartbeatSeconds: heartbeat
            ),
            configPath: config,
            netns: netns,
            stateDirectory: stateDir,
            adminSocket: adminSocket,
            drainTimeoutMs: Int64(drainTimeout * 1000),
            pipePages: pipePages,
            metricsAddress: metricsAddress.flatMap(MetricsAddress.init(parsing:))
        )
        settings.accessLog = accessLog
        settings.traceBuffer = traceBuffer
        settings.dropCapabilities = !keepCapabilities
        settings.takeover = takeover
        settings.lingerAfterHandOver = lingerAfterHandover
        if caDir != nil || caCert != nil {
            settings.tls = MeshTLSSettings(
                caDirectory: caDir,
                caCertificate: caCert,
                caKey: caKey,
                trustDomain: trustDomain,
                certificateSeconds: Self.seconds(certTtl) ?? 86400
            )
        }
        let daemon = Daemon(settings: settings, logger: logger)
        do {
            try daemon.start()
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        daemon.runUntilSignalled()
    }
}

extension Loomd {
    /// Seconds in a duration such as `90s`, `30m`, `24h`, `7d` (a bare number is seconds).
    static func seconds(_ text: String) -> Int64? {
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        guard let last = text.last else { return nil }
        let (digits, unit) = units[last].map { (text.dropLast(), $0) } ?? (Substring(text), 1)
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let n = Int64(digits), n > 0 else { return nil }
        return n.multipliedReportingOverflow(by: unit).overflow ? nil : n * unit
    }
}

Loomd.main()
