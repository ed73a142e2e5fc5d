// swift-tools-version:6.1
import PackageDescription

/// A SwiftNIO product by name.
func nio(_ name: String) -> Target.Dependency { .product(name: name, package: "swift-nio") }

/// The daemon's library modules, in dependency order.
let stormModules: [Target.Dependency] = [
    "StormCore", "StormConfiguration", "StormObservability", "StormBroker", "StormNATS", "StormStore",
    "StormPresence", "StormHTTP", "StormGateway", "StormConsumer", "StormWeb",
]

/// Each daemon module's test target sees the modules (integration suites run whole gateways) and the
/// shared support.
let daemonTestDependencies: [Target.Dependency] = stormModules + [
    "StormTestSupport",
    .product(name: "JWTKit", package: "jwt-kit"),
    .product(name: "Crypto", package: "swift-crypto"),
    .product(name: "Logging", package: "swift-log"),
    .product(name: "Prometheus", package: "swift-prometheus"),
    .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
    .product(name: "NIOSSL", package: "swift-nio-ssl"),
    .product(name: "Tracing", package: "swift-distributed-tracing"),
    .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
    nio("NIOCore"), nio("NIOPosix"), nio("NIOHTTP1"), nio("NIOEmbedded"), nio("NIOTLS"), nio("NIOConcurrencyHelpers"),
    nio("NIOWebSocket"),
]

