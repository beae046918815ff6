// `loomctl rules`: the nf_tables rules Loom installs in a pod, as `nft` text.
import ArgumentParser
import LoomIntercept
import LoomSystem

struct Rules: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the nf_tables table Loom would install in a pod, as an `nft -f` script.",
        discussion: """
            Changes nothing. Until loomd installs its rules itself, `loomctl rules | ip netns exec POD nft -f -` \
            sets up interception for a pod by hand; `ip netns exec POD nft delete table inet loom` removes it.
            """
    )

    @Option(help: "Outbound capture port.") var outboundPort: UInt16 = LoomPorts.outbound
    @Option(help: "Inbound capture port.") var inboundPort: UInt16 = LoomPorts.inbound
    @Option(help: "Inbound mTLS tunnel port (never redirected).") var tunnelPort: UInt16 = LoomPorts.tunnel
    @Option(help: "loomd's socket mark (never redirected).") var mark: String =
        "0x" + String(LoomPorts.socketMark, radix: 16)
    @Option(help: "Comma-separated destination ports that bypass Loom.") var excludeOutboundPorts: String?
    @Option(help: "Comma-separated local ports whose inbound connections bypass Loom.") var excludeInboundPorts: String?
    @Option(help: "Comma-separated destination CIDRs that bypass Loom.") var excludeCidrs: String?
    @Option(help: "Fail policy when loomd is gone: closed (refuse) or open (go direct).") var fail: String = "closed"
    @Flag(help: "Capture outbound connections only (loomd has no inbound listener on 15006 yet).")
    var outboundOnly = false

    func run() throws {
        guard let policy = FailPolicy(rawValue: fail) else {
            throw ValidationError("--fail must be 'closed' or 'open' (got '\(fail)')")
        }
        guard let markValue = UInt32(decimalOrHex: mark) else {
            throw ValidationError("--mark must be a 32-bit number such as 0x4c4f (got '\(mark)')")
        }
        do {
            let settings = InterceptSettings(
                outboundPort: outboundPort,
                inboundPort: inboundPort,
                tunnelPort: tunnelPort,
                mark: markValue,
                excludeOutboundPorts: try excludeOutboundPorts.map {
                    try InterceptSettings.ports(parsing: $0, option: "--exclude-outbound-ports")
                } ?? [],
                excludeInboundPorts: try excludeInboundPorts.map {
                    try InterceptSettings.ports(parsing: $0, option: "--exclude-inbound-ports")
                } ?? [],
                excludeCIDRs: try (excludeCidrs?.split(separator: ",") ?? []).map {
                    try CIDR(parsing: String($0).filter { $0 != " " })
                },
                failPolicy: policy,
                captureInbound: !outboundOnly
            )
            print(RulePlan(settings).nftText(), terminator: "")
        } catch let error as InterceptError {
            throw ValidationError(error.description)
        }
    }
}
