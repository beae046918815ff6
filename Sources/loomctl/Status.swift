// `loomctl status`: connections, pipes and bytes of the running loomd.
import ArgumentParser
import Foundation
import LoomDaemon

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Show loomd's pods (interception state, fail policy, rule generation, listeners, connections), connections, pipes and bytes."
    )

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
            "loomd pid \(v(object, "pid")), \(v(object, "loops")) loop(s), outbound port \(v(object, "listen_port"))"
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
        if let mesh = object["mesh"] as? [String: Any], let services = mesh["services"] as? Int, services > 0 {
            lines.append(
                "mesh         configuration version \(v(mesh, "version")) from \(v(mesh, "source")): \(services) service(s)"
            )
        } else {
            lines.append("mesh         no services configured: every connection passes through to its destination")
        }
        if let tls = object["kernel_tls"] as? String, !tls.isEmpty { lines.append("kernel TLS   \(tls)") }
        let pods = object["pods"] as? [[String: Any]] ?? []
        lines.append("")
        if pods.isEmpty {
            lines.append(
                "no pods: add them with `loomctl pod add` or `loomctl enable --netns`, or list them in --config"
            )
        } else {
            var rows = [["NETNS", "NAMESPACE", "STATE", "FAIL", "GEN", "LISTENERS", "ACTIVE", "ACCEPTED", "REFUSED"]]
            for pod in pods {
                rows.append(
                    ["netns", "namespace", "state", "fail", "generation", "listeners", "active", "accepted", "refused"]
                        .map { pod[$0].map { "\($0)" } ?? "-" }
                )
            }
            let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                let padded = zip(row, widths).map { $0 + String(repeating: " ", count: $1 - $0.count) }
                var line = padded.joined(separator: "  ")
                while line.last == " " { line.removeLast() }
                lines.append(line)
            }
        }
        return lines.joined(separator: "\n")
    }
}