/// STORM: a real-time messaging backend. See README.md for the tour and docs/ for the protocol.
let package = Package(
    name: "storm",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "stormd", targets: ["stormd"]),
        .executable(name: "stormctl", targets: ["stormctl"]),
        .executable(name: "stormtop", targets: ["stormtop"]),
        .library(name: "StormCore", targets: ["StormCore"]),
    ],
    traits: [
        // The OTLP trace exporter (swift-otel, about 7 minutes more of a clean build): off by default;
        // `swift build --traits OTLP`. Without it stormd still accepts and forwards W3C trace context.
        .trait(name: "OTLP", description: "Export traces over OTLP/HTTP with swift-otel (--otlp-endpoint)"),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.0.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        // C libraries from Debian: module map + shim header only.
        .systemLibrary(name: "CNATS", pkgConfig: "libnats", providers: [.apt(["libnats-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CNCursesW", pkgConfig: "ncursesw", providers: [.apt(["libncursesw5-dev"])]),
        // epoll and eventfd, which Glibc's module does not export (header only).
        .target(name: "CStormLinux"),

        // The programs' shared model: ChannelName, the envelope codec, errors, API clients, Prometheus parser.
        .target(
            name: "StormCore",
            dependencies: [
                "CHiredis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The web page and storm.js as real files (Resources/), copied into the target's resource bundle.
        .target(name: "StormWeb", resources: [.copy("Resources")]),
        // stormd's settings: names, layered sources (flags, STORM_* variables, file) and value parsing.
        .target(name: "StormConfiguration", dependencies: ["StormCore", nio("NIOCore")]),
        // Metrics (fixed labels), tracing, JSON logs, systemd notification: what every role reports.
        .target(
            name: "StormObservability",
            dependencies: [
                "StormCore", nio("NIOCore"), nio("NIOHTTP1"), nio("NIOConcurrencyHelpers"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "OTel", package: "swift-otel", condition: .when(traits: ["OTLP"])),
            ]
        ),
        // The MessageBroker protocol, its in-memory engine, the control plane's contract, and the one publish
        // path (Publisher).
        .target(
            name: "StormBroker",
            dependencies: [
                "StormCore", "StormObservability", nio("NIOCore"), nio("NIOPosix"), nio("NIOConcurrencyHelpers"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // The only importer of nats.c: the NATS connection, JetStream (stream, acks, reads, pull consumer)
        // and the NATS engine of MessageBroker.
        .target(
            name: "StormNATS",
            dependencies: [
                "CNATS", "StormCore", "StormObservability", "StormBroker",
                nio("NIOCore"), nio("NIOPosix"), nio("NIOConcurrencyHelpers"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
            ]
        ),
        // The only importer of libpq: the PostgreSQL client, history and auth stores, migrations.
        .target(
            name: "StormStore",
            dependencies: [
                "CLibPQ", "StormCore", "StormConfiguration", "StormObservability",
                nio("NIOCore"), nio("NIOPosix"), nio("NIOConcurrencyHelpers"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Presence: the tracker, its writer loop, the memory and Redis stores.
        .target(
            name: "StormPresence",
            dependencies: [
                "StormCore", "StormConfiguration", "StormObservability", "StormBroker",
                nio("NIOCore"), nio("NIOPosix"), nio("NIOConcurrencyHelpers"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
            ]
        ),
        // The HTTP server every role shares: request handling, Host/Origin policy, connection limits,
        // deadlines, responses; each role brings its route table.
        .target(
            name: "StormHTTP",
            dependencies: [
                "StormCore", "StormObservability",
                nio("NIOCore"), nio("NIOPosix"), nio("NIOHTTP1"), nio("NIOWebSocket"), nio("NIOConcurrencyHelpers"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The gateway role: wire codecs, protocol state machines, fan-out, sessions, routes, the server.
        .target(
            name: "StormGateway",
            dependencies: [
                "StormCore", "StormConfiguration", "StormObservability", "StormBroker", "StormNATS",
                "StormStore", "StormPresence", "StormHTTP", "StormWeb",
                nio("NIOCore"), nio("NIOPosix"), nio("NIOHTTP1"), nio("NIOWebSocket"), nio("NIOConcurrencyHelpers"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // The consumer role: JetStream → PostgreSQL, exactly once, and its routes on the shared HTTP server.
        .target(
            name: "StormConsumer",
            dependencies: [
                "StormCore", "StormObservability", "StormNATS", "StormStore", "StormHTTP",
                nio("NIOCore"), nio("NIOPosix"), nio("NIOHTTP1"), nio("NIOConcurrencyHelpers"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Atomics", package: "swift-atomics"),
            ]
        ),
        // The composition root: commands, configuration of the roles, the ServiceGroup.
        .executableTarget(
            name: "stormd",
            dependencies: [
                "StormCore", "StormWeb", "StormConfiguration", "StormObservability", "StormBroker", "StormNATS",
                "StormStore", "StormPresence", "StormHTTP", "StormGateway", "StormConsumer",
                nio("NIOCore"), nio("NIOPosix"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        .executableTarget(
            name: "stormctl",
            dependencies: [
                "StormCore", "CStormLinux",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // stormtop's engine without a terminal: polls, rates from deltas, views, alerts, recording and
        // replay, the screen laid out as text and the keys (unit-tested); the curses side is stormtop's.
        .target(
            name: "StormDashboard",
            dependencies: [
                "StormCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "stormtop",
            dependencies: [
                "StormCore", "StormDashboard", "CNCursesW",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "StormCoreTests",
            dependencies: [
                "StormCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]),
        .testTarget(name: "StormDashboardTests", dependencies: ["StormDashboard", "StormCore"]),
        // What the daemon's test suites share: real servers on private ports (NATS, PostgreSQL, Redis
        // come from ./scripts/test), gateways on port 0, raw sockets, condition waits.
        .target(
            name: "StormTestSupport",
            dependencies: stormModules + [
                nio("NIOCore"), nio("NIOPosix"), nio("NIOHTTP1"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/StormTestSupport"
        ),
        .testTarget(name: "StormConfigurationTests", dependencies: daemonTestDependencies),
        .testTarget(name: "StormObservabilityTests", dependencies: daemonTestDependencies),
        .testTarget(name: "StormBrokerTests", dependencies: daemonTestDependencies),
        .testTarget(name: "StormNATSTests", dependencies: daemonTestDependencies),
        .testTarget(name: "StormStoreTests", dependencies: daemonTestDependencies),
        .testTarget(name: "StormPresenceTests", dependencies: daemonTestDependencies),
        .testTarget(name: "StormHTTPTests", dependencies: daemonTestDependencies),
        .testTarget(name: "StormGatewayTests", dependencies: daemonTestDependencies),
        .testTarget(name: "StormWebTests", dependencies: daemonTestDependencies),
        .testTarget(name: "StormConsumerTests", dependencies: daemonTestDependencies),
    ],
    swiftLanguageModes: [.v6]
)

