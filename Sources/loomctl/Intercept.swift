// `loomctl enable`, `disable`, `pod add|remove`, `uninstall`: interception per namespace
// or per pod, through loomd's admin socket.
import ArgumentParser
import Foundation
import LoomDaemon
import LoomIntercept
import LoomSystem

/// A failure (bad input, or loomd's answer), printed as one line without the usage text.
struct LoomdError: Error, CustomStringConvertible {
    let description: String
}

/// `--namespace` / `--netns`.
struct SelectorOptions: ParsableArguments {
    @Option(name: .long, help: "Mesh namespace: every pod in it, now and later.")
    var namespace: String?

    @Option(
        name: .long,
        help: ArgumentHelp("One pod: a name under /var/run/netns, a path, or a PID.", valueName: "netns")
    )
    var netns: String?

    func selector(command: String) throws -> Selector {
        if namespace == nil && netns == nil {
            throw LoomdError(description: "\(command) needs --namespace NS or --netns NAME|PATH|PID")
        }
        if let namespace, namespace.isEmpty || namespace.contains(where: \.isWhitespace) {
            throw LoomdError(description: "--namespace: '\(namespace)' is not a namespace name")
        }
        return Selector(namespace: namespace, netns: netns)
    }
}

/// Exemptions and fail policy.
struct ExclusionOptions: ParsableArguments {
    @Option(help: "Comma-separated destination ports that bypass Loom.") var excludeOutboundPorts: String?
    @Option(help: "Comma-separated local ports whose inbound connections bypass Loom.") var excludeInboundPorts: String?
    @Option(help: "Comma-separated destination CIDRs that bypass Loom.") var excludeCidrs: String?
    @Option(help: "When loomd is gone: closed (refuse connections) or open (let them go direct).")
    var fail: String = "closed"

    func options() throws -> InterceptOptions {
        guard let policy = FailPolicy(rawValue: fail) else {
            throw LoomdError(description: "--fail must be 'closed' or 'open' (got '\(fail)')")
        }
        do {
            return InterceptOptions(
                excludeOutboundPorts: try excludeOutboundPorts.map {
                    try InterceptSettings.ports(parsing: $0, option: "--exclude-outbound-ports")
                } ?? [],
                excludeInboundPorts: try excludeInboundPorts.map {
                    try InterceptSettings.ports(parsing: $0, option: "--exclude-inbound-ports")
                } ?? [],
                excludeCIDRs: try (excludeCidrs?.split(separator: ",") ?? []).map {
                    try CIDR(parsing: String($0).filter { $0 != " " }).description
                },
                fail: policy
            )
        } catch let error as InterceptError {
            throw LoomdError(description: error.description)
        }
    }
}

extension AdminOptions {
    /// Sends a request and prints loomd's answer; fails with loomd's error line.
    func perform(_ request: AdminRequest, json: Bool) throws {
        let answer = try self.request(request.line())
        if json { print(answer) }
        let reply: AdminReply
        do {
            reply = try AdminReply.parse(answer)
        } catch {
            throw LoomdError(description: "loomd answered something unexpected: \(answer)")
        }
        if !json {
            if let plans = reply.plans {
                for netns in plans.keys.sorted() {
                    print("# \(netns)")
                    print(plans[netns]!, terminator: "")
                }
            }
            if let message = reply.message, !message.isEmpty {
                let elapsed = reply.elapsedMs.map { String(format: " in %.1f ms", $0) } ?? ""
                print(message + (reply.plans == nil ? elapsed : ""))
            }
            for pod in reply.pods ?? [] {
                print("  \(pod.netns)  \(pod.namespace)  \(pod.state)  generation \(pod.generation)")
            }
        }
        if let error = reply.error { throw LoomdError(description: error) }
    }
}

