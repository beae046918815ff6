// `loomctl rules`: the nf_tables table Loom installs in a pod, as `nft` text, offline.
import ArgumentParser
import LoomDaemon
import LoomIntercept
import LoomSystem

struct Rules: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the nf_tables table Loom would install in a pod, as an `nft -f` script.",
        discussion: """
            Changes nothing and needs no loomd: the text is what `nft -t list table inet loom` shows \
            in a pod after `loomctl enable`. `loomctl enable --dry-run` prints the same for the pods \
            loomd knows.
            """
    )

    @Option(help: "Outbound capture port.") var outboundPort: UInt16 = LoomPorts.outbound
    @Option(help: "Inbound capture port.") var inboundPort: UInt16 = LoomPorts.inbound
    @Option(help: "Inbound mTLS tunnel port (never redirected).") var tunnelPort: UInt16 = LoomPorts.tunnel
    @Option(help: "loomd's socket mark (never redirected).") var mark: String =
        "0x" + String(LoomPorts.socketMark, radix: 16)
    @OptionGroup var exclusions: ExclusionOptions
    @Flag(help: "Capture outbound connections only (no prerouting chain).")
    var outboundOnly = false

    func run() throws {
        guard let markValue = UInt32(decimalOrHex: mark) else {
            throw ValidationError("--mark must be a 32-bit number such as 0x4c4f (got '\(mark)')")
        }
        let base = InterceptSettings(
            outboundPort: outboundPort,
            inboundPort: inboundPort,
            tunnelPort: tunnelPort,
            mark: markValue,
            captureInbound: !outboundOnly
        )
        print(RulePlan(try exclusions.options().settings(base: base)).nftText(), terminator: "")
    }
}
