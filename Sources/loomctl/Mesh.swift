// `loomctl reload`, `routes`, `explain`, `config validate`: the mesh configuration and
// what loomd does with it.
import ArgumentParser
import Foundation
import LoomDaemon
import LoomMesh
import LoomRelay
import LoomSystem

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read loomd's configuration file again (as SIGHUP or a file change do).",
        discussion: """
            New connections use the new configuration; connections in flight keep the one they \
            started with. An invalid file is refused with its errors (file:line:column: field) \
            and the running configuration stays.
            """
    )
    @OptionGroup var admin: AdminOptions

    func run() throws {
        try admin.perform(AdminRequest(op: .reload), json: false)
    }
}

struct Routes: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the effective routing table: services, virtual IPs, ports, routes, endpoints, counters."
    )
    @Flag(name: .long, help: "Print the answer as JSON.") var json = false
    @OptionGroup var admin: AdminOptions

    func run() throws {
        let answer = try admin.request(AdminRequest(op: .routes).line())
        if json {
            print(answer)
            return
        }
        guard let report = try? JSONDecoder().decode(RoutesReport.self, from: Data(answer.utf8)) else {
            throw LoomdError(description: (try? AdminReply.parse(answer).error) ?? answer)
        }
        print("configuration version \(report.version) (\(report.source)): \(report.services.count) service(s)")
        for s in report.services {
            let vips = s.vips.isEmpty ? "no virtual IP" : s.vips.joined(separator: ", ")
            print("")
            print("\(s.namespace)/\(s.name)  [\(vips)]  \(s.loadBalancing)")
            print(
                "  connections active \(s.active) (max \(s.maxConnections.map(String.init) ?? "-"))  total \(s.total)  refused by breaker \(s.rejected)  connect failures \(s.connectFailures)  ejections \(s.ejections)"
            )
            for port in s.ports {
                print("  port \(port.port) \(port.protocol) -> \(port.targetPort)")
                for route in port.routes {
                    print("    route \(route.name): \(route.match) -> \(route.to.joined(separator: ", "))")
                }
            }
            print("  endpoints: \(s.endpoints.isEmpty ? "none" : s.endpoints.joined(separator: ", "))")
        }
    }
}

struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Explain where a connection from a pod would go: service, route, endpoints, and why."
    )
    @Option(
        name: .long,
        help: ArgumentHelp("The client pod (its namespace decides unmatched destinations).", valueName: "netns")
    )
    var netns: String?
    @Option(
        name: .long,
        help: ArgumentHelp("Destination IP:PORT, e.g. 10.96.0.10:80 or [fd96::10]:443.", valueName: "ip:port")
    )
    var to: String
    @Option(name: .long, help: "TLS server name the client would send.") var sni: String?
    @Option(name: .long, help: "HTTP Host the client would send.") var host: String?
    @Option(name: .long, help: "HTTP path the client would request.") var path: String?
    @Option(name: .long, help: "HTTP header NAME:VALUE the client would send (repeatable).") var header: [String] = []
    @Flag(
        name: .long,
        help: "With --netns: the connection comes into the pod (its inbound rules) instead of leaving it."
    )
    var inbound = false
    @Flag(name: .long, help: "Print the answer as JSON.") var json = false
    @OptionGroup var admin: AdminOptions

    func run() throws {
        guard SocketAddress(parsing: to) != nil else {
            throw LoomdError(description: "--to: '\(to)' is not IP:PORT (e.g. 10.96.0.10:80 or [fd96::10]:443)")
        }
        if sni != nil && (host != nil || path != nil || !header.isEmpty) {
            throw LoomdError(
                description: "--sni describes a TLS connection; --host, --path and --header an HTTP one: give one kind"
            )
        }
        var headers: [String: String] = [:]
        for h in header {
            guard let colon = h.firstIndex(of: ":"), colon != h.startIndex else {
                throw LoomdError(description: "--header: '\(h)' is not NAME:VALUE")
            }
            headers[String(h[..<colon])] = String(h[h.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
        }
        var request = AdminRequest(op: .explain, selector: netns.map { Selector(netns: $0) })
        request.to = to
        request.sni = sni
        request.host = host
        request.path = path
        request.headers = headers.isEmpty ? nil : headers
        if inbound {
            guard netns != nil else { throw LoomdError(description: "--inbound needs --netns (the pod it comes into)") }
            request.inbound = true
        }
        let answer = try admin.request(request.line())
        let reply = try AdminReply.parse(answer)
        if let error = reply.error { throw LoomdError(description: error) }
        if json {
            print(answer)
            return
        }
        guard let e = reply.explanation else { throw LoomdError(description: "loomd gave no explanation: \(answer)") }
        print("destination  \(e.destination)")
        if let k = reply.kernel {
            let how = k.port.map { "redirected to :\($0)" } ?? "bypassed"
            print(
                "kernel       \(how) by \(k.nft.isEmpty ? k.rule : "rule \"\(k.rule)\" (chain \(k.chain): \(k.nft))")"
            )
            print(
                "             table inet loom \(k.tableInKernel ? "is in the pod's netns" : "is NOT in the pod's netns")\(k.generation.map { " (loomd applied generation \($0))" } ?? "")"
            )
            if let note = k.note { print("             \(note)") }
            if k.port == nil && !inbound {
                print(
                    "             (bypassed: the connection goes straight to its destination; Loom's routing below does not apply)"
                )
            }
        }
        if let service = e.service {
            print(
                "service      \(service) port \(e.servicePort ?? 0) (\(e.appProtocol ?? "?"))\(e.peeks ? ", peeks at the first bytes" : "")"
            )
        }
        if let route = e.route { print("route        \(route) -> \(e.destinations.joined(separator: ", "))") }
        if !e.endpoints.isEmpty {
            print("endpoints    \(e.endpoints.joined(separator: ", ")) by \(e.loadBalancing ?? "?")")
        }
        print("verdict      \(e.verdict)")
        for why in e.why { print("  because \(why)") }
    }
}

struct Config: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check configuration files.",
        subcommands: [Validate.self]
    )

    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a configuration file without loomd: every error with file:line:column and field.",
            discussion: """
                With --bench N, also measures what loomd would pay: load time (the reload time), the \
                snapshot's memory, and the median time of N routing decisions to random service ports.
                """
        )
        @Argument(help: "The YAML file.") var file: String
        @Option(name: .long, help: "Measure N routing decisions on this configuration.") var bench: Int?

        func run() throws {
            let rssBefore = residentKiB()
            let started = SystemProcess.nowMicroseconds()
            let loaded: (state: NodeState, mesh: MeshConfig)
            do {
                loaded = try NodeConfig.load(path: file)
            } catch {
                throw LoomdError(description: "\(error)")
            }
            let loadMs = Double(SystemProcess.nowMicroseconds() - started) / 1000
            for warning in loaded.mesh.warnings { FileHandleStream.standardError.write("warning: \(warning)\n") }
            let snapshot = loaded.mesh.snapshot
            let endpoints = snapshot.services.reduce(0) { $0 + $1.endpoints.count }
            print(
                "\(file): valid: \(snapshot.services.count) service(s), \(endpoints) endpoint(s), \(loaded.state.pods.count) pod(s), \(loaded.state.namespaces.count) namespace(s)"
            )
            if let n = bench, n > 0 {
                SystemProcess.releaseFreedMemory()  // as loomd does after a load: parser garbage goes back
                let memory = residentKiB() - rssBefore
                let figures = RoutingBench.run(snapshot, decisions: n)
                print(String(format: "load (reload) time: %.1f ms", loadMs))
                print("snapshot memory (RSS kept after loading): \(memory / 1024) MiB")
                print(figures)
            }
        }

        private func residentKiB() -> Int {
            guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
            for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
                return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
            }
            return 0
        }
    }
}

/// Writes to stderr without Foundation's FileHandle buffering surprises.
enum FileHandleStream {
    case standardError
    func write(_ text: String) { FileHandle.standardError.write(Data(text.utf8)) }
}
