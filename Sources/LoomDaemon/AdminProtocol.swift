// The admin socket's messages: one JSON request line in, one JSON line out. `status`
// alone on a line is still accepted (older loomctl, `nc -U`).
import Foundation
import LoomIntercept
import LoomMesh

/// A request to loomd.
public struct AdminRequest: Codable, Sendable {
    public enum Operation: String, Codable, Sendable {
        case status, enable, disable, podAdd, podRemove, uninstall, reload, routes, explain
    }
    public var op: Operation
    public var selector: Selector?
    /// Exemptions and fail policy for `enable` (nil: keep the namespace's).
    public var options: InterceptOptions?
    /// Print what would be installed; change nothing.
    public var dryRun: Bool?
    /// For `podAdd`.
    public var pod: PodEntry?
    /// For `explain`: the destination (`IP:PORT`) and what the first bytes would say.
    public var to: String?
    public var sni: String?
    public var host: String?
    public var path: String?
    public var headers: [String: String]?
    /// For `explain`: the connection comes into the pod (prerouting) instead of out of it.
    public var inbound: Bool?

    public init(
        op: Operation,
        selector: Selector? = nil,
        options: InterceptOptions? = nil,
        dryRun: Bool? = nil,
        pod: PodEntry? = nil
    ) {
        self.op = op
        self.selector = selector
        self.options = options
        self.dryRun = dryRun
        self.pod = pod
    }

    public func line() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }
}

/// One pod's row in `loomctl status` and in command answers.
public struct PodStatus: Codable, Equatable, Sendable {
    // Built by loomd; decoded by loomctl.
    public var netns: String
    public var namespace: String
    public var serviceAccount: String
    /// `intercepted`, `off`, `opted-out`, `netns-missing` or `error`.
    public var state: String
    public var fail: String?
    /// Bumped each time loomd replaces the pod's table.
    public var generation: Int
    public var listeners: Int
    public var active: Int
    public var accepted: Int
    public var refused: Int
    /// Why the pod is not in the state asked for.
    public var error: String?
    /// Time the last change to this pod took (rules and listeners), milliseconds.
    public var changeMs: Double?
    /// The pod's workload identity and current certificate (absent without a mesh CA).
    public var identity: String?
    public var certificateSerial: String?
    /// Unix seconds.
    public var certificateExpires: Int64?
}

/// loomd's answer to a command other than `status`.
public struct AdminReply: Codable, Sendable {
    public var error: String?
    public var message: String?
    public var pods: [PodStatus]?
    /// `--dry-run`: netns -> the table that would be installed (`nft` text).
    public var plans: [String: String]?
    /// Milliseconds the whole command took inside loomd.
    public var elapsedMs: Double?
    /// `explain`: where a connection would go, and why.
    public var explanation: Explanation?
    /// `explain --netns`: what the pod's rules in the kernel would do with it.
    public var kernel: KernelExplanation?

    public init(error: String? = nil, message: String? = nil, pods: [PodStatus]? = nil) {
        self.error = error
        self.message = message
        self.pods = pods
    }

    public func line() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    public static func parse(_ line: String) throws -> AdminReply {
        try JSONDecoder().decode(AdminReply.self, from: Data(line.utf8))
    }
}

/// What a pod's nf_tables rules would do with a connection (`loomctl explain --netns`).
public struct KernelExplanation: Codable, Equatable, Sendable {
    /// `redirected` or `bypassed`.
    public var verdict: String
    /// The port redirected to.
    public var port: Int?
    /// The deciding rule's reason and its nft text; the chain it is in.
    public var rule: String
    public var nft: String
    public var chain: String
    /// Whether Loom's table is in the pod's netns now (read from the kernel), and the
    /// generation loomd applied.
    public var tableInKernel: Bool
    public var generation: Int?
    /// Anything the user must know (a table removed by hand, a pod not intercepted).
    public var note: String?

    public init(
        verdict: String,
        port: Int? = nil,
        rule: String,
        nft: String,
        chain: String,
        tableInKernel: Bool,
        generation: Int? = nil,
        note: String? = nil
    ) {
        self.verdict = verdict
        self.port = port
        self.rule = rule
        self.nft = nft
        self.chain = chain
        self.tableInKernel = tableInKernel
        self.generation = generation
        self.note = note
    }
}
