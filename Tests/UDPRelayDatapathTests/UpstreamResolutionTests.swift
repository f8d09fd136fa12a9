import Logging
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

final class UpstreamResolutionTests: XCTestCase {
    func testResolvesNamesAndReportsFailures() {
        guard case .success(let all) = UpstreamTable.resolve(host: "localhost", port: 53), let a = all.first else {
            return XCTFail("localhost must resolve")
        }
        XCTAssertTrue(all.allSatisfy(\.ip.isLoopback), "\(all)")
        XCTAssertEqual(a.port, 53)
        XCTAssertEqual(Set(all).count, all.count, "each address once")
        guard case .failure(let e) = UpstreamTable.resolve(host: "no-such-host.invalid", port: 53) else {
            return XCTFail("a .invalid name must not resolve")
        }
        XCTAssertFalse(e.description.isEmpty)
    }

    func testUnresolvableUpstreamTakesNoSessionsAndIsLogged() throws {
        let lc = ListenerConfiguration(
            name: "r", listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 0)], mode: .balance,
            upstreams: [try UpstreamEndpoint(parsing: "no-such-host.invalid:53"), try UpstreamEndpoint(parsing: "127.0.0.1:9")])
        let table = UpstreamTable(configuration: lc, workers: 1, logger: Logger(label: "test"))
        table.awaitInitialResolution()
        XCTAssertNil(table.address(0))
        XCTAssertFalse(table.isUp(0, now: 1))
        XCTAssertTrue(table.isUp(1, now: 1))
        XCTAssertEqual(table.snapshot().map(\.endpoint), ["no-such-host.invalid:53", "127.0.0.1:9"])
        XCTAssertEqual(table.snapshot().map(\.state), ["unresolved", "up"])
        XCTAssertEqual(table.snapshot()[0].lastError?.hasPrefix("cannot resolve: "), true, "why it takes no traffic")
        XCTAssertNil(table.snapshot()[1].lastError, "no failure yet")
        table.recordFailure(1, now: 1, errno: ECONNREFUSED)
        table.recordFailure(1, now: 2, errno: ECONNREFUSED)
        table.recordFailure(1, now: 3, errno: ECONNREFUSED)  // max_fails = 3 within fail_timeout
        XCTAssertEqual(table.snapshot(now: 4).map(\.state), ["unresolved", "down"])
        XCTAssertEqual(table.snapshot(now: 4)[1].lastError, "connection refused (ICMP port unreachable)", "why it is down")
        XCTAssertFalse(table.isUp(1, now: 4))
        XCTAssertTrue(table.isUp(1, now: 3 + Duration.seconds(10).nanoseconds), "back after fail_timeout")
    }

    func testReResolutionKeepsLastGoodAddressLogsOnceAndBumpsGenerationOnChange() throws {
        let answers = ResolverScript([.success("192.0.2.1"), .failure, .failure, .success("192.0.2.1"), .success("192.0.2.2")])
        let lc = ListenerConfiguration(
            name: "r", listen: [SocketAddress(ip: .v4(0x7F00_0001), port: 0)], mode: .forward,
            upstreams: [try UpstreamEndpoint(parsing: "dns.example:53")])
        let log = CapturedLog()
        let table = UpstreamTable(
            configuration: lc, workers: 1, logger: Logger(label: "t") { _ in log },
            resolver: { _, port in answers.next(port: port) })
        table.awaitInitialResolution()
        XCTAssertEqual(table.address(0)?.description, "192.0.2.1:53")
        let g0 = table.generation[0]
        table.resolveNames().wait()  // fails: keeps the address
        table.resolveNames().wait()  // fails again: not logged again
        XCTAssertEqual(table.address(0)?.description, "192.0.2.1:53")
        XCTAssertTrue(table.isUp(0, now: 1), "the last good address keeps serving")
        XCTAssertEqual(log.lines.filter { $0.contains("cannot resolve upstream") }.count, 1, log.lines.joined(separator: "\n"))
        table.resolveNames().wait()  // same address again
        XCTAssertEqual(table.generation[0], g0, "no change, no reconnect")
        XCTAssertEqual(log.lines.filter { $0.contains("resolves again") }.count, 1)
        table.resolveNames().wait()  // a new address: new sessions take it, the old one drains
        XCTAssertEqual(table.snapshot().filter { !$0.removed }.map { $0.address?.description }, ["192.0.2.2:53"])
        XCTAssertEqual(table.snapshot().filter(\.removed).map { $0.address?.description }, ["192.0.2.1:53"])
        XCTAssertNotEqual(table.generation[0], g0, "workers with long-lived sockets reconnect")
    }
}

/// Scripted resolver answers, one per call.
final class ResolverScript: @unchecked Sendable {
    // @unchecked: `answers` is guarded by `lock`.
    enum Answer {
        case success(String)
        case failure
    }
    private let lock = NSLock()
    private var answers: [Answer]
    init(_ answers: [Answer]) { self.answers = answers }
    func next(port: UInt16) -> Result<[SocketAddress], UpstreamTable.ResolveError> {
        lock.lock()
        defer { lock.unlock() }
        switch answers.removeFirst() {
        case .success(let ip): return .success([SocketAddress(ip: IPAddress(literal: ip)!, port: port)])
        case .failure: return .failure(UpstreamTable.ResolveError("Temporary failure in name resolution"))
        }
    }
}
