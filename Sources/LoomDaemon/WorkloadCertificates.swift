// Workload certificates: loomd is the mesh CA's issuer on its node. Each intercepted pod
// gets an ECDSA key (in memory only, never written) and a short-lived certificate whose
// URI SAN is its SPIFFE ID, spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
// The ticker re-issues a certificate when half its lifetime is gone; the new TLS
// context is installed in the pod's `PodTLS` for new connections, while connections in
// flight keep the context (and certificate) they started with.
import Foundation
import Logging
import LoomRelay
import LoomSystem
import LoomTLS

/// Where the mesh CA comes from and how long workload certificates live.
public struct MeshTLSSettings: Sendable, Equatable {
    /// A directory with `ca.crt` and `ca.key` (`loomctl ca init`).
    public var caDirectory: String?
    /// Or an existing CA's certificate and key files.
    public var caCertificate: String?
    public var caKey: String?
    /// Overrides (or, for a CA certificate without a `spiffe://` URI SAN, supplies) the
    /// trust domain.
    public var trustDomain: String?
    /// Lifetime of workload certificates (seconds).
    public var certificateSeconds: Int64

    public init(
        caDirectory: String? = nil,
        caCertificate: String? = nil,
        caKey: String? = nil,
        trustDomain: String? = nil,
        certificateSeconds: Int64 = 86400
    ) {
        self.caDirectory = caDirectory
        self.caCertificate = caCertificate
        self.caKey = caKey
        self.trustDomain = trustDomain
        self.certificateSeconds = certificateSeconds
    }

    /// Loads the CA, with the checks `CertificateAuthority` makes (permissions, key match,
    /// validity): a clear error before anything is applied.
    public func loadAuthority() throws -> CertificateAuthority {
        if let dir = caDirectory {
            return try CertificateAuthority.load(directory: dir, trustDomain: trustDomain)
        }
        guard let cert = caCertificate, let key = caKey else {
            throw TLSSettingsError(message: "--ca-cert and --ca-key go together: give both, or --ca-dir")
        }
        return try CertificateAuthority.load(certificatePath: cert, keyPath: key, trustDomain: trustDomain)
    }
}

struct TLSSettingsError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// Issues and rotates the pods' workload certificates.
final class WorkloadCertificates: @unchecked Sendable {
    // @unchecked: `issued` is touched only with `lock` held; the rest is immutable.
    let authority: CertificateAuthority
    let lifetimeSeconds: Int64
    private let kernelTLS: Bool
    private let logger: Logger
    private let lock = NSLock()
    /// Unix seconds each pod's current certificate was issued (by pod id).
    private var issued: [Int: Int64] = [:]
    /// Certificates issued over loomd's life (initial and rotations), and failures.
    private(set) var issuedCount = 0
    private(set) var failures = 0

    init(authority: CertificateAuthority, lifetimeSeconds: Int64, kernelTLS: Bool, logger: Logger) {
        self.authority = authority
        self.lifetimeSeconds = lifetimeSeconds
        self.kernelTLS = kernelTLS
        self.logger = logger
    }

    /// The pod's SPIFFE ID.
    func identity(of pod: PodContext) -> SpiffeID {
        SpiffeID(trustDomain: authority.trustDomain, namespace: pod.namespace, serviceAccount: pod.serviceAccount)
    }

    /// Issues a certificate for the pod and installs it for new connections.
    func issue(for pod: PodContext) throws {
        let now = Int64(Date().timeIntervalSince1970)
        let certificate = try authority.issue(identity: identity(of: pod), validSeconds: lifetimeSeconds)
        let context = try TLSContext(certificate: certificate, authority: authority, kernelTLS: kernelTLS)
        pod.tls.install(context)
        lock.withLock {
            issued[pod.id] = now
            issuedCount += 1
        }
    }

    /// Re-issues every certificate past half its lifetime. Called by the ticker.
    func rotateDue(_ pods: [PodContext]) {
        let now = Int64(Date().timeIntervalSince1970)
        for pod in pods {
            let due = lock.withLock { issued[pod.id].map { now - $0 >= lifetimeSeconds / 2 } ?? true }
            guard due else { continue }
            let old = pod.tls.context?.certificate.serial ?? "none"
            do {
                try issue(for: pod)
                logger.info(
                    "pod \(pod.name): workload certificate rotated (serial \(old) -> \(pod.tls.context?.certificate.serial ?? "?"), \(identity(of: pod)))"
                )
            } catch {
                lock.withLock { failures += 1 }
                // The old certificate stays in use; the next tick tries again.
                logger.error("pod \(pod.name): cannot rotate its workload certificate: \(error)")
            }
        }
    }

    /// A pod is gone: forget it.
    func forget(_ pod: PodContext) {
        lock.withLock { _ = issued.removeValue(forKey: pod.id) }
        pod.tls.install(nil)
    }
}
