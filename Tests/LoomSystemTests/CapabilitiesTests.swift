import Foundation
import Testing

@testable import LoomSystem

@Suite struct CapabilitiesTests {
    @Test func masksAndNames() {
        #expect(Capability.netAdmin.bit == 0x1000)
        #expect(Capability.checkpointRestore.bit == 1 << 40)
        let loomd = Capabilities.mask([.netAdmin, .sysAdmin, .sysPtrace])
        #expect(loomd == 0x28_1000)
        #expect(Capabilities.names(loomd) == ["net_admin", "sys_ptrace", "sys_admin"])
        #expect(Capabilities.names(1 << 41 | 1) == ["chown", "cap_41"])
        #expect(Capabilities.names(0) == [])
        #expect(Capability.dacReadSearch.name == "dac_read_search")
        #expect(Capability.sysTtyConfig.name == "sys_tty_config")
        // Numbered as in linux/capability.h: no gaps, the last one is 40.
        #expect(Capability.allCases.map(\.rawValue) == Array(0...40))
    }

    @Test func summaryCountsWhatWasPermittedOrBounded() {
        let all: UInt64 = (1 << 41) - 1
        let kept = Capabilities.mask([.netAdmin, .sysAdmin, .sysPtrace])
        #expect(
            Capabilities.summary(before: (all, all, all), after: (kept, kept, kept))
                == "kept net_admin, sys_admin, sys_ptrace; dropped 38 others"
        )
        // Under a unit whose bounding set is already the three: nothing else to drop.
        #expect(
            Capabilities.summary(before: (kept, kept, kept), after: (kept, kept, kept))
                == "kept net_admin, sys_admin, sys_ptrace; dropped 0 others"
        )
        // A capability asked for but missing is not "kept".
        let two = Capabilities.mask([.netAdmin, .sysAdmin])
        #expect(
            Capabilities.summary(before: (all, all, two), after: (two, two, two))
                == "kept net_admin, sys_admin; dropped 39 others"
        )
        #expect(Capabilities.summary(before: (0, 0, 0), after: (0, 0, 0)) == "kept none; dropped 0 others")
    }

    /// capget's two 32-bit words and PR_CAPBSET_READ give what the kernel shows for this
    /// thread in /proc (capabilities above 31 included).
    @Test func currentMatchesProcStatus() throws {
        let status = try String(contentsOfFile: "/proc/thread-self/status", encoding: .utf8)
        func field(_ name: String) -> UInt64? {
            status.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .flatMap { UInt64($0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces), radix: 16) }
        }
        let current = Capabilities.current()
        #expect(current.effective == (try #require(field("CapEff"))))
        #expect(current.permitted == (try #require(field("CapPrm"))))
        #expect(current.bounding == (try #require(field("CapBnd"))))
        #expect(Capabilities.lastCapability >= 40)
    }
}
