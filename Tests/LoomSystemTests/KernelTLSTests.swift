import Foundation
import Testing

@testable import LoomSystem

@Suite struct KernelTLSTests {
    /// The probe agrees with the kernel's own evidence: a loaded `tls` module shows in
    /// /sys/module after TCP_ULP asked for it (the kernel loads it on demand), and its
    /// absence means ENOENT. It leaves no descriptor open.
    @Test func probeMatchesTheKernelAndLeaksNothing() throws {
        let before = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
        let result = KernelTLS.probe()
        let after = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
        #expect(after == before)
        let moduleLoaded = FileManager.default.fileExists(atPath: "/sys/module/tls")
        if moduleLoaded {
            #expect(result == .available)
        } else {
            #expect(result == .unavailable(errno: ENOENT))
            #expect(result.description.contains("no tls module"))
        }
    }
}
