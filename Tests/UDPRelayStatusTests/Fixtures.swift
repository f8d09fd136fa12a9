import Foundation
import NIOHTTP1
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

/// A source with fixed contents, for rendering and routing tests.
struct FixedSource: StatusSource {
    var value: StatusSnapshot
    var health: [String] = []
    func snapshot() -> StatusSnapshot { value }
    func problems() async -> [String] { health }
}

enum Fixtures {
    static let drops = ["too_large", "send_buffer_full", "refused", "send_error"]

    static func snapshot() -> StatusSnapshot {
        StatusSnapshot(
            daemon: DaemonInfo(version: "1.2.3", pid: 4242, startTime: 1_795_600_000.25),
            config: ConfigInfo(
                path: "/etc/udprelayd/udprelayd.ini", generation: 3, loadedAt: 1_795_600_100.5,
                lastReload: ReloadInfo(ok: false, at: 1_795_600_200, errors: ["x.ini:3: [listener a] mode: bad \"value\""])),
            listeners: [
                ListenerStatus(
                    name: "dns", mode: "echo", addresses: ["127.0.0.1:53", "[::1]:53"],
                    received: Traffic(packets: UInt64.max, bytes: 1_000_000), sent: Traffic(packets: 7, bytes: 700),
                    receiveErrors: 2,
                    drops: drops.enumerated().map { DropCount(reason: $1, count: UInt64($0)) },
                    workers: [
                        WorkerStatus(
                            address: "127.0.0.1:53", number: 1, of: 2, received: Traffic(packets: 60, bytes: 6000), sent: Traffic(packets: 4, bytes: 400)),
                        WorkerStatus(
                            address: "127.0.0.1:53", number: 2, of: 2, received: Traffic(packets: 40, bytes: 4000), sent: Traffic(packets: 3, bytes: 300)),
                        WorkerStatus(address: "[::1]:53", number: 1, of: 2),
                        WorkerStatus(address: "[::1]:53", number: 2, of: 2, received: Traffic(packets: UInt64.max - 100, bytes: 990_000)),
                    ]),
                ListenerStatus(
                    name: "game-relay", mode: "relay", addresses: ["0.0.0.0:27015"],
                    drops: drops.map { DropCount(reason: $0, count: 0) },
                    sessions: SessionCounters(active: 5, created: 9, expired: 3, evicted: 1),
                    upstreams: [
                        UpstreamStatus(
                            address: "10.0.0.1:27015", state: "up", sent: Traffic(packets: 10, bytes: 1000),
                            received: Traffic(packets: 9, bytes: 900), failures: 0,
                            counters: [NamedCounter("probes_sent", 7)]),
                        UpstreamStatus(address: "10.0.0.2:27015", state: "down", failures: 4),
                    ],
                    counters: [NamedCounter("fail_open", 2), NamedCounter("sessions_closed", 0)],
                    workers: [WorkerStatus(address: "0.0.0.0:27015")]),
            ],
            time: 1_795_600_300.75
        )
    }

    static var server: ServerCounters {
        var c = ServerCounters()
        c.accepted = 10
        c.open = 2
        c.rejectedNotAllowed = 3
        c.acceptErrors = 6
        c.rejectedLimit = 1
        c.requests = 20
        return c
    }
}
