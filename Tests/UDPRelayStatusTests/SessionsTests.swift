import Foundation
import NIOHTTP1
import UDPRelayConfig
import XCTest

@testable import UDPRelayStatus

/// `GET /sessions`: the query, the document, the answers to bad queries and slow queues, and
/// the busiest sessions on the page.
final class SessionsTests: XCTestCase {
    /// A source with fixed sessions that records what it was asked.
    final class SessionSource: StatusSource, @unchecked Sendable {
        var sessions: [SessionStatus]
        var unanswered: [String] = []
        var asked: [(String?, Int)] = []
        init(_ sessions: [SessionStatus]) { self.sessions = sessions }
        func snapshot() -> StatusSnapshot { Fixtures.snapshot() }
        func problems() async -> [String] { [] }
        func sessions(listener: String?, limit: Int) async -> SessionsAnswer {
            asked.append((listener, limit))
            return SessionsAnswer(sessions: Array(sessions.filter { listener == nil || $0.listener == listener }.prefix(limit)), unanswered: unanswered)
        }
    }

    static func session(_ i: Int, listener: String = "game-relay", packets: UInt64 = 1) -> SessionStatus {
        SessionStatus(
            listener: listener, client: "192.0.2.\(i):4\(i)000", upstream: "10.0.0.1:27015",
            upstreamAddress: i == 1 ? "10.0.0.1:27015" : nil, ageSeconds: 30 + Double(i),
            idleSeconds: Double(i) / 4, toUpstream: Traffic(packets: packets, bytes: packets * 100),
            toClient: Traffic(packets: packets * 2, bytes: packets * 300))
    }

    func routes(_ source: SessionSource) -> StatusRoutes {
        StatusRoutes(source: source, history: RateHistory(), counters: { ServerCounters() }, monotonicNow: { 0 })
    }

