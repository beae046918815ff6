// The mesh CA on disk: creation with its file modes and no overwriting, every load check
// with its one-line error, issuing workload certificates and verifying them against the CA,
// and workload certificates written and loaded back.
import Foundation
import XCTest

@testable import LoomTLS

#if canImport(Glibc)
    import Glibc
#endif

final class CertificateAuthorityTests: XCTestCase {
    var directory: TemporaryDirectory!
    var caDir: String { directory.file("ca") }

    override func setUpWithError() throws {
        directory = try TemporaryDirectory()
    }

    override func tearDown() {
        directory.remove()
    }

    /// Runs `body`, which must throw a TLSError; returns its message.
    func message(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            try body()
            XCTFail("no error", file: file, line: line)
            return ""
        } catch let error as TLSError {
            XCTAssertFalse(error.message.contains("\n"), "not one line: \(error.message)", file: file, line: line)
            return error.message
        } catch {
            XCTFail("not a TLSError: \(error)", file: file, line: line)
            return ""
        }
    }

    func testCreateWritesFilesWithTheirModes() throws {
        let ca = try CertificateAuthority.create(directory: caDir, trustDomain: "cluster.local")
        XCTAssertEqual(mode(caDir), 0o700)
        XCTAssertEqual(mode(caDir + "/ca.key"), 0o600)
        XCTAssertEqual(mode(caDir + "/ca.crt"), 0o644)
        XCTAssertEqual(ca.trustDomain, "cluster.local")
        XCTAssertEqual(ca.subject, "O=Loom, CN=Loom mesh CA cluster.local")
        XCTAssertEqual(ca.fingerprint.count, 64)
        XCTAssertTrue(ca.fingerprint.allSatisfy { "0123456789abcdef".contains($0) })
        let now = Int64(Date().timeIntervalSince1970)
        XCTAssertEqual(Double(ca.notAfter - now), 3650 * 86400, accuracy: 120)
        XCTAssertEqual(Double(now - ca.notBefore), 60, accuracy: 60)
        let pem = try String(contentsOfFile: caDir + "/ca.crt", encoding: .utf8)
        XCTAssertEqual(pem, ca.certificatePEM)
        XCTAssertTrue(pem.hasPrefix("-----BEGIN CERTIFICATE-----"))
        let key = try String(contentsOfFile: caDir + "/ca.key", encoding: .utf8)
        XCTAssertTrue(key.hasPrefix("-----BEGIN PRIVATE KEY-----"))

        let facts = CertificateFacts(ca.x509)
        XCTAssertEqual(facts.isCA, true)
        XCTAssertEqual(facts.uris, ["spiffe://cluster.local"])
        XCTAssertEqual(facts.serial.count, 32, "a 128-bit serial (unless it starts with zeros)")
    }

    func testCreateNeverOverwrites() throws {
        let first = try CertificateAuthority.create(directory: caDir, trustDomain: "cluster.local")
        let text = message { _ = try CertificateAuthority.create(directory: caDir, trustDomain: "cluster.local") }
        XCTAssertTrue(text.contains("ca.key already exists"), text)
        XCTAssertTrue(text.contains("never overwritten"), text)
        XCTAssertEqual(try CertificateAuthority.load(directory: caDir).fingerprint, first.fingerprint)
        // A certificate alone also blocks creation.
        unlink(caDir + "/ca.key")
        let again = message { _ = try CertificateAuthority.create(directory: caDir, trustDomain: "cluster.local") }
        XCTAssertTrue(again.contains("ca.crt already exists"), again)
    }

    func testCreateRejectsBadTrustDomainAndLifetime() {
        let td = message { _ = try CertificateAuthority.create(directory: caDir, trustDomain: "Bad Domain") }
        XCTAssertTrue(td.contains("not a trust domain"), td)
        let days = message { _ = try CertificateAuthority.create(directory: caDir, trustDomain: "td", validDays: 0) }
        XCTAssertTrue(days.contains("1 to 36500 days"), days)
        XCTAssertFalse(FileManager.default.fileExists(atPath: caDir))
    }

    func testLoadRoundTrip() throws {
        let created = try CertificateAuthority.create(directory: caDir, trustDomain: "mesh.test", validDays: 30)
        let loaded = try CertificateAuthority.load(directory: caDir)
        XCTAssertEqual(loaded.fingerprint, created.fingerprint)
        XCTAssertEqual(loaded.trustDomain, "mesh.test")
        XCTAssertEqual(loaded.subject, created.subject)
        XCTAssertEqual(loaded.notAfter, created.notAfter)
        XCTAssertEqual(loaded.certificatePEM, created.certificatePEM)
        XCTAssertEqual(loaded.checks.count, 6, "\(loaded.checks)")
        let overridden = try CertificateAuthority.load(
            certificatePath: caDir + "/ca.crt",
            keyPath: caDir + "/ca.key",
            trustDomain: "other.test"
        )
        XCTAssertEqual(overridden.trustDomain, "other.test")
    }

    func testLoadRefusesAKeyOthersCanRead() throws {
        _ = try CertificateAuthority.create(directory: caDir, trustDomain: "cluster.local")
        chmod(caDir + "/ca.key", 0o644)
        let text = message { _ = try CertificateAuthority.load(directory: caDir) }
        XCTAssertEqual(
            text,
            "\(caDir)/ca.key is mode 0644: a CA key must be readable by its owner only (chmod 600 \(caDir)/ca.key)"
        )
        chmod(caDir + "/ca.key", 0o640)
        XCTAssertTrue(message { _ = try CertificateAuthority.load(directory: caDir) }.contains("mode 0640"))
        chmod(caDir + "/ca.key", 0o400)
        XCTAssertNoThrow(try CertificateAuthority.load(directory: caDir))
    }

    func testLoadRefusesAWritableDirectory() throws {
        _ = try CertificateAuthority.create(directory: caDir, trustDomain: "cluster.local")
        chmod(caDir, 0o770)
        let text = message { _ = try CertificateAuthority.load(directory: caDir) }
        XCTAssertEqual(
            text,
            "\(caDir) is mode 0770: a CA directory must not be group- or world-writable (chmod 700 \(caDir))"
        )
        chmod(caDir, 0o755)
        XCTAssertNoThrow(try CertificateAuthority.load(directory: caDir))
    }

    func testLoadRefusesAKeyOfAnotherCA() throws {
        _ = try CertificateAuthority.create(directory: caDir, trustDomain: "cluster.local")
        let other = directory.file("other")
        _ = try CertificateAuthority.create(directory: other, trustDomain: "cluster.local")
        unlink(caDir + "/ca.key")
        try write(String(contentsOfFile: other + "/ca.key", encoding: .utf8), to: caDir + "/ca.key", mode: 0o600)
        let text = message { _ = try CertificateAuthority.load(directory: caDir) }
        XCTAssertTrue(text.hasPrefix("\(caDir)/ca.key does not match \(caDir)/ca.crt"), text)
        XCTAssertTrue(text.contains("use the key that was created with this certificate"), text)
    }

    func testLoadRefusesGarbageAndMissingFiles() throws {
        _ = try CertificateAuthority.create(directory: caDir, trustDomain: "cluster.local")
        let pem = try String(contentsOfFile: caDir + "/ca.crt", encoding: .utf8)
        try write("hello\n", to: caDir + "/ca.crt", mode: 0o644)
        let garbage = message { _ = try CertificateAuthority.load(directory: caDir) }
        XCTAssertTrue(garbage.hasPrefix("\(caDir)/ca.crt is not a PEM certificate (OpenSSL: "), garbage)
        // A damaged body inside valid armour.
        var lines = pem.components(separatedBy: "\n")
        lines[3] = String(lines[3].reversed())
        try write(lines.joined(separator: "\n"), to: caDir + "/ca.crt", mode: 0o644)
        XCTAssertTrue(
            message { _ = try CertificateAuthority.load(directory: caDir) }.contains("is not a PEM certificate")
        )
        try write(pem, to: caDir + "/ca.crt", mode: 0o644)
        try write("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", to: caDir + "/ca.key", mode: 0o600)
        let badKey = message { _ = try CertificateAuthority.load(directory: caDir) }
        XCTAssertTrue(badKey.hasPrefix("\(caDir)/ca.key is not an unencrypted PEM private key"), badKey)

        unlink(caDir + "/ca.key")
        let missing = message { _ = try CertificateAuthority.load(directory: caDir) }
        XCTAssertEqual(
            missing,
            "cannot read \(caDir)/ca.key: No such file or directory; create a CA with `loomctl ca init --dir \(caDir)`, or pass the right --dir"
        )
        let nowhere = message { _ = try CertificateAuthority.load(directory: directory.file("nothing")) }
        XCTAssertTrue(nowhere.contains("No such file or directory"), nowhere)
    }

    func testLoadRefusesAWorkloadCertificate() throws {
        let ca = try CertificateAuthority.create(directory: caDir, trustDomain: "cluster.local")
        let leaf = try ca.issue(identity: SpiffeID(uri: "spiffe://cluster.local/ns/a/sa/b")!, validSeconds: 3600)
        try leaf.write(certificatePath: directory.file("leaf.crt"), keyPath: directory.file("leaf.key"))
        let text = message {
            _ = try CertificateAuthority.load(
                certificatePath: directory.file("leaf.crt"),
                keyPath: directory.file("leaf.key")
            )
        }
        XCTAssertTrue(text.contains("is not a CA certificate"), text)
    }

    func testIssueAndVerify() throws {
        let ca = try CertificateAuthority.create(directory: caDir, trustDomain: "cluster.local")
        let identity = SpiffeID(trustDomain: "cluster.local", namespace: "demo", serviceAccount: "web")
        let leaf = try ca.issue(identity: identity, validSeconds: 3600)
        XCTAssertEqual(leaf.identity, identity)
        XCTAssertFalse(leaf.serial.isEmpty)
        XCTAssertEqual(leaf.notAfter - leaf.notBefore, 3660)
        XCTAssertTrue(leaf.privateKeyPEM.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        let facts = CertificateFacts(leaf.x509)
        XCTAssertEqual(facts.subject, "")
        XCTAssertEqual(facts.uris, [identity.uri])
        XCTAssertEqual(facts.isCA, false)
        XCTAssertNoThrow(try ca.verify(leaf))
        XCTAssertNotEqual(try ca.issue(identity: identity, validSeconds: 60).serial, leaf.serial)

        let expired = try ca.issue(identity: identity, validSeconds: -3600)
        let text = message { try ca.verify(expired) }
        XCTAssertTrue(text.hasSuffix("certificate verify failed: certificate has expired"), text)

        let other = try CertificateAuthority.create(directory: directory.file("other"), trustDomain: "cluster.local")
        let foreign = try other.issue(identity: identity, validSeconds: 3600)
        XCTAssertTrue(message { try ca.verify(foreign) }.contains("unable to get local issuer certificate"))

        let wrongDomain = message {
            _ = try ca.issue(identity: SpiffeID(uri: "spiffe://elsewhere/ns/a/sa/b")!, validSeconds: 60)
        }
        XCTAssertEqual(wrongDomain, "spiffe://elsewhere/ns/a/sa/b is not in this CA's trust domain cluster.local")
    }

    func testWorkloadCertificateWriteAndLoad() throws {
        let ca = try CertificateAuthority.create(directory: caDir, trustDomain: "cluster.local")
        let identity = SpiffeID(trustDomain: "cluster.local", namespace: "demo", serviceAccount: "api")
        let leaf = try ca.issue(identity: identity, validSeconds: 86400)
        let crt = directory.file("api.crt")
        let key = directory.file("api.key")
        // An existing world-readable key file is replaced by one with mode 0600.
        try write("old", to: key, mode: 0o644)
        try leaf.write(certificatePath: crt, keyPath: key)
        XCTAssertEqual(mode(key), 0o600)
        XCTAssertEqual(mode(crt), 0o644)
        let loaded = try WorkloadCertificate.load(certificatePath: crt, keyPath: key)
        XCTAssertEqual(loaded.identity, identity)
        XCTAssertEqual(loaded.serial, leaf.serial)
        XCTAssertEqual(loaded.notAfter, leaf.notAfter)
        XCTAssertEqual(loaded.certificatePEM, leaf.certificatePEM)
        XCTAssertNoThrow(try ca.verify(loaded))

        let other = try ca.issue(identity: identity, validSeconds: 60)
        try other.write(certificatePath: directory.file("other.crt"), keyPath: directory.file("other.key"))
        let mismatch = message {
            _ = try WorkloadCertificate.load(certificatePath: crt, keyPath: directory.file("other.key"))
        }
        XCTAssertTrue(mismatch.contains("does not match \(crt)"), mismatch)

        chmod(key, 0o644)
        let readable = message { _ = try WorkloadCertificate.load(certificatePath: crt, keyPath: key) }
        XCTAssertEqual(
            readable,
            "\(key) is mode 0644: a workload key must be readable by its owner only (chmod 600 \(key))"
        )

        let asWorkload = message {
            _ = try WorkloadCertificate.load(certificatePath: caDir + "/ca.crt", keyPath: caDir + "/ca.key")
        }
        XCTAssertTrue(asWorkload.contains("is a CA certificate"), asWorkload)
    }
}
