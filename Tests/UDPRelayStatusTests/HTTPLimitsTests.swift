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
        let routes = StatusRoutes(
            source: FixedSource(value: Fixtures.snapshot()), history: RateHistory(),
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
        try send(
            "GET /status HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nHEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        )
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
        try send("GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 9000))
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
        try send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        advance(.seconds(20))
        try send("GET /metrics HTTP/1.1\r\nHost: x\r\n")
        advance(.seconds(4))
        try send("\r\n")
        advance(.seconds(4))
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [200, 200])
        XCTAssertTrue(channel.isActive)
    }

    func testIdleConnectionIsClosedAfterThirtySeconds() throws {
        try connect()
        try send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
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
        try send("POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n" + String(repeating: "b", count: 20000))
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [405])
        XCTAssertFalse(channel.isActive)
    }

    func testGETWithABodyGets400() throws {
        try connect()
        try send("GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
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
        try send("GET /status?listener=dns HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let r = parseResponses(try sent())
        XCTAssertEqual(r.map(\.status), [200])
        XCTAssertFalse(r[0].body.contains("game-relay"), "narrowed to one listener")
        XCTAssertFalse(channel.isActive)
    }
    // MARK: backpressure (issue 13 item 1)

    func testPipelinedRequestsAreNotAnsweredWhileOutputIsBlockedAndAtMostEightAtOnce() throws {
        try connect()
        // A client that pipelines and does not read: its socket stops being writable.
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        try send(String(repeating: "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", count: 100))
        XCTAssertEqual(parseResponses(try sent()).count, 0, "nothing is answered while output is blocked")
        // Output drains: the held requests are answered, all of them, in order.
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        XCTAssertEqual(parseResponses(try sent()).map(\.status), Array(repeating: 200, count: 100))
        XCTAssertTrue(channel.isActive)
    }

    func testOutputBlockedMidBatchStopsAfterTheOutstandingRequests() throws {
        try connect()
        // Writability drops after the first answer: at most `maxPipelined` answers were built.
        let blocker = BlockAfterFirstWrite(channel: channel)
        try channel.pipeline.syncOperations.addHandler(blocker, position: .first)
        try send(String(repeating: "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", count: 100))
        let answered = parseResponses(try sent()).count
        XCTAssertGreaterThan(answered, 0)
        XCTAssertLessThanOrEqual(answered, limits.maxPipelined)
    }

    func testAClientThatNeverReadsIsDisconnectedAfterTheIdleTimeout() throws {
        try connect()
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        try send(String(repeating: "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", count: 3))
        advance(.seconds(29))
        XCTAssertTrue(channel.isActive)
        advance(.seconds(4))
        XCTAssertFalse(channel.isActive, "no progress for the idle timeout: closed")
    }

    // MARK: connections that never end (issue 13 item 6)

    func testHugeOrInvalidContentLengthGets400AndClose() throws {
        for value in ["9223372036854775808", "18446744073709551616", "-1", "1e3", "0x10"] {
            try connect()
            _ = try? send("GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: \(value)\r\n\r\n")
            let r = parseResponses(try sent())
            XCTAssertEqual(r.map(\.status), [400], value)
            XCTAssertEqual(r.first?.headers["connection"], "close", value)
            XCTAssertFalse(channel.isActive, value)
            tearDown()
        }
    }

    func testZeroContentLengthIsServed() throws {
        try connect()
        try send("GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [200])
    }

    func testUpgradeRequestIsAnsweredAndClosedEvenWithAPipelinedSecondRequest() throws {
        try connect()
        try send(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
                + "GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        let r = parseResponses(try sent())
        XCTAssertEqual(r.first?.status, 200)
        XCTAssertEqual(r.first?.headers["connection"], "close")
        advance(.seconds(3))
        XCTAssertFalse(channel.isActive, "the connection ends")
    }

    func testUpgradeWithoutConnectionUpgradeAlsoEnds() throws {
        try connect()
        try send("GET /metrics HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\nGET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(parseResponses(try sent()).first?.status, 200)
        advance(.seconds(3))
        XCTAssertFalse(channel.isActive)
    }

    // MARK: Host (issue 13 item 13)

    func testHTTP11WithoutOrWithTwoHostHeadersGets400() throws {
        for head in [
            "GET /metrics HTTP/1.1\r\n\r\n", "GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nUser-Agent: x\r\n\r\n",
        ] {
            try connect()
            try send(head)
            let r = parseResponses(try sent())
            XCTAssertEqual(r.map(\.status), [400], head)
            XCTAssertTrue(r.first?.body.contains("Host") ?? false, head)
            XCTAssertFalse(channel.isActive)
            tearDown()
        }
    }

    func testHTTP10WithoutHostIsServed() throws {
        try connect()
        try send("GET /metrics HTTP/1.0\r\n\r\n")
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [200])
    }

    // MARK: HTTP/2 prior knowledge (issue 12 item 14)

    func testHTTP2PrefaceIsRefusedWithHTTP11RequiredOnTheClientsStream() throws {
        try connect()
        var bytes = HTTP2Preface.preface
        bytes += [0, 0, 0, 4, 0, 0, 0, 0, 0]  // SETTINGS, empty
        bytes += [0, 0, 4, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x84, 0x41]  // HEADERS on stream 1
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        var out = try XCTUnwrap(channel.readOutbound(as: IOData.self)).byteBuffer
        let frames = Array(out.readBytes(length: out.readableBytes) ?? [])
        XCTAssertEqual(Array(frames.prefix(9)), [0, 0, 0, 4, 0, 0, 0, 0, 0], "our SETTINGS first")
        XCTAssertEqual(
            Array(frames.dropFirst(9)), [0, 0, 4, 3, 0, 0, 0, 0, 1, 0, 0, 0, 0xD],
            "RST_STREAM(1, HTTP_1_1_REQUIRED)")
        XCTAssertTrue(channel.isActive, "left open until the client closes, so it reads the frames")
        advance(.seconds(3))
        XCTAssertFalse(channel.isActive)
    }

    func testBarePrefaceGetsGOAWAYWithAReason() throws {
        try connect()
        try channel.writeInbound(ByteBuffer(bytes: HTTP2Preface.preface))
        XCTAssertNil(try channel.readOutbound(as: IOData.self), "waits for the client's first stream")
        advance(.seconds(5))
        var out = try XCTUnwrap(channel.readOutbound(as: IOData.self)).byteBuffer
        let frames = Array(out.readBytes(length: out.readableBytes) ?? [])
        XCTAssertEqual(frames[12], 7, "GOAWAY")
        XCTAssertEqual(Array(frames[18..<26]), [0, 0, 0, 0, 0, 0, 0, 0xD])
        XCTAssertTrue(String(decoding: frames[26...], as: UTF8.self).contains("use HTTP/1.1"))
    }

    func testARequestThatMerelyStartsLikeThePrefaceIsHTTP1() throws {
        try connect()
        _ = try? send("PRI / HTTP/1.1\r\nHost: x\r\n\r\n")
        let text = try sent()
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 4"), "an HTTP/1.1 answer, not HTTP/2 frames: \(text)")
    }

    // MARK: half-close (issue 12 item 4)

    func testRequestsBeforeAHalfCloseAreAnsweredThenTheConnectionCloses() throws {
        try connect()
        try send(
            "GET /metrics HTTP/1.0\r\n\r\n".replacingOccurrences(of: "1.0", with: "1.1").replacingOccurrences(of: "\r\n\r\n", with: "\r\nHost: x\r\n\r\n")
                + "GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [200, 200])
        XCTAssertFalse(channel.isActive, "closed once everything is answered")
    }

    func testHalfCloseWithAPartialHeadClosesWithoutAnswer() throws {
        try connect()
        try send("GET /metrics HTTP/1.1\r\nHost")
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try sent(), "")
        XCTAssertFalse(channel.isActive)
    }

    // MARK: stop (issue 12 item 3)

    func testStopClosesAnIdleConnectionAtOnce() throws {
        try connect()
        try send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(parseResponses(try sent()).map(\.status), [200])
        channel.pipeline.fireUserInboundEventTriggered(ServerStoppingEvent())
        channel.embeddedEventLoop.run()
        XCTAssertFalse(channel.isActive, "closed without waiting for the client or a linger time")
    }

    func testStopClosesAConnectionWithAPartialHeadAtOnce() throws {
        try connect()
        try send("GET /metrics HTTP/1.1\r\nHo")
        channel.pipeline.fireUserInboundEventTriggered(ServerStoppingEvent())
        channel.embeddedEventLoop.run()
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(try sent(), "")
    }
}

/// Makes the channel unwritable after the first write, as a full socket buffer would.
final class BlockAfterFirstWrite: ChannelOutboundHandler {
    typealias OutboundIn = Any
    let channel: EmbeddedChannel
    var writes = 0
    init(channel: EmbeddedChannel) { self.channel = channel }
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        writes += 1
        context.write(data, promise: promise)
        if writes == 1 {
            channel.isWritable = false
            context.pipeline.fireChannelWritabilityChanged()
        }
    }
}

extension IOData {
    var byteBuffer: ByteBuffer {
        if case .byteBuffer(let b) = self { return b }
        return ByteBuffer()
    }
}
