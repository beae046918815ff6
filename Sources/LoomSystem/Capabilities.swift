// Linux capabilities: what this process may still do as root, and giving up the rest.
// Capabilities belong to threads; `restrict` changes every thread of the process (see
// CModules/CLoomLinux/caps.c), `current` reads the calling thread's.
import CLoomLinux

#if canImport(Glibc)
    import Glibc
#endif

/// A Linux capability, numbered as in linux/capability.h.
public enum Capability: Int, CaseIterable, Sendable {
    case chown = 0
    case dacOverride = 1
    case dacReadSearch = 2
    case fowner = 3
    case fsetid = 4
    case kill = 5
    case setgid = 6
    case setuid = 7
    case setpcap = 8
    case linuxImmutable = 9
    case netBindService = 10
    case netBroadcast = 11
    case netAdmin = 12
    case netRaw = 13
    case ipcLock = 14
    case ipcOwner = 15
    case sysModule = 16
    case sysRawio = 17
    case sysChroot = 18
    case sysPtrace = 19
    case sysPacct = 20
    case sysAdmin = 21
    case sysBoot = 22
    case sysNice = 23
    case sysResource = 24
    case sysTime = 25
    case sysTtyConfig = 26
    case mknod = 27
    case lease = 28
    case auditWrite = 29
    case auditControl = 30
    case setfcap = 31
    case macOverride = 32
    case macAdmin = 33
    case syslog = 34
    case wakeAlarm = 35
    case blockSuspend = 36
    case auditRead = 37
    case perfmon = 38
    case bpf = 39
    case checkpointRestore = 40

    /// Its bit in a capability mask.
    public var bit: UInt64 { 1 << UInt64(rawValue) }

    /// The kernel's name without `CAP_`, lower case: `net_admin`.
    public var name: String {
        var out = ""
        for character in String(describing: self) {
            if character.isUppercase { out += "_" + character.lowercased() } else { out.append(character) }
        }
        return out
    }
}

/// Reading and restricting the capabilities of this process.
public enum Capabilities {
    /// Keeps exactly `keeping` (what the process has of it) in the effective and permitted
    /// sets of every thread, clears the inheritable and ambient sets, drops every other
    /// capability from the bounding set, and sets no_new_privs. A capability asked for
    /// that the process no longer has (a unit's CapabilityBoundingSet, a pod's
    /// securityContext) is simply not kept. Irreversible.
    public static func restrict(keeping: [Capability]) throws(SystemError) {
        var threads: CInt = 0
        var stage: CInt = 0
        let result = cloom_cap_restrict_process(mask(keeping), CInt(lastCapability), 5000, &threads, &stage)
        if result < 0 { throw SystemError(call(stage), errno: -result) }
    }

    /// The calling thread's effective and permitted sets and its bounding set, as masks.
    public static func current() -> (effective: UInt64, permitted: UInt64, bounding: UInt64) {
        var effective: UInt64 = 0
        var permitted: UInt64 = 0
        var inheritable: UInt64 = 0
        if cloom_cap_get(&effective, &permitted, &inheritable) < 0 {
            effective = 0
            permitted = 0
        }
        var bounding: UInt64 = 0
        for cap in 0..<64 where cloom_cap_bounding_has(CInt(cap)) == 1 { bounding |= 1 << UInt64(cap) }
        return (effective, permitted, bounding)
    }

    /// The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap); 63 if
    /// unreadable (unknown numbers are skipped).
    public static var lastCapability: Int {
        min(max(SystemProcess.readInteger(path: "/proc/sys/kernel/cap_last_cap") ?? 63, 0), 63)
    }

    /// The mask of a list of capabilities.
    public static func mask(_ capabilities: [Capability]) -> UInt64 {
        capabilities.reduce(0) { $0 | $1.bit }
    }

    /// The names of the capabilities in `mask`, lowest first (`cap_41` for one this code
    /// does not name).
    public static func names(_ mask: UInt64) -> [String] {
        (0..<64).filter { mask & (1 << UInt64($0)) != 0 }.map { Capability(rawValue: $0)?.name ?? "cap_\($0)" }
    }

    /// What a restriction did, for the log: "kept net_admin, sys_admin; dropped 38 others"
    /// (names in alphabetical order). Dropped: what was permitted or in the bounding set
    /// before and is not permitted now.
    public static func summary(
        before: (effective: UInt64, permitted: UInt64, bounding: UInt64),
        after: (effective: UInt64, permitted: UInt64, bounding: UInt64)
    ) -> String {
        let kept = names(after.permitted).sorted()
        let dropped = ((before.permitted | before.bounding) & ~after.permitted).nonzeroBitCount
        return "kept \(kept.isEmpty ? "none" : kept.joined(separator: ", ")); dropped \(dropped) others"
    }

    private static func call(_ stage: CInt) -> StaticString {
        switch stage {
        case CLOOM_CAP_STAGE_BOUNDING: return "prctl(PR_CAPBSET_DROP)"
        case CLOOM_CAP_STAGE_NO_NEW_PRIVS: return "prctl(PR_SET_NO_NEW_PRIVS)"
        case CLOOM_CAP_STAGE_CAPGET: return "capget"
        case CLOOM_CAP_STAGE_AMBIENT: return "prctl(PR_CAP_AMBIENT)"
        case CLOOM_CAP_STAGE_SIGNAL: return "tgkill(SIGSYS)"
        case CLOOM_CAP_STAGE_THREADS: return "capset (every thread)"
        default: return "capset"
        }
    }
}