    func json(_ body: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], body)
    }

    func testTheDocumentListsEachSessionWithItsCountsEachWay() async throws {
        let source = SessionSource([Self.session(1, packets: 7), Self.session(2)])
        let r = await routes(source).respond(method: .GET, uri: "/sessions")
        XCTAssertEqual(r.status, .ok)
        XCTAssertEqual(r.contentType, "application/json")
        XCTAssertEqual(source.asked.map { $0.1 }, [100], "the default limit")
        let doc = try json(r.body)
        XCTAssertEqual(doc["schema_version"] as? Int, 1)
        XCTAssertEqual(doc["time"] as? String, "2026-11-25T09:51:40.750Z")
        XCTAssertTrue(doc["listener"] is NSNull)
        XCTAssertEqual(doc["limit"] as? Int, 100)
        let list = try XCTUnwrap(doc["sessions"] as? [[String: Any]])
        XCTAssertEqual(list.count, 2)
        XCTAssertEqual(list[0]["client"] as? String, "192.0.2.1:41000", "in the order the source gives")
        XCTAssertEqual(list[0]["listener"] as? String, "game-relay")
        XCTAssertEqual(list[0]["upstream"] as? String, "10.0.0.1:27015")
        XCTAssertEqual(list[0]["upstream_address"] as? String, "10.0.0.1:27015")
        XCTAssertTrue(list[1]["upstream_address"] is NSNull, "an address not known is null, not missing")
        XCTAssertEqual(list[0]["age_seconds"] as? Double, 31)
        XCTAssertEqual(list[0]["idle_seconds"] as? Double, 0.25)
        XCTAssertEqual(list[0]["to_upstream"] as? [String: Int], ["packets": 7, "bytes": 700])
        XCTAssertEqual(list[0]["to_client"] as? [String: Int], ["packets": 14, "bytes": 2100])
    }

    func testListenerAndLimitNarrowTheList() async throws {
        let source = SessionSource((0..<8).map { Self.session($0, listener: $0 % 2 == 0 ? "game-relay" : "dns") })
        let r = await routes(source).respond(method: .GET, uri: "/sessions?listener=game-relay&limit=3")
        XCTAssertEqual(r.status, .ok)
        XCTAssertEqual(source.asked.first?.0, "game-relay")
        XCTAssertEqual(source.asked.first?.1, 3)
        let doc = try json(r.body)
        XCTAssertEqual(doc["listener"] as? String, "game-relay")
        XCTAssertEqual(doc["limit"] as? Int, 3)
        let clients = try XCTUnwrap(doc["sessions"] as? [[String: Any]]).map { $0["client"] as? String }
        XCTAssertEqual(clients, ["192.0.2.0:40000", "192.0.2.2:42000", "192.0.2.4:44000"])
        let most = await routes(source).respond(method: .GET, uri: "/sessions?limit=1000")
        XCTAssertEqual(most.status, .ok)
        XCTAssertEqual(source.asked.last?.1, 1000, "the cap itself is allowed")
    }

    func testABadQueryIs400AndAnUnknownListener404WithoutAskingTheDatapath() async throws {
        let source = SessionSource([Self.session(1)])
        for bad in ["0", "1001", "-1", "abc", "", "1e3", "+5", "5 ", "99999999999999999999"] {
            let encoded = bad.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? bad
            let r = await routes(source).respond(method: .GET, uri: "/sessions?limit=\(encoded)")
            XCTAssertEqual(r.status, .badRequest, "limit=\(bad)")
            XCTAssertEqual(r.contentType, "application/json")
            XCTAssertEqual(try json(r.body)["error"] as? String, "limit must be a whole number from 1 to 1000, not '\(bad)'")
        }
        let empty = await routes(source).respond(method: .GET, uri: "/sessions?listener=")
        XCTAssertEqual(empty.status, .badRequest)
        let unknown = await routes(source).respond(method: .GET, uri: "/sessions?listener=nope")
        XCTAssertEqual(unknown.status, .notFound)
        XCTAssertEqual(try json(unknown.body)["error"] as? String, "no listener named 'nope'; listeners: dns, game-relay")
        XCTAssertEqual(source.asked.count, 0, "refused before the datapath is asked")
        let post = await routes(source).respond(method: .POST, uri: "/sessions")
        XCTAssertEqual(post.status, .methodNotAllowed)
    }

    func testAQueueThatDidNotAnswerIs503NamingIt() async throws {
        let source = SessionSource([Self.session(1)])
        source.unanswered = ["listener 'game-relay' queue for 0.0.0.0:27015 did not answer within 0.2 seconds"]
        let r = await routes(source).respond(method: .GET, uri: "/sessions")
        XCTAssertEqual(r.status, .serviceUnavailable)
        XCTAssertEqual(try json(r.body)["error"] as? String, source.unanswered[0])
    }

    func testTheRenderedKeysAreTheSchemasKeys() throws {
        let schemaURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/sessions.schema.json")
        let schema = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: schemaURL)) as? [String: Any])
        let doc = try json(SessionsJSON.render(SessionsAnswer(sessions: [Self.session(1)]), time: 0, listener: nil, limit: 100))
        XCTAssertEqual(Set(doc.keys), Set(try XCTUnwrap(schema["required"] as? [String])))
        let defs = try XCTUnwrap(schema["$defs"] as? [String: Any])
        let session = try XCTUnwrap(defs["session"] as? [String: Any])
        let entry = try XCTUnwrap((doc["sessions"] as? [[String: Any]])?.first)
        XCTAssertEqual(Set(entry.keys), Set(try XCTUnwrap(session["required"] as? [String])))
        XCTAssertEqual(
            (schema["properties"] as? [String: Any]).flatMap { ($0["limit"] as? [String: Any])?["maximum"] as? Int }, SessionsJSON.maxLimit)
    }

    func testThePageShowsTheFiveBusiestSessionsOfEachRelayListener() async throws {
        // Packets 1...7 in a shuffled order: the five with most are 7, 6, 5, 4, 3.
        let source = SessionSource([3, 7, 1, 5, 2, 6, 4].map { Self.session($0, packets: UInt64($0)) })
        let page = await routes(source).respond(method: .GET, uri: "/")
        XCTAssertEqual(page.status, .ok)
        XCTAssertEqual(source.asked.first?.1, SessionsJSON.maxLimit)
        let section = try XCTUnwrap(page.body.range(of: "id=\"sessions-game-relay\"").map { page.body[$0.lowerBound...] })
        let clients = section.components(separatedBy: "<code>").dropFirst().compactMap { $0.components(separatedBy: "</code>").first }
            .filter { $0.hasPrefix("192.0.2.") }
        XCTAssertEqual(clients, ["192.0.2.7:47000", "192.0.2.6:46000", "192.0.2.5:45000", "192.0.2.4:44000", "192.0.2.3:43000"])
        XCTAssertTrue(section.contains("7 pkt / 700 B up"), String(section.prefix(600)))
        XCTAssertFalse(page.body.contains("id=\"sessions-dns\""), "an echo listener has no sessions section")

        // A hostname's session names the address it uses; a literal upstream is not repeated.
        var named = Self.session(9, packets: 9)
        named.upstream = "game.example:27015"
        named.upstreamAddress = "10.0.0.9:27015"
        let withName = await routes(SessionSource([named, Self.session(1)])).respond(method: .GET, uri: "/")
        XCTAssertTrue(withName.body.contains("<code>game.example:27015</code> (<code>10.0.0.9:27015</code>)"), withName.body)
        XCTAssertFalse(withName.body.contains("<code>10.0.0.1:27015</code> (<code>10.0.0.1:27015</code>)"))

        let none = await routes(SessionSource([])).respond(method: .GET, uri: "/")
        XCTAssertFalse(none.body.contains("Busiest sessions"), "no section without sessions")
    }
}
