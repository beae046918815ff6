// swift-tools-version:6.0
// Loom: a transparent proxy for service meshes. See README.md and ARCHITECTURE.md.
import PackageDescription

let package = Package(
    name: "Loom",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "loomd", targets: ["loomd"]),
        .executable(name: "loomctl", targets: ["loomctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
    ],
    targets: [
        // Only what Swift cannot call directly: _GNU_SOURCE calls, packed epoll_event,
        // netfilter socket options. No decisions in C.
        .target(name: "CLoomLinux", path: "CModules/CLoomLinux"),
        // nf_tables batches over libmnl + libnftnl (Debian: libmnl-dev, libnftnl-dev).
        .target(
            name: "CLoomNetfilter",
            path: "CModules/CLoomNetfilter",
            linkerSettings: [.linkedLibrary("nftnl"), .linkedLibrary("mnl"), .linkedLibrary("netfilter_queue")]
        ),
        // X.509 and TLS 1.3 through OpenSSL (Debian: libssl-dev). C returns facts only.
        .target(
            name: "CLoomTLS",
            path: "CModules/CLoomTLS",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        // The only Swift target that calls Glibc/C: fds, errno, one syscall helper.
        .target(name: "LoomSystem", dependencies: ["CLoomLinux"]),
        // Mutual TLS: SPIFFE identities, the mesh CA, workload certificates, TLS streams.
        .target(name: "LoomTLS", dependencies: ["CLoomTLS", "LoomSystem"]),
        // Event loops, connection state machines, splice relay, pipe pool.
        .target(
            name: "LoomRelay",
            dependencies: ["LoomSystem", "LoomMesh", "LoomTLS", .product(name: "Logging", package: "swift-log")]
        ),
        // nf_tables rule plans as data, rendered to nft text and to one netlink batch.
        .target(name: "LoomIntercept", dependencies: ["LoomSystem", "CLoomNetfilter"]),
        // Mesh configuration (YAML), snapshots, routes, load balancing, outlier detection,
        // first-bytes sniffing. Pure: no sockets.
        .target(
            name: "LoomMesh",
            dependencies: ["LoomSystem", .product(name: "Yams", package: "Yams")]
        ),
        // Trace hub (kernel verdicts joined to relay events), access log, Prometheus text.
        .target(
            name: "LoomTrace",
            dependencies: [
                "LoomRelay", "LoomSystem", "LoomIntercept", "LoomMesh",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Wiring: daemon options, configuration, interception manager, admin socket, signals.
        .target(
            name: "LoomDaemon",
            dependencies: [
                "LoomRelay", "LoomSystem", "LoomIntercept", "LoomMesh", "LoomTrace", "LoomTLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "loomd",
            dependencies: [
                "LoomDaemon",
                "LoomIntercept",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "loomctl",
            dependencies: [
                "LoomDaemon",
                "LoomMesh",
                "LoomRelay",
                "LoomIntercept",
                "LoomSystem",
                "LoomTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "LoomRelayTests", dependencies: ["LoomRelay", "LoomSystem"]),
        .testTarget(name: "LoomSystemTests", dependencies: ["LoomSystem"]),
        .testTarget(name: "LoomDaemonTests", dependencies: ["LoomDaemon", "LoomRelay", "LoomIntercept"]),
        .testTarget(name: "LoomMeshTests", dependencies: ["LoomMesh", "LoomSystem"]),
        .testTarget(name: "LoomTraceTests", dependencies: ["LoomTrace", "LoomRelay", "LoomSystem"]),
        .testTarget(name: "LoomTLSTests", dependencies: ["LoomTLS", "LoomSystem"]),
        .testTarget(name: "LoomInterceptTests", dependencies: ["LoomIntercept"], exclude: ["golden"]),
    ]
)