struct Enable: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Switch interception on for a namespace (its pods, now and later) or one pod.",
        discussion: """
            With --netns, the pod is added to loomd's pods if it is new (in --namespace, or \
            'default') and is intercepted even if its namespace is not. Enabling again with the \
            same settings changes nothing; with other settings, the pod's table is replaced in \
            one atomic step.
            """
    )
    @OptionGroup var select: SelectorOptions
    @OptionGroup var exclusions: ExclusionOptions
    @Flag(name: .long, help: "Print the nf_tables table each pod would get; change nothing.") var dryRun = false
    @Flag(name: .long, help: "Print loomd's answer as JSON.") var json = false
    @OptionGroup var admin: AdminOptions

    func run() throws {
        let request = AdminRequest(
            op: .enable,
            selector: try select.selector(command: "enable"),
            options: try exclusions.options(),
            dryRun: dryRun
        )
        try admin.perform(request, json: json)
    }
}

struct Disable: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Switch interception off for a namespace or one pod (a pod opt-out).",
        discussion: """
            Loom's table is removed from each pod's netns and its listeners close; connections \
            already relayed finish undisturbed. `disable --netns` opts a pod out even while its \
            namespace is enabled; `enable --netns` opts it back in.
            """
    )
    @OptionGroup var select: SelectorOptions
    @Flag(name: .long, help: "Show what would change; change nothing.") var dryRun = false
    @Flag(name: .long, help: "Print loomd's answer as JSON.") var json = false
    @OptionGroup var admin: AdminOptions

    func run() throws {
        let request = AdminRequest(op: .disable, selector: try select.selector(command: "disable"), dryRun: dryRun)
        try admin.perform(request, json: json)
    }
}

struct Pod: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add pods to loomd or remove them (pods in an enabled namespace are intercepted).",
        subcommands: [Add.self, Remove.self]
    )

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Tell loomd about a pod.")
        @Option(
            name: .long,
            help: ArgumentHelp("The pod's netns: a name under /var/run/netns, a path, or a PID.", valueName: "netns")
        )
        var netns: String
        @Option(name: .long, help: "Its mesh namespace.") var namespace: String = "default"
        @Option(name: .long, help: "Its service account (workload identity).") var serviceAccount: String = "default"
        @Flag(name: .long, help: "Print loomd's answer as JSON.") var json = false
        @OptionGroup var admin: AdminOptions

        func run() throws {
            let pod = PodEntry(netns: netns, namespace: namespace, serviceAccount: serviceAccount)
            try admin.perform(AdminRequest(op: .podAdd, pod: pod), json: json)
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Forget a pod: its interception is switched off first."
        )
        @Option(name: .long, help: ArgumentHelp("The pod's netns.", valueName: "netns")) var netns: String
        @Flag(name: .long, help: "Print loomd's answer as JSON.") var json = false
        @OptionGroup var admin: AdminOptions

        func run() throws {
            try admin.perform(AdminRequest(op: .podRemove, selector: Selector(netns: netns)), json: json)
        }
    }
}

struct Uninstall: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove every Loom table and listener on the node.",
        discussion: """
            Asks loomd (if it runs) to release every pod and forget its state, then sweeps every \
            network namespace on the node for a table inet loom left behind and removes it. Works \
            without a running loomd.
            """
    )
    @OptionGroup var admin: AdminOptions
    @Option(name: .long, help: "loomd's state directory; its saved interception state is deleted.")
    var stateDir: String = "/run/loom"

    func run() throws {
        if FileIdentity(path: admin.adminSocket) != nil {
            do {
                try admin.perform(AdminRequest(op: .uninstall), json: false)
            } catch let error as AdminClientError {
                print("loomd is not running (\(error.error)); sweeping the node myself")
            }
        } else {
            print("loomd is not running; sweeping the node myself")
        }
        removeFile(stateDir + "/state.json")
        let swept = NodeSweep.removeLoomTables(logger: nil)
        print("swept \(NodeSweep.namespaceFiles().count) network namespace(s): \(swept.removed) Loom table(s) removed")
        if !swept.errors.isEmpty { throw LoomdError(description: swept.errors.joined(separator: "; ")) }
    }
}
