import NIOCore
import NIOHTTP1
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// Answers decoded requests on one connection. Sits after NIO's HTTP decoder and pipelining
/// handler, which deliver one request at a time and hold the next until this one's `.end` is
/// written, so responses always leave in request order.
final class StatusHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: StatusRoutes
    private let requestAnswered: @Sendable () -> Void
    /// The request being received, answered at its `.end`.
    private var pending: HTTPRequestHead?
    /// Already answered at the head (bad method or a body): the rest is ignored and we close.
    private var answeredEarly = false
    private var closing = false

    init(routes: StatusRoutes, requestAnswered: @escaping @Sendable () -> Void) {
        self.routes = routes
        self.requestAnswered = requestAnswered
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            if head.method != .GET && head.method != .HEAD {
                // Answer now: waiting for a body we do not want could take forever.
                answeredEarly = true
                respond(context, head: head, routes.plan(method: head.method, uri: head.uri))
            } else if let problem = Self.headProblem(head) {
                // Answered now, and the connection closed: whatever follows the head cannot be
                // trusted (a body we would wait for, or bytes NIO's parser will not parse).
                answeredEarly = true
                respond(context, head: head, .now(.text(.badRequest, problem + "\n", close: true)))
            } else {
                pending = head
            }
        case .body:
            break
        case .end:
            if answeredEarly { return }
            guard let head = pending else { return }
            pending = nil
            respond(context, head: head, routes.plan(method: head.method, uri: head.uri))
        }
    }

    /// Why a GET or HEAD head is refused with 400, or nil.
    static func headProblem(_ head: HTTPRequestHead) -> String? {
        let lengths = head.headers[canonicalForm: "content-length"]
        if head.headers.contains(name: "transfer-encoding") || !lengths.allSatisfy({ $0 == "0" }) {
            // Any body, and any Content-Length that is not exactly 0 (RFC 9112 §6.3: an invalid
            // one is an unrecoverable error; a huge one would have us wait for ever).
            return "a \(head.method.rawValue) request takes no body"
        }
        if head.version.major == 1 && head.version.minor >= 1 {
            // RFC 9112 §3.2: exactly one Host header in HTTP/1.1.
            let hosts = head.headers["host"].count
            if hosts != 1 { return hosts == 0 ? "missing Host header" : "more than one Host header" }
        }
        return nil
    }

    /// An upgrade request (`Upgrade: h2c`) is answered over HTTP/1.1 as if the header were not
    /// there, and the connection then closed: NIO's parser parses nothing after such a request.
    static func asksUpgrade(_ head: HTTPRequestHead) -> Bool {
        head.headers.contains(name: "upgrade")
    }

    private func respond(_ context: ChannelHandlerContext, head: HTTPRequestHead, _ plan: PlannedResponse) {
        // Counted on arrival, so the page and /status include the request that shows them.
        requestAnswered()
        switch plan {
        case .now(let response):
            write(context, head: head, response)
        case .afterProbe(let build):
            let routes = self.routes
            let promise = context.eventLoop.makePromise(of: [String].self)
            promise.completeWithTask { await routes.source.problems() }
            promise.futureResult.assumeIsolated().whenComplete { result in
                // The probe never throws; an error here means the task was cancelled.
                let problems = (try? result.get()) ?? ["health probe did not complete"]
                self.write(context, head: head, build(problems))
            }
        case .later(let build):
            let promise = context.eventLoop.makePromise(of: StatusResponse.self)
            promise.completeWithTask { await build() }
            promise.futureResult.assumeIsolated().whenComplete { result in
                // Never throws; an error here means the task was cancelled.
                let response = (try? result.get()) ?? .text(.serviceUnavailable, "request did not complete\n")
                self.write(context, head: head, response)
            }
        }
    }

    private func write(_ context: ChannelHandlerContext, head request: HTTPRequestHead, _ response: StatusResponse) {
        guard context.channel.isActive, !closing else { return }
        let close = response.close || !request.isKeepAlive || Self.asksUpgrade(request)
        let body = response.body.utf8
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(name: "Date", value: Format.httpDate(SystemClock.wallSeconds()))
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        if close {
            headers.add(name: "Connection", value: "close")
        } else if request.version.major == 1 && request.version.minor == 0 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        let head = HTTPResponseHead(version: .http1_1, status: response.status, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if request.method != .HEAD, !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: response.body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.triggerUserOutboundEvent(ResponseCompleteEvent(), promise: nil)
        if close {
            closing = true
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let parseError = error as? HTTPParserError else {
            // I/O errors (a reset by the peer): nothing to answer.
            context.close(promise: nil)
            return
        }
        // NIO's decoder closes the connection right after reporting a parse error; answer first.
        let fake = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")
        requestAnswered()
        if case .headerOverflow = parseError {
            write(
                context, head: fake,
                .text(
                    HTTPResponseStatus(statusCode: 431, reasonPhrase: "Request Header Fields Too Large"),
                    "request head too large\n", close: true))
        } else {
            write(context, head: fake, .text(.badRequest, "malformed request: \(parseError)\n", close: true))
        }
    }
}
