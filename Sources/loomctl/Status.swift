// `loomctl status`: connections, pipes and bytes of the running loomd.
import ArgumentParser
import Foundation
import LoomDaemon

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show loomd's connections, pipes and bytes.")

    @OptionGroup var admin: AdminOptions

    @Flag(name: .long, help: "Print the answer as JSON.")
    var json = false

    func run() throws {
        let answer = try admin.request("status")
        print(json ? answer : try StatusText.render(json: answer))
    }
}

/// Human-readable rendering of the status JSON.
enum StatusText {
    static func render(json: String) throws -> String {
        guard let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else {
            throw ValidationError("loomd answered something that is not a JSON object: \(json)")
        }
        if let error = object["error"] as? String { throw ValidationError("loomd: \(error)") }
        let c = object["connections"] as? [String: Any] ?? [:]
        let p = object["pipes"] as? [String: Any] ?? [:]
        let b = object["bytes"] as? [String: Any] ?? [:]
        func v(_ d: [String: Any], _ k: String) -> String { d[k].map { "\($0)" } ?? "-" }
        var lines: [String] = []
        lines.append(
            "loomd pid \(v(object, "pid")), netns \(object["netns"] as? String ?? "(node)"), \(v(object, "loops")) loop(s), port \(v(object, "listen_port"))"
        )
        lines.append(
            "connections  active \(v(c, "active"))  accepted \(v(c, "accepted"))  refused \(v(c, "refused"))  finished \(v(c, "finished"))  failed \(v(c, "failed"))  limit \(v(c, "limit"))\((c["accept_paused"] as? Bool) == true ? "  (accept paused)" : "")"
        )
        lines.append(
            "pipes        in use \(v(p, "in_use"))  cached \(v(p, "cached"))  waiting \(v(p, "waiters")) (\(v(p, "waits_total")) total)  limit \(v(p, "limit"))"
        )
        lines.append(
            "bytes        client->upstream \(v(b, "client_to_upstream"))  upstream->client \(v(b, "upstream_to_client"))"
        )
        return lines.joined(separator: "\n")
    }
}
