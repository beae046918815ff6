// NetfilterSocket against the real kernel, as root, in a network namespace of its own
// (`ltnft<pid>`, deleted on every exit path). Sockets are opened on a thread that has
// entered that namespace; every `nft` command runs under `ip netns exec`. Nothing touches
// the root namespace.
import Foundation
import LoomSystem
import Synchronization
import Testing

@testable import LoomIntercept

let tools = (ip: executable("ip"), nft: executable("nft"))
let canRun = getuid() == 0 && tools.ip != nil && tools.nft != nil

@Suite(
    .serialized,
    .enabled(if: canRun, "needs root, ip and nft: creates network namespace ltnft<pid> with nf_tables tables")
)
struct NetfilterKernelTests {
    /// Tables Loom must leave alone: another table, and one named `loom` in another family.
    static let userTables =
        "table inet mine {\n\tchain c {\n\t\ttype filter hook output priority 0;\n\t\tcounter\n\t}\n}\n"
        + "table ip loom {\n\tchain c {\n\t\ttype nat hook output priority -100;\n\t}\n}\n"

    static let plans: [(String, RulePlan)] = {
        let exclusions = InterceptSettings(
            excludeOutboundPorts: [8080, 22, 8080],
            excludeInboundPorts: [9090],
            excludeCIDRs: ["10.96.0.0/12", "fd00::/8", "169.254.169.254", "10.1.2.2/31"].map { try! CIDR(parsing: $0) },
            failPolicy: .open
        )
        let v6 = InterceptSettings(
            excludeCIDRs: ["fd00::/8", "2001:db8::/32", "2001:db8::/65", "fe80::/10", "2001:db8::1", "::/0"].map {
                try! CIDR(parsing: $0)
            },
            captureInbound: false
        )
        return [
            ("default", RulePlan(InterceptSettings())), ("exclusions, fail open", RulePlan(exclusions)),
            ("v6 CIDRs", RulePlan(v6)),
        ]
    }()

    @Test func appliedPlansListExactlyAsTheirText() throws {
        try ScratchNamespace.with { ns in
            try ns.nft("-f", "-", input: Self.userTables)
            let before = try ns.nft("list", "ruleset")
            let mine = try ns.nft("list", "table", "inet", "mine") + ns.nft("list", "table", "ip", "loom")
            let socket = try ns.socket()
            try socket.remove()  // no table yet: fine
            #expect(try socket.loomTable() == (false, nil))
            for (name, plan) in Self.plans {
                try socket.apply(plan)
                try expectListing(ns, plan, name)
                try socket.apply(plan)
                try expectListing(ns, plan, "\(name), applied twice")
                #expect(try socket.loomTable() == (true, "managed by loomd"))
                #expect(try ns.nft("list", "table", "inet", "mine") + ns.nft("list", "table", "ip", "loom") == mine)
            }
            try socket.remove()
            #expect(try ns.nft("list", "ruleset") == before, "remove leaves every other table as it was")
            #expect(try socket.loomTable() == (false, nil))

            // The same text loaded by nft itself lists the same, and remove deletes it.
            for (name, plan) in Self.plans {
                try ns.nft("-f", "-", input: plan.nftText())
                #expect(try ns.nft("list", "table", "inet", "loom") == plan.nftText(), "\(name) via nft -f")
                try socket.remove()
            }
            #expect(try ns.nft("list", "ruleset") == before)
        }
    }

    /// The listing equals the plan's text; for fail open the live heartbeat element is
    /// the one difference (`nft -t` leaves set elements out).
    func expectListing(_ ns: ScratchNamespace, _ plan: RulePlan, _ name: String) throws {
        guard plan.settings.failPolicy == .open else {
            #expect(try ns.nft("list", "table", "inet", "loom") == plan.nftText(), "\(name)")
            return
        }
        #expect(try ns.nft("-t", "list", "table", "inet", "loom") == plan.nftText(), "\(name)")
        let full = try ns.nft("list", "table", "inet", "loom")
        let seconds = plan.settings.heartbeatSeconds
        #expect(full.contains("\t\telements = { tcp timeout \(seconds)s expires "), "\(name): live heartbeat\n\(full)")
    }

    @Test func heartbeatExpiresUnlessRefreshed() throws {
        try ScratchNamespace.with { ns in
            let socket = try ns.socket()
            try socket.apply(RulePlan(InterceptSettings(failPolicy: .open, heartbeatSeconds: 1)))
            func heartbeat() throws -> String { try ns.nft("list", "set", "inet", "loom", "heartbeat") }
            #expect(try heartbeat().contains("elements = { tcp timeout 1s expires"))
            for _ in 0..<4 {
                Thread.sleep(forTimeInterval: 0.5)
                try socket.refreshHeartbeat(seconds: 1)
                #expect(try heartbeat().contains("elements = { tcp timeout 1s expires"), "refreshed: still there")
            }
            Thread.sleep(forTimeInterval: 1.5)
            let expired = try heartbeat()
            #expect(!expired.contains("elements"), "not refreshed for 1.5 s: expired\n\(expired)")
            try socket.refreshHeartbeat(seconds: 5)
            #expect(try heartbeat().contains("elements = { tcp timeout 5s expires"), "back after a refresh")
        }
    }

