// loomctl: the operator CLI. Talks to loomd over its admin socket.
import ArgumentParser
import LoomDaemon

struct Loomctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loomctl",
        abstract: "Operate Loom: switch interception on and off, see the node daemon's state.",
        subcommands: [
            Status.self, Enable.self, Disable.self, Pod.self, Uninstall.self, Routes.self, Explain.self, Reload.self,
            Config.self, Rules.self, Trace.self, Top.self, Metrics.self, CA.self,
        ]
    )
}

/// Options every subcommand shares.
struct AdminOptions: ParsableArguments {
    @Option(name: .long, help: "loomd's admin socket.")
    var adminSocket: String = "/run/loom/admin.sock"

    /// Sends one request to loomd and returns its answer, or fails (exit 1) with what to
    /// check.
    func request(_ command: String) throws -> String {
        try AdminClient(path: adminSocket).request(command)
    }
}

Loomctl.main()
