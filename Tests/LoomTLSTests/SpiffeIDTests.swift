// SPIFFE IDs: the one accepted form, its short forms, and what is rejected.
import XCTest

@testable import LoomTLS

final class SpiffeIDTests: XCTestCase {
    func testParseAndFormat() throws {
        let id = try XCTUnwrap(SpiffeID(uri: "spiffe://cluster.local/ns/demo/sa/web-1"))
        XCTAssertEqual(id, SpiffeID(trustDomain: "cluster.local", namespace: "demo", serviceAccount: "web-1"))
        XCTAssertEqual(id.uri, "spiffe://cluster.local/ns/demo/sa/web-1")
        XCTAssertEqual("\(id)", id.uri)
        XCTAssertEqual(SpiffeID(uri: "spiffe://td_1.example-2/ns/A.b_c-d/sa/Default")?.serviceAccount, "Default")
    }

    func testRejects() {
        for text in [
            "", "spiffe://", "spiffe://cluster.local", "spiffe://cluster.local/", "spiffe://cluster.local/ns/demo",
            "spiffe://cluster.local/ns/demo/sa", "spiffe://cluster.local/ns/demo/sa/", "spiffe:///ns/demo/sa/web",
            "spiffe://cluster.local/ns//sa/web", "spiffe://cluster.local/ns/demo/sa/web/extra",
            "spiffe://cluster.local/ns/demo/sa/web?x=1", "spiffe://cluster.local/ns/demo/sa/web#f",
            "spiffe://cluster.local/namespace/demo/sa/web", "spiffe://cluster.local/ns/demo/serviceaccount/web",
            "SPIFFE://cluster.local/ns/demo/sa/web", "Spiffe://cluster.local/ns/demo/sa/web",
            "https://cluster.local/ns/demo/sa/web", "spiffe://Cluster.Local/ns/demo/sa/web",
            "spiffe://cluster.local:8443/ns/demo/sa/web", "spiffe://user@cluster.local/ns/demo/sa/web",
            "spiffe://cluster.local/ns/../sa/web", "spiffe://cluster.local/ns/./sa/web",
            "spiffe://cluster.local/ns/de mo/sa/web", "spiffe://cluster.local/ns/demo/sa/w%20b",
            " spiffe://cluster.local/ns/demo/sa/web", "spiffe://cluster.local/ns/demo/sa/web ",
            "spiffe://cluster.local//ns/demo/sa/web",
        ] {
            XCTAssertNil(SpiffeID(uri: text), "accepted \(text)")
        }
    }

    func testResolveShortForms() {
        let expected = SpiffeID(trustDomain: "mesh.test", namespace: "demo", serviceAccount: "web")
        XCTAssertEqual(SpiffeID.resolve("spiffe://mesh.test/ns/demo/sa/web", trustDomain: "other"), expected)
        XCTAssertEqual(SpiffeID.resolve("ns/demo/sa/web", trustDomain: "mesh.test"), expected)
        XCTAssertEqual(SpiffeID.resolve("demo/web", trustDomain: "mesh.test"), expected)
        for text in ["web", "demo/web/x", "ns/demo/web", "/demo/web", "demo/", "ns/demo/sa/", "spiffe://x/ns/a"] {
            XCTAssertNil(SpiffeID.resolve(text, trustDomain: "mesh.test"), "resolved \(text)")
        }
        XCTAssertNil(SpiffeID.resolve("demo/web", trustDomain: "Bad Domain"))
    }

    func testTrustDomains() {
        XCTAssertTrue(SpiffeID.isValidTrustDomain("cluster.local"))
        XCTAssertTrue(SpiffeID.isValidTrustDomain("a-b_c.9"))
        for bad in ["", "Cluster.local", "cluster.local/", "a b", "td:1"] {
            XCTAssertFalse(SpiffeID.isValidTrustDomain(bad), bad)
        }
    }
}
