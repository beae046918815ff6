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
        if let m = object["mtls"] as? [String: Any] {
            lines.append(
                "mTLS         trust domain \(v(m, "trust_domain")), CA \(v(m, "ca")) (sha256 \(String(v(m, "ca_sha256").prefix(16)))…), tunnel port \(v(m, "tunnel_port"))"
            )
            lines.append(
                "             certificates live \(v(m, "certificate_seconds")) s, \(v(m, "certificates_issued")) issued, \(v(m, "rotation_failures")) rotation failures; handshakes as client \(v(m, "handshakes_client")), as server \(v(m, "handshakes_server")) (\(v(m, "handshakes_resumed")) resumed); copy buffers in use \(v(m, "copy_buffers"))"
            )
        } else {
            lines.append("mTLS         off (no mesh CA: start loomd with --ca-dir; `loomctl ca init` makes one)")
        }
        let pods = object["pods"] as? [[String: Any]] ?? []
        lines.append("")
        if pods.isEmpty {
            lines.append(
                "no pods: add them with `loomctl pod add` or `loomctl enable --netns`, or list them in --config"
            )
        } else {
            let withTLS = pods.contains { $0["identity"] != nil }
            var keys = [
                "netns", "namespace", "state", "fail", "generation", "listeners", "active", "accepted", "refused",
            ]
            var rows = [["NETNS", "NAMESPACE", "STATE", "FAIL", "GEN", "LISTENERS", "ACTIVE", "ACCEPTED", "REFUSED"]]
            if withTLS {
                keys += ["identity", "certificateSerial", "certificateExpires"]
                rows[0] += ["IDENTITY", "CERT SERIAL", "CERT EXPIRES"]
            }
            for pod in pods {
                rows.append(
                    keys.map { key in
                        guard let value = pod[key] else { return "-" }
                        if key == "certificateSerial" { return String("\(value)".prefix(12)) }
                        if key == "certificateExpires", let seconds = value as? Int {
                            return ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(seconds)))
                        }
                        return "\(value)"
                    }
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
