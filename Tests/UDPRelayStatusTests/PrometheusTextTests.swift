import Foundation
import NIOHTTP1
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

final class PrometheusTextTests: XCTestCase {
    func testEveryFamilyHasHelpAndTypeAndSamplesAreWellFormed() throws {
        let text = PrometheusText.render(Fixtures.snapshot(), server: Fixtures.server)
        XCTAssertTrue(text.hasSuffix("\n"))
        var typed: [String: String] = [:]
        var helped: Set<String> = []
        let sample = try NSRegularExpression(
            pattern: #"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$"#)
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# HELP ") {
                helped.insert(String(line.split(separator: " ")[2]))
            } else if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                XCTAssertNil(typed[String(parts[2])], "TYPE given twice for \(parts[2])")
                typed[String(parts[2])] = String(parts[3])
            } else {
                let range = NSRange(line.startIndex..., in: line)
                let m = try XCTUnwrap(sample.firstMatch(in: line, range: range), "malformed sample line: \(line)")
                let name = (line as NSString).substring(with: m.range(at: 1))
                XCTAssertNotNil(typed[name], "sample before its TYPE: \(line)")
                XCTAssertTrue(helped.contains(name), "no HELP for \(name)")
            }
        }
        for (name, type) in typed where type == "counter" {
            XCTAssertTrue(name.hasSuffix("_total"), "\(name): counters end in _total")
        }
    }

    func testNamesAndValues() {
        let text = PrometheusText.render(Fixtures.snapshot(), server: Fixtures.server)
        for line in [
            "udprelayd_build_info{version=\"1.2.3\"} 1",
            "process_start_time_seconds 1795600000.25",
            "udprelayd_config_generation 3",
            "udprelayd_config_last_reload_successful 0",
            "udprelayd_listener_info{listener=\"dns\",mode=\"echo\"} 1",
            "udprelayd_listener_bound{listener=\"dns\",address=\"[::1]:53\"} 1",
            "udprelayd_packets_received_total{listener=\"dns\"} 18446744073709551615",
            "udprelayd_bytes_sent_total{listener=\"dns\"} 700",
            "udprelayd_receive_errors_total{listener=\"dns\"} 2",
            "udprelayd_drops_total{listener=\"dns\",reason=\"send_error\"} 3",
            "udprelayd_drops_total{listener=\"game-relay\",reason=\"too_large\"} 0",
            "udprelayd_sessions_active{listener=\"game-relay\"} 5",
            "udprelayd_sessions_evicted_total{listener=\"game-relay\"} 1",
            "udprelayd_upstream_up{listener=\"game-relay\",upstream=\"10.0.0.1:27015\"} 1",
            "udprelayd_upstream_up{listener=\"game-relay\",upstream=\"10.0.0.2:27015\"} 0",
            "udprelayd_upstream_failures_total{listener=\"game-relay\",upstream=\"10.0.0.2:27015\"} 4",
            "udprelayd_status_connections_rejected_total{reason=\"not_allowed\"} 3",
            "udprelayd_status_accept_errors_total 6",
            "udprelayd_events_total{listener=\"game-relay\",event=\"fail_open\"} 2",
            "udprelayd_upstream_events_total{listener=\"game-relay\",upstream=\"10.0.0.1:27015\",event=\"probes_sent\"} 7",
        ] {
            XCTAssertTrue(text.contains("\n" + line + "\n"), "missing line: \(line)")
        }
        XCTAssertFalse(text.contains("udprelayd_sessions_active{listener=\"dns\"}"), "echo listeners have no session samples")
    }

    func testLabelValuesAreEscaped() {
        var s = Fixtures.snapshot()
        s.daemon.version = "a\"b\\c\nd"
        // The configuration allows only [A-Za-z0-9_-] in listener names; the renderer escapes anyway.
        s.listeners[1].name = "x\"y\\z\n"
        let text = PrometheusText.render(s, server: ServerCounters())
        XCTAssertTrue(text.contains(#"udprelayd_build_info{version="a\"b\\c\nd"} 1"#))
        XCTAssertTrue(text.contains(#"udprelayd_worker_packets_sent_total{listener="x\"y\\z\n",address="0.0.0.0:27015",worker="1"} 0"#), text)
    }

    func testPerWorkerFamiliesExactly() throws {
        let text = PrometheusText.render(Fixtures.snapshot(), server: Fixtures.server)
        // Every socket of every listener, in `workers` order; `worker` counts from 1 per address.
        let block = """
            # HELP udprelayd_worker_packets_received_total Datagrams received by one socket's worker.
            # TYPE udprelayd_worker_packets_received_total counter
            udprelayd_worker_packets_received_total{listener="dns",address="127.0.0.1:53",worker="1"} 60
            udprelayd_worker_packets_received_total{listener="dns",address="127.0.0.1:53",worker="2"} 40
            udprelayd_worker_packets_received_total{listener="dns",address="[::1]:53",worker="1"} 0
            udprelayd_worker_packets_received_total{listener="dns",address="[::1]:53",worker="2"} 18446744073709551515
            udprelayd_worker_packets_received_total{listener="game-relay",address="0.0.0.0:27015",worker="1"} 0
            # HELP udprelayd_worker_bytes_received_total Payload bytes received by one socket's worker.
            # TYPE udprelayd_worker_bytes_received_total counter
            udprelayd_worker_bytes_received_total{listener="dns",address="127.0.0.1:53",worker="1"} 6000
            udprelayd_worker_bytes_received_total{listener="dns",address="127.0.0.1:53",worker="2"} 4000
            udprelayd_worker_bytes_received_total{listener="dns",address="[::1]:53",worker="1"} 0
            udprelayd_worker_bytes_received_total{listener="dns",address="[::1]:53",worker="2"} 990000
            udprelayd_worker_bytes_received_total{listener="game-relay",address="0.0.0.0:27015",worker="1"} 0
            # HELP udprelayd_worker_packets_sent_total Datagrams sent by one socket's worker.
            # TYPE udprelayd_worker_packets_sent_total counter
            udprelayd_worker_packets_sent_total{listener="dns",address="127.0.0.1:53",worker="1"} 4
            udprelayd_worker_packets_sent_total{listener="dns",address="127.0.0.1:53",worker="2"} 3
            udprelayd_worker_packets_sent_total{listener="dns",address="[::1]:53",worker="1"} 0
            udprelayd_worker_packets_sent_total{listener="dns",address="[::1]:53",worker="2"} 0
            udprelayd_worker_packets_sent_total{listener="game-relay",address="0.0.0.0:27015",worker="1"} 0
            # HELP udprelayd_worker_bytes_sent_total Payload bytes sent by one socket's worker.
            # TYPE udprelayd_worker_bytes_sent_total counter
            udprelayd_worker_bytes_sent_total{listener="dns",address="127.0.0.1:53",worker="1"} 400
            udprelayd_worker_bytes_sent_total{listener="dns",address="127.0.0.1:53",worker="2"} 300
            udprelayd_worker_bytes_sent_total{listener="dns",address="[::1]:53",worker="1"} 0
            udprelayd_worker_bytes_sent_total{listener="dns",address="[::1]:53",worker="2"} 0
            udprelayd_worker_bytes_sent_total{listener="game-relay",address="0.0.0.0:27015",worker="1"} 0

            """
        XCTAssertTrue(text.contains("\n" + block), text)
        // Between the listener's session families and the upstream families.
        let sessions = try XCTUnwrap(text.range(of: "# HELP udprelayd_sessions_evicted_total"))
        let workers = try XCTUnwrap(text.range(of: "# HELP udprelayd_worker_packets_received_total"))
        let upstreams = try XCTUnwrap(text.range(of: "# HELP udprelayd_upstream_up"))
        XCTAssertTrue(sessions.lowerBound < workers.lowerBound && workers.lowerBound < upstreams.lowerBound)

        // The families stay, without samples, when no listener has a socket.
        var empty = Fixtures.snapshot()
        empty.listeners = []
        let bare = PrometheusText.render(empty, server: ServerCounters())
        XCTAssertTrue(bare.contains("# TYPE udprelayd_worker_packets_received_total counter\n# HELP udprelayd_worker_bytes_received_total"), bare)
    }
}