    @Test func failuresAreAtomicAndNamed() throws {
        try ScratchNamespace.with { ns in
            let socket = try ns.socket()
            #expect {
                try socket.refreshHeartbeat(seconds: 1)
            } throws: { error in
                guard let error = error as? NetfilterError else { return false }
                return error.message == "flush set heartbeat" && error.errno == 2
                    && error.description.contains("No such file or directory")
                    && error.description.contains("heartbeat set is missing")
            }

            // A batch the kernel refuses halfway changes nothing.
            let plan = RulePlan(InterceptSettings())
            try socket.apply(plan)
            let broken: [NetlinkMessage] =
                RulePlan.removalMessages + [
                    .addTable(comment: RulePlan.tableComment),
                    .addRule(chain: "nosuch", [.returnVerdict], comment: "x"),
                ]
            #expect {
                try socket.send(broken, .apply)
            } throws: { error in
                guard let error = error as? NetfilterError else { return false }
                return error.message == "add rule to chain nosuch (\"x\")" && error.errno == 2
                    && error.description.hasPrefix("cannot apply Loom's rules: add rule to chain nosuch")
            }
            #expect(try ns.nft("list", "table", "inet", "loom") == plan.nftText(), "the applied plan is untouched")

            // A table named like Loom's but made by hand: found, without comment, removable.
            try socket.remove()
            try ns.nft("add", "table", "inet", "loom")
            #expect(try socket.loomTable() == (true, nil))
            #expect(try socket.hasLoomTable())
            try socket.remove()
            try socket.remove()
            #expect(try !socket.hasLoomTable())

            socket.close()
            socket.close()
            #expect(throws: NetfilterError(operation: .apply, message: nil, errno: 9)) { try socket.apply(plan) }
        }
    }
}

/// A network namespace for one test, deleted when it ends. Its name is the suite's prefix
/// and this process's PID, so that suites running side by side (and other runs) never share one.
struct ScratchNamespace {
    let name: String

    static func with(prefix: String = "ltnft", _ body: (ScratchNamespace) throws -> Void) throws {
        let ns = ScratchNamespace(name: "\(prefix)\(getpid())")
        try command([tools.ip!, "netns", "add", ns.name])
        defer { _ = try? command([tools.ip!, "netns", "delete", ns.name]) }
        try body(ns)
    }

    @discardableResult
    func ip(_ arguments: String...) throws -> String {
        try command([tools.ip!, "-n", name] + arguments)
    }

    /// Runs `body` on a thread of its own that has entered this namespace, and returns its
    /// result (the test's own thread never changes namespace).
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        let name = self.name
        let thread = try SystemThread.spawn(name: "ltns") {
            let outcome = Result { () throws -> T in
                let netns = try NetworkNamespace.open(name)
                defer { netns.fd.close() }
                try netns.enter()
                return try body()
            }
            result.withLock { $0 = outcome }
        }
        thread.join()
        return try result.withLock { $0! }.get()
    }

    @discardableResult
    func nft(_ arguments: String..., input: String? = nil) throws -> String {
        try command([tools.ip!, "netns", "exec", name, tools.nft!] + arguments, input: input)
    }

    /// A socket opened by a thread that entered this namespace (and then ends).
    func socket() throws -> NetfilterSocket {
        try run { try NetfilterSocket() }
    }
}

struct CommandError: Error, CustomStringConvertible {
    let description: String
}

/// Runs a program; its standard output, or an error with its standard error.
@discardableResult
func command(_ arguments: [String], input: String? = nil) throws -> String {
    let (status, text, failure) = try runProgram(arguments, input: input)
    guard status == 0 else {
        throw CommandError(description: "\(arguments.joined(separator: " ")): \(failure)")
    }
    return text
}

/// Runs a program: its exit status, standard output and standard error.
func runProgram(_ arguments: [String], input: String? = nil) throws -> (status: Int32, output: String, errors: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: arguments[0])
    process.arguments = Array(arguments.dropFirst())
    let output = Foundation.Pipe()
    let errors = Foundation.Pipe()
    let stdin = Foundation.Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = stdin
    try process.run()
    stdin.fileHandleForWriting.write(Data((input ?? "").utf8))
    try stdin.fileHandleForWriting.close()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    let failure = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text, failure)
}

func executable(_ name: String) -> String? {
    ["/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"].map { $0 + name }.first {
        FileManager.default.isExecutableFile(atPath: $0)
    }
}
