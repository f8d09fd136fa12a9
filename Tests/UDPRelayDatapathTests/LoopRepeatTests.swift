import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

/// Issue 13 item 3, the loop breaker "whatever the configuration": two echo servers on ports
/// inside the ephemeral range look like clients to each other, but in their ping-pong every
/// datagram repeats the flow's previous payload. Such repeats from a local flow are capped;
/// a local flow whose payloads change is not, at any rate.
final class LoopRepeatTests: XCTestCase {
    func ip(_ s: String) -> IPAddress { IPAddress(literal: s)! }

    /// An echo filter with `loop_guard = no` (the breaker must hold anyway) on a fake clock: a
    /// total rate limit far above anything sent here makes the filter take the caller's time.
    func echoFilter(mode: ListenerMode = .echo) -> IngressFilter {
        let f = IngressFilter(ProtectionConfiguration(loopGuard: false, rateLimitTotal: Rate(perSecond: 1e12)), mode: mode, now: 0)
        XCTAssertTrue(f.needsClock)
        f.setLoopContext(
            LoopContext(
                listeners: [(SocketAddress(ip: ip("127.0.0.1"), port: 37011), false)], interfaces: [],
                ephemeral: 32768...60999))
        return f
    }

    /// How many of `count` datagrams from `source`, each with `payload(i)`, `f` serves at `now`.
    func served(
        _ f: IngressFilter, from source: SocketAddress, _ count: Int, now: UInt64,
        _ payload: (Int) -> [UInt8]
    ) -> Int {
        (0..<count).filter { i in
            payload(i).withUnsafeBytes { f.check(source, payload: $0, now: now) } == nil
        }.count
    }

    func bytes(_ n: Int, length: Int = 16) -> [UInt8] {
        var b = [UInt8](repeating: 0xAB, count: length)
        withUnsafeBytes(of: UInt64(n).littleEndian) { b.replaceSubrange(0..<8, with: $0) }
        return b
    }

    func testRepeatsFromALocalClientPortAreCappedChangingPayloadsNever() {
        let f = echoFilter()
        let peer = SocketAddress(ip: ip("127.0.0.1"), port: 37012)
        let second: UInt64 = 1_000_000_000
        let loop = Array("loop".utf8)
        // The first is new; every later one repeats it, and only the burst passes.
        XCTAssertEqual(
            served(f, from: peer, 1000, now: second) { _ in loop }, LoopBreaker.burst + 1,
            "a ping-pong with another echo server on a client port ends within the burst")
        XCTAssertEqual(
            loop.withUnsafeBytes { f.check(SocketAddress(ip: ip("::ffff:127.0.0.1"), port: 37012), payload: $0, now: second) },
            .dropLoop, "mapped form, same flow")
        // Over the next second, 10 repeats every 10 ms: the cap lets about 100 through, not 1000.
        let later = (1...100).map { step in served(f, from: peer, 10, now: second + UInt64(step) * 10_000_000) { _ in loop } }
        XCTAssertTrue((99...101).contains(later.reduce(0, +)), "\(later.reduce(0, +)) repeats served in the next second")
        // The same flow with changing payloads is never capped: at once, 100,000 of them.
        XCTAssertEqual(served(f, from: peer, 100_000, now: 2 * second) { self.bytes($0) }, 100_000)
        // Payloads that differ only in their last bytes (past the fingerprint's head) or in
        // their length are not repeats either.
        XCTAssertEqual(
            served(f, from: peer, 1000, now: 2 * second) { i in
                var b = [UInt8](repeating: 7, count: 1400)
                b[1399] = UInt8(truncatingIfNeeded: i)
                b[1398] = UInt8(truncatingIfNeeded: i >> 8)
                return b
            }, 1000)
        XCTAssertEqual(served(f, from: peer, 1000, now: 2 * second) { i in [UInt8](repeating: 7, count: 1 + i % 500) }, 1000)
    }

    func testOtherSourcesModesAndCallsWithoutPayloadAreNotCapped() {
        let f = echoFilter()
        let again = Array("again".utf8)
        // Another host repeating itself is a client (or a remote echo, the reflector rules' job).
        XCTAssertEqual(served(f, from: SocketAddress(ip: ip("198.51.100.1"), port: 37012), 1000, now: 0) { _ in again }, 1000)
        // Each local flow has its own cap: a second flow starts with its own burst.
        XCTAssertEqual(
            served(f, from: SocketAddress(ip: ip("127.0.0.1"), port: 37013), 1000, now: 0) { _ in again },
            LoopBreaker.burst + 1)
        XCTAssertEqual(served(f, from: SocketAddress(ip: ip("::1"), port: 37013), 1000, now: 0) { _ in again }, LoopBreaker.burst + 1)
        // Relays do not answer the source: no repeat cap.
        let relay = echoFilter(mode: .forward)
        XCTAssertEqual(served(relay, from: SocketAddress(ip: ip("127.0.0.1"), port: 37012), 1000, now: 0) { _ in again }, 1000)
        // A local server port stays capped whatever its payloads.
        XCTAssertEqual(
            served(f, from: SocketAddress(ip: ip("127.0.0.1"), port: 7008), 1000, now: 0) { self.bytes($0) },
            LoopBreaker.burst)
    }

    func testFingerprintCoversLengthHeadAndTail() {
        func fp(_ b: [UInt8]) -> UInt64 { b.withUnsafeBytes { LoopBreaker.fingerprint($0) } }
        XCTAssertNotEqual(fp([]), 0)
        XCTAssertEqual(fp(Array("loop".utf8)), fp(Array("loop".utf8)))
        XCTAssertNotEqual(fp([0]), fp([0, 0]), "length")
        let a = [UInt8](repeating: 1, count: 200)
        var b = a
        b[63] = 2
        XCTAssertNotEqual(fp(a), fp(b), "head")
        b = a
        b[199] = 2
        XCTAssertNotEqual(fp(a), fp(b), "last 8 bytes")
    }

    /// Datagrams looping between this echo filter and another echo server on this host: each
    /// one served comes back with the same payload, each one refused is gone. Returns how many
    /// were served before every loop ended, or nil if some still ran after `limit` datagrams
    /// (one every 4 µs of the fake clock: a fast loop).
    func runLoops(_ f: IngressFilter, payloads: [[UInt8]], limit: Int = 200_000) -> Int? {
        let peer = SocketAddress(ip: ip("127.0.0.1"), port: 37012)
        var inFlight = payloads[...]
        var served = 0
        for step in 0..<limit {
            guard let payload = inFlight.popFirst() else { return served }
            if payload.withUnsafeBytes({ f.check(peer, payload: $0, now: 1_000_000_000 + UInt64(step) * 4000) }) == nil {
                served += 1
                inFlight.append(payload)
            }
        }
        return inFlight.isEmpty ? served : nil
    }

    /// One spoofed datagram, or several with different payloads into the same pair of ports
    /// (which cycle, so no datagram repeats its immediate predecessor): every loop ends, within
    /// the burst and the anchor's period.
    func testEveryLoopThroughOneFlowEndsUpToTheAnchorInterval() throws {
        for k in [1, 2, 5, 64] {
            let served = runLoops(echoFilter(), payloads: (0..<k).map { bytes($0) })
            let bound = (LoopBreaker.burst + 2) * Int(RecentFingerprints.anchorInterval) + 2 * k * Int(RecentFingerprints.anchorInterval)
            XCTAssertNotNil(served, "\(k) loops through one flow end")
            XCTAssertLessThanOrEqual(try XCTUnwrap(served), bound, "\(k) loops")
        }
    }
}
