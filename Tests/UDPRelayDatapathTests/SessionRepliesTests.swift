import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// `session_max_replies` counts replies per request (nginx `proxy_responses` per
/// `proxy_requests`): a client that sends a second query before the first answer (dnsperf,
/// glibc's A + AAAA from one socket) gets both answers.
final class SessionRepliesTests: XCTestCase {
    /// A relay listener over `upstreams` (test sockets answered by hand) with the extra keys.
    func startRelay(_ upstreams: [UDPClient], mode: String, extra: String) throws -> (Datapath, Listener) {
        let list = upstreams.map { "\($0.localAddress)" }.joined(separator: ", ")
        let text = "[status]\nlisten = off\n[listener r]\nlisten = 127.0.0.1:0\nmode = \(mode)\nupstream = \(list)\n" + extra
        let datapath = try Datapath(configuration: try ConfigLoader.parse(text, file: "t.ini"), logger: Logger(label: "test"))
        datapath.startBlocking()
        return (datapath, try XCTUnwrap(datapath.listener(named: "r")))
    }

    /// Waits until `count` datagrams reached one of `upstreams`; returns which one and them.
    func collect(_ count: Int, at upstreams: [UDPClient]) -> (upstream: UDPClient, datagrams: [(bytes: [UInt8], from: SocketAddress)])? {
        var got: [(bytes: [UInt8], from: SocketAddress)] = []
        var at: UDPClient?
        let deadline = Date().addingTimeInterval(5)
        while got.count < count && Date() < deadline {
            for u in upstreams {
                if let d = u.receive(timeout: 0.01) {
                    got.append(d)
                    at = u
                }
            }
        }
        return got.count == count ? at.map { ($0, got) } : nil
    }

    func testPipelinedQueriesEachGetTheirReplyThroughBalance() throws {
        let upstreams = [try UDPClient(), try UDPClient()]
        let (datapath, relay) = try startRelay(upstreams, mode: "balance", extra: "balance = hash\nsession_max_replies = 1\n")
        defer { datapath.stopBlocking() }
        let client = try UDPClient()
        // A and AAAA back to back from one socket, before any answer.
        client.send(Array("query A".utf8), to: relay.boundAddresses[0])
        client.send(Array("query AAAA".utf8), to: relay.boundAddresses[0])
        let (upstream, queries) = try XCTUnwrap(collect(2, at: upstreams), "both queries reach the upstream")
        XCTAssertEqual(Set(queries.map(\.from)).count, 1, "both went through the client's one session")
        for q in queries { upstream.send(Array("answer to ".utf8) + q.bytes, to: q.from) }
        let answers = client.receiveMany(2).map { String(decoding: $0, as: UTF8.self) }
        XCTAssertEqual(Set(answers), ["answer to query A", "answer to query AAAA"], "the client gets both answers")
        XCTAssertTrue(waitUntil(5) { relay.counters()[.sessionsClosed] == 1 }, "closed after the second answer")
        XCTAssertEqual(relay.counters()[.repliesIgnored], 0)
    }

    func testOneRequestSessionStillClosesAfterItsReply() throws {
        let upstream = try UDPClient()
        let (datapath, relay) = try startRelay([upstream], mode: "forward", extra: "session_max_replies = 1\n")
        defer { datapath.stopBlocking() }
        let client = try UDPClient()
        client.send(Array("q1".utf8), to: relay.boundAddresses[0])
        let q1 = try XCTUnwrap(upstream.receive())
        upstream.send(Array("r1".utf8), to: q1.from)
        XCTAssertEqual(client.receive().map { String(decoding: $0.bytes, as: UTF8.self) }, "r1")
        XCTAssertTrue(waitUntil(5) { relay.counters()[.sessionsClosed] == 1 }, "closed after its one reply")
        upstream.send(Array("r1 again".utf8), to: q1.from)  // a duplicate, to the held socket
        XCTAssertTrue(waitUntil(5) { relay.counters()[.repliesIgnored] == 1 }, "the duplicate is dropped and counted")
        XCTAssertNil(client.receive(timeout: 0.1), "the client gets one reply")
        XCTAssertEqual(relay.counters()[.sessionsClosed], 1)
        // Every datagram the upstream sent is in its received counters, the ignored one too.
        let up = try XCTUnwrap(relay.upstreamSnapshots().first).counters
        XCTAssertEqual(up[.receivedPackets], 2)
        XCTAssertEqual(up[.receivedBytes], UInt64("r1".utf8.count + "r1 again".utf8.count))
        // The next query opens a new session.
        client.send(Array("q2".utf8), to: relay.boundAddresses[0])
        let q2 = try XCTUnwrap(upstream.receive())
        XCTAssertNotEqual(q2.from, q1.from)
        XCTAssertEqual(relay.counters()[.sessionsCreated], 2)
    }

    func testRepliesBeyondTheLimitOfALiveSessionAreCountedOnTheUpstreamToo() throws {
        let upstream = try UDPClient()
        let (datapath, relay) = try startRelay([upstream], mode: "forward", extra: "session_max_replies = 2\n")
        defer { datapath.stopBlocking() }
        let client = try UDPClient()
        client.send(Array("q".utf8), to: relay.boundAddresses[0])
        let q = try XCTUnwrap(upstream.receive())
        // Three replies in one go: two are forwarded, the third is over the limit.
        for r in ["a", "b", "c"] { upstream.send(Array(r.utf8), to: q.from) }
        XCTAssertEqual(client.receiveMany(2).count, 2)
        XCTAssertTrue(waitUntil(5) { relay.counters()[.repliesIgnored] == 1 })
        XCTAssertTrue(waitUntil(5) { relay.upstreamSnapshots().first?.counters[.receivedPackets] == 3 })
        XCTAssertEqual(relay.upstreamSnapshots().first?.counters[.receivedBytes], 3)
    }

    func testRepliesAllowedPerRequest() {
        XCTAssertEqual(SessionTable.repliesAllowed(5, maxReplies: nil, requests: 1, replies: 100), 5, "no limit")
        XCTAssertEqual(SessionTable.repliesAllowed(1, maxReplies: 1, requests: 1, replies: 0), 1)
        XCTAssertEqual(SessionTable.repliesAllowed(1, maxReplies: 1, requests: 1, replies: 1), 0)
        XCTAssertEqual(SessionTable.repliesAllowed(3, maxReplies: 1, requests: 2, replies: 0), 2, "one per request")
        XCTAssertEqual(SessionTable.repliesAllowed(3, maxReplies: 2, requests: 2, replies: 1), 3)
        XCTAssertEqual(SessionTable.repliesAllowed(9, maxReplies: Int(Int32.max), requests: .max, replies: .max), 9, "no overflow")
        XCTAssertEqual(SessionTable.saturatingAdd(.max - 1, 5), .max)
    }
}
