// `loomctl ca init|issue|show`: the mesh certificate authority on disk, without loomd.
// `init` creates it (never overwriting), `issue` writes a workload certificate and key for
// a SPIFFE identity (for tests and for workloads outside the mesh), `show` loads it with
// every check loomd makes and prints what it found.
import ArgumentParser
import LoomTLS

struct CA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "The mesh certificate authority: create it, issue workload certificates, check it.",
        subcommands: [Init.self, Issue.self, Show.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "init",
            abstract: "Create a CA: DIR/ca.key (0600) and DIR/ca.crt (0644); DIR is made 0700 if absent.",
            discussion: "An existing CA is never overwritten."
        )
        @Option(name: .long, help: ArgumentHelp("The CA directory.", valueName: "dir")) var dir: String
        @Option(name: .long, help: "The SPIFFE trust domain of the mesh.") var trustDomain: String = "cluster.local"
        @Option(name: .long, help: "How long the CA certificate is valid, in days.") var days: Int = 3650

        func run() throws {
            let ca = try CertificateAuthority.create(directory: dir, trustDomain: trustDomain, validDays: days)
            print("created the mesh CA in \(dir):")
            print("  \(dir)/\(CertificateAuthority.keyFile)  private key (mode 0600: keep it secret)")
            print("  \(dir)/\(CertificateAuthority.certificateFile)  certificate (mode 0644)")
            print("trust domain  \(ca.trustDomain)")
            print("subject       \(ca.subject)")
            print("fingerprint   sha256 \(ca.fingerprint)")
            print("expires       \(utcText(ca.notAfter))")
            print("start loomd with: loomd --ca-dir \(dir)")
        }
    }

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "issue",
            abstract: "Issue a workload certificate: PREFIX.crt and PREFIX.key (0600).",
            discussion: """
                --identity takes spiffe://TD/ns/NS/sa/SA, ns/NS/sa/SA or NS/SA (in the CA's trust \
                domain). --valid takes 90s, 10m, 24h or 7d; a leading '-' makes a certificate that \
                has already expired (for tests).
                """
        )
        @Option(name: .long, help: ArgumentHelp("The CA directory.", valueName: "dir")) var dir: String
        @Option(name: .long, help: "The workload's SPIFFE ID.") var identity: String
        @Option(name: .long, help: ArgumentHelp("Write PREFIX.crt and PREFIX.key.", valueName: "prefix"))
        var out: String
        @Option(name: .long, parsing: .unconditional, help: "How long the certificate is valid.")
        var valid: String = "24h"

        func run() throws {
            let seconds = try duration(valid, option: "--valid")
            let ca = try CertificateAuthority.load(directory: dir)
            guard let id = SpiffeID.resolve(identity, trustDomain: ca.trustDomain) else {
                throw LoomdError(
                    description:
                        "--identity: '\(identity)' is not spiffe://\(ca.trustDomain)/ns/NS/sa/SA, ns/NS/sa/SA or NS/SA"
                )
            }
            // An expired certificate still starts (an hour) before it ends.
            let certificate = try ca.issue(
                identity: id,
                validSeconds: seconds,
                notBeforeOffset: seconds > 0 ? -60 : seconds - 3600
            )
            try certificate.write(certificatePath: out + ".crt", keyPath: out + ".key")
            print("issued \(id) (serial \(certificate.serial))")
            print("  \(out).crt  certificate")
            print("  \(out).key  private key (mode 0600)")
            print("valid \(utcText(certificate.notBefore)) to \(utcText(certificate.notAfter))")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show",
            abstract: "Load the CA as loomd would and print it with the result of each check."
        )
        @Option(name: .long, help: ArgumentHelp("The CA directory.", valueName: "dir")) var dir: String
        @Option(name: .long, help: "The trust domain, when the CA certificate names none.") var trustDomain: String?

        func run() throws {
            let ca = try CertificateAuthority.load(directory: dir, trustDomain: trustDomain)
            print("subject       \(ca.subject)")
            print("trust domain  \(ca.trustDomain)")
            print("fingerprint   sha256 \(ca.fingerprint)")
            print("not after     \(utcText(ca.notAfter))")
            print("checks:")
            for check in ca.checks { print("  ok  \(check)") }
        }
    }
}

/// "90s", "10m", "24h", "7d", with an optional leading '-', in seconds.
func duration(_ text: String, option: String) throws -> Int64 {
    let negative = text.hasPrefix("-")
    let body = negative ? text.dropFirst() : Substring(text)
    let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    guard let unit = body.last.flatMap({ units[$0] }), let value = Int64(body.dropLast()), value > 0,
        value <= 100 * 365 * 86400 / unit
    else {
        throw LoomdError(description: "\(option): '\(text)' is not a duration such as 90s, 10m, 24h or 7d")
    }
    return (negative ? -value : value) * unit
}
