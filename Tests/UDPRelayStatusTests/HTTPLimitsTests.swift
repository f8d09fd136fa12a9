import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest
@testable import UDPRelayStatus

/// One parsed HTTP response from raw bytes.
struct RawResponse {
    var status: Int
    var headers: [String: String]
    var body: String
}

/// Splits concatenated HTTP/1.1 responses using their Content-Length; HEAD answers have no
/// body, so pass their positions in `headOnly`.
func parseResponses(_ text: String, headOnly: Set<Int> = []) -> [RawResponse] {
    var out: [RawResponse] = []
    var rest = Substring(text)
    while let end = rest.range(of: "\r\n\r\n") {
        let lines = rest[..<end.lowerBound].components(separatedBy: "\r\n")
        let status = Int(lines[0].split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = headOnly.contains(out.count) ? 0 : Int(headers["content-length"] ?? "0") ?? 0
        let bodyStart = end.upperBound
        let bodyEnd = rest.utf8.index(bodyStart, offsetBy: min(length, rest.utf8.distance(from: bodyStart, to: rest.endIndex)))
        out.append(RawResponse(status: status, headers: headers, body: String(rest[bodyStart..<bodyEnd])))
        rest = rest[bodyEnd...]
    }
    return out
}

/// The connection pipeline of the server on an EmbeddedChannel: time is advanced by hand.
final class HTTPLimitsTests: XCTestCase {
    var channel: EmbeddedChannel!
    var limits = StatusLimits()

    override func setUp() {
        super.setUp()
        limits = StatusLimits()
        channel = nil
    }

    override func tearDown() {
        // Not `finish()`: the guard completes close promises with the close future, which an
        // EmbeddedEventLoop completes only when run.
        if let channel {
            if channel.isActive { channel.close(promise: nil) }
            channel.embeddedEventLoop.run()
        }
        super.tearDown()
    }

    func connect() throws {
        let channel = EmbeddedChannel()
        let routes = StatusRoutes(source: FixedSource(value: Fixtures.snapshot()), history: RateHistory(),
                                  counters: { ServerCounters() }, monotonicNow: { 0 })
        try ServerState.addHTTPHandlers(channel.pipeline.syncOperations, limits: limits, routes: routes, requestAnswered: {})
        try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
        self.channel = channel
    }

    func send(_ text: String) throws {
        try channel.writeInbound(ByteBuffer(string: text))
    }

    func sent() throws -> String {
        var out = ""
        while let data = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let b) = data { out += String(buffer: b) }
        }
        return out
    }

    func advance(_ t: TimeAmount) {
        channel.embeddedEventLoop.advanceTime(by: t)
    }

    func testPipelinedRequestsAreAnsweredInOrderAndHEADHasNoBody() throws {
        try connect()
        try send("GET /status HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nHEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        let responses = parseResponses(try sent(), headOnly: [2])
        XCTAssertEqual(responses.map(\.status), [200, 404, 200, 200])
        XCTAssertTrue(responses[0].body.contains("\"schema_version\": 1"))
        XCTAssertEqual(responses[0].headers["content-type"], "application/json")
        XCTAssertEqual(responses[2].headers["content-length"], responses[3].headers["content-length"], "HEAD announces the GET length")
        XCTAssertEqual(responses[2].body, "")
        for r in responses {
            XCTAssertEqual(r.headers["cache-control"], "no-store")
            XCTAssertNotNil(r.headers["date"])
            XCTAssertNil(r.headers["connection"], "HTTP/1.1 keeps the connection by default")
        }
        XCTAssertTrue(channel.isActive, "keep-alive")
    }

    func testRequestHeadSplitAcrossReadsAndBareLFIsMalformed() throws {
        try connect()
        for piece in ["GE", "T /sta", "tus HTTP/1.1\r", "\nHost: x\r\n", "\r", "\n"] { try send(piece) }
        advance(.seconds(6))
        XCTAssertTrue(channel.isActive, "the head completed: no head timeout pending")
        // NIO's parser (llhttp) wants CRLF: a bare-LF request is malformed.
        _ = try? send("GET /metrics HTTP/1.1\nHost: x\n\n")
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [200, 400])
        XCTAssertFalse(channel.isActive)
    }

    func testHeadLargerThan8KiBIsAnswered431AndClosed() throws {
        try connect()
        try send("GET /status HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 9000))
        let responses = parseResponses(try sent())
        XCTAssertEqual(responses.map(\.status), [431])
        XCTAssertEqual(responses.first?.headers["connection"], "close")
        XCTAssertFalse(channel.isActive)
    }

    func testHeadJustUnderTheLimitIsServed() throws {
        try connect()
        let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: "
        let pad = String(repeating: "p", count: limits.maxHeadBytes - request.utf8.count - 4)
        try send(request + pad + "\r\n\r\n")
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [200])
    }

    func testPartialHeadHeldOpenGets408AfterFiveSeconds() throws {
        try connect()
        try send("GET /status HTTP/1.1\r\nHost: x\r\n")
        advance(.milliseconds(4900))
        XCTAssertEqual(try sent(), "")
        XCTAssertTrue(channel.isActive)
        advance(.milliseconds(200))
        let responses = parseResponses(try sent())
        XCTAssertEqual(responses.map(\.status), [408])
        XCTAssertFalse(channel.isActive)
    }

    func testSilentNewConnectionGets408AfterFiveSeconds() throws {
        try connect()
        advance(.seconds(5))
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [408])
        XCTAssertFalse(channel.isActive)
    }

    func testHeadTimerCountsFromTheFirstByteOfEachHead() throws {
        try connect()
        try send("GET /metrics HTTP/1.1\r\n\r\n")
        advance(.seconds(20))
        try send("GET /metrics HTTP/1.1\r\n")
        advance(.seconds(4))
        try send("\r\n")
        advance(.seconds(4))
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [200, 200])
        XCTAssertTrue(channel.isActive)
    }

    func testIdleConnectionIsClosedAfterThirtySeconds() throws {
        try connect()
        try send("GET /metrics HTTP/1.1\r\n\r\n")
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [200])
        advance(.seconds(29))
        XCTAssertTrue(channel.isActive)
        advance(.milliseconds(1100))
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(try sent(), "", "idle close sends nothing")
    }

    func testGarbageGets400AndClose() throws {
        try connect()
        _ = try? send("\u{1}\u{2}garbage\r\n\r\n")
        let responses = parseResponses(try sent())
        XCTAssertEqual(responses.map(\.status), [400])
        XCTAssertEqual(responses.first?.headers["connection"], "close")
        XCTAssertFalse(channel.isActive)
    }

    func testOtherMethodsGet405WithAllowAndClose() throws {
        try connect()
        try send("DELETE /status HTTP/1.1\r\nHost: x\r\n\r\n")
        let responses = parseResponses(try sent())
        XCTAssertEqual(responses.map(\.status), [405])
        XCTAssertEqual(responses.first?.headers["allow"], "GET, HEAD")
        XCTAssertFalse(channel.isActive)
    }

    func testPOSTWithALargeBodyGets405NotAHang() throws {
        try connect()
        try send("POST /status HTTP/1.1\r\nContent-Length: 20000\r\n\r\n" + String(repeating: "b", count: 20000))
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [405])
        XCTAssertFalse(channel.isActive)
    }

    func testGETWithABodyGets400() throws {
        try connect()
        try send("GET /status HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [400])
        XCTAssertFalse(channel.isActive)
    }

    func testHTTP10ClosesUnlessKeepAliveAsked() throws {
        try connect()
        try send("GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        XCTAssertEqual(parseResponses(try sent()).first?.headers["connection"], "keep-alive")
        XCTAssertTrue(channel.isActive)
        try send("GET /metrics HTTP/1.0\r\n\r\n")
        XCTAssertEqual(parseResponses(try sent()).first?.headers["connection"], "close")
        XCTAssertFalse(channel.isActive)
    }

    func testClientConnectionCloseIsHonoured() throws {
        try connect()
        try send("GET /status?listener=dns HTTP/1.1\r\nConnection: close\r\n\r\n")
        let r = parseResponses(try sent())
        XCTAssertEqual(r.map(\.status), [200])
        XCTAssertFalse(r[0].body.contains("game-relay"), "narrowed to one listener")
        XCTAssertFalse(channel.isActive)
    }
}
