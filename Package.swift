// swift-tools-version:6.0
import PackageDescription

// Dependencies point one way:
//   UDPRelayConfig (pure) -> UDPRelayDatapath (sockets) -> status / systemd glue -> udprelayd (thin executable)
// UDPRelayConfig also holds the process's one clock (`SystemClock`), so every module reads time
// the same way; that is why the systemd glue depends on it.
let package = Package(
    name: "udprelayd",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "udprelayd", targets: ["udprelayd"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
    ],
    targets: [
        // The only place that imports libsystemd.
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        // mmsghdr, recvmmsg/sendmmsg and the CMSG macros are behind _GNU_SOURCE, which
        // Swift's Glibc module does not see; this tiny C target exposes them.
        .target(
            name: "CUDPRelay",
            cSettings: [.define("_GNU_SOURCE")]
        ),
        // INI file -> typed configuration. Pure: no I/O beyond reading the file. Also SystemClock,
        // the one clock every module reads.
        .target(
            name: "UDPRelayConfig"
        ),
        // Sockets, the syscall wrapper, batched I/O, listeners and counters.
        .target(
            name: "UDPRelayDatapath",
            dependencies: [
                "UDPRelayConfig",
                "CUDPRelay",
                .product(name: "Logging", package: "swift-log"),
                // pthread_mutex locks ThreadSanitizer sees (Synchronization.Mutex's futex it does not).
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        // systemd glue: sd_notify, watchdog, socket activation, journald, and continuity across
        // restarts through the file descriptor store (hence the datapath). The only importer of CSystemd.
        .target(
            name: "UDPRelaySystemd",
            dependencies: [
                "CSystemd",
                "UDPRelayConfig",
                "UDPRelayDatapath",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The HTTP status endpoint: renders a plain snapshot value the executable supplies.
        .target(
            name: "UDPRelayStatus",
            dependencies: [
                "UDPRelayConfig",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "udprelayd",
            dependencies: [
                "UDPRelayConfig",
                "UDPRelayDatapath",
                "UDPRelaySystemd",
                "UDPRelayStatus",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // Helpers shared by the test targets: a UDP client and the daemon run as a child process.
        .target(
            name: "TestSupport",
            dependencies: ["UDPRelayConfig"],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "UDPRelayConfigTests",
            dependencies: ["UDPRelayConfig", "TestSupport"]
        ),
        .testTarget(
            name: "UDPRelayDatapathTests",
            dependencies: [
                "UDPRelayDatapath", "UDPRelayConfig", "CUDPRelay", "TestSupport",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "UDPRelaySystemdTests",
            dependencies: [
                "UDPRelaySystemd", "UDPRelayDatapath", "UDPRelayConfig", "CUDPRelay", "TestSupport", .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "UDPRelayStatusTests",
            dependencies: [
                "UDPRelayStatus",
                "UDPRelayConfig",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["UDPRelayConfig", "TestSupport"],
            // Run by StatusEndToEndTests with Debian's python3.
            exclude: ["status_e2e.py", "fleet_ecmp.py"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
