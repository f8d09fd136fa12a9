import NIOCore
import UDPRelayConfig

/// The limits of the status endpoint; the defaults are the documented ones.
public struct StatusLimits: Sendable {
    /// Largest request head (request line and headers, up to the blank line); past it: 431.
    public var maxHeadBytes = 8192
    /// Time to receive a whole request head, from its first byte (or from connect): past it: 408.
    public var headTimeout: TimeAmount = .seconds(5)
    /// A connection with no request in progress is closed after this long.
    public var idleTimeout: TimeAmount = .seconds(30)
    /// Connections served at once; one more is answered 503 and closed.
    public var maxConnections = 64
    /// After the last response of a closing connection, how long unread input is drained before
    /// the socket is closed (so the peer reads the response instead of a reset).
    public var lingerTimeout: TimeAmount = .seconds(2)
    /// Listen backlog of the server socket.
    public var backlog: Int32 = 256
    /// Requests of one connection passed to the HTTP parser and not answered yet; further
    /// pipelined requests stay unread until answers go out.
    public var maxPipelined = 8
    /// Unsent output of one connection above which nothing more is read from it (backpressure).
    public var maxUnsentBytes = 64 * 1024
    /// SO_SNDBUF of each connection. Unset, the kernel grows a socket's send buffer to
    /// `net.ipv4.tcp_wmem`'s maximum (4 MiB), so a client that pipelines and never reads got
    /// about 500 answers rendered per connection before output counted as blocked, and four
    /// of them kept the endpoint's one thread busy for seconds (`/healthz` waited 9.8 s).
    public var socketSendBuffer: Int32 = 64 * 1024

    public init() {}
}

/// Sent outbound by the request handler after the `.end` of each response, so the guard knows
/// when the connection is idle again.
struct ResponseCompleteEvent {}

/// Sent inbound to every connection when the server stops: idle connections close at once,
/// a request in progress is answered first (the server closes whatever is left shortly after).
struct ServerStoppingEvent {}

/// First handler of every status connection (next to the socket). It enforces the limits that
/// must hold before any HTTP parsing is trusted:
/// - request head size: it finds each head's end itself (blank line) and answers 431 past
///   `maxHeadBytes`, forwarding nothing more;
/// - backpressure: at most `maxPipelined` requests are passed on and unanswered at once, and
///   nothing more is passed on or read while the connection's unsent output is above the
///   channel's high-water mark (a client that pipelines and never reads costs a bounded amount);
/// - timeouts: head (408), idle (silent close), and no progress while requests are outstanding
///   (`idleTimeout`, silent close), so every state of a connection ends;
/// - half-close: requests received before the client shut down its side are answered, then the
///   connection closes;
/// - HTTP/2 prior knowledge: refused with `HTTP_1_1_REQUIRED`, which clients report (curl retries
///   over HTTP/1.1);
/// - lingering close: every full close becomes "flush, shut down output, drain input until the
///   peer closes or `lingerTimeout`", so a client that is still sending reads our error answer
///   instead of a connection reset.
final class ConnectionGuard: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    enum Phase {
        /// Serving requests.
        case open
        /// A canned error answer is due once the outstanding responses are out.
        case failing
        /// Closing once everything written is out (the client shut down its side, or the server stops).
        case closing
        /// Output shut down; draining input until the peer closes or the linger time is up.
        case lingering
        /// HTTP/2 refused: draining input until the client closes (it retries over HTTP/1.1).
        case refusedHTTP2
    }

    private let limits: StatusLimits
    private var phase = Phase.open
    /// Bytes received and not passed on yet (over the pipelining cap or while output is blocked).
    private var held: ByteBuffer?
    /// The first bytes were checked for an HTTP/2 connection preface.
    private var protocolChecked = false
    /// Bytes of the request head being received; 0 between heads.
    private var headBytes = 0
    /// Progress towards a blank line: 0 nothing, 1 after LF, 2 after LF CR.
    private var blankLine = 0
    /// Heads passed on whose response is not complete yet.
    private var outstanding = 0
    /// No head completed yet: the head timer runs from connect.
    private var awaitingFirstHead = true
    /// A `read()` from the pipeline held back by backpressure.
    private var readPending = false
    private var inputClosed = false
    private var stopping = false
    /// Writes not yet handed to the kernel, and whether to close when there are none.
    private var unsentWrites = 0
    private var closeWhenWritten = false
    /// Inside `forward`: a response completed re-entrantly must not forward again.
    private var forwarding = false
    /// A canned answer to send once the outstanding responses are out.
    private var pendingFailure: ByteBuffer?
    private var headTimer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
    /// Runs while requests are outstanding; re-armed whenever a response completes or output
    /// drains. In the closing phases it is the deadline of the close.
    private var stallTimer: Scheduled<Void>?
    private var lingerTimer: Scheduled<Void>?

    init(limits: StatusLimits) {
        self.limits = limits
    }

    // MARK: inbound

    func channelActive(context: ChannelHandlerContext) {
        // The first request head is due `headTimeout` after connecting.
        updateTimers(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        lingerTimer?.cancel()
        lingerTimer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Failing, closing or lingering: input is discarded.
        guard phase == .open else { return }
        var buffer = unwrapInboundIn(data)
        if held == nil {
            held = buffer
        } else {
            held!.writeBuffer(&buffer)
        }
        forward(context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if phase == .lingering || phase == .refusedHTTP2 { context.read() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            // Output drained: progress. Pass on what was held back.
            stallTimer?.cancel()
            stallTimer = nil
            forward(context)
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // Not passed on: the guard decides when the connection ends.
            inputClosed = true
            switch phase {
            case .open:
                forward(context)
            case .lingering, .refusedHTTP2:
                // The peer closed: done once what we wrote is out.
                beginClosing(context)
            case .failing, .closing:
                break
            }
            return
        }
        if event is ServerStoppingEvent {
            stopping = true
            held = nil
            if outstanding == 0 || (phase != .open && phase != .failing) { beginClosing(context) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Passes held bytes on while the limits allow: scans them for head ends (431 past the
    /// size limit) and stops after `maxPipelined` unanswered heads or when output is blocked.
    private func forward(_ context: ChannelHandlerContext) {
        guard !forwarding else { return }
        forwarding = true
        while phase == .open, !stopping, var buffer = held, buffer.readableBytes > 0 {
            if !protocolChecked {
                switch HTTP2Preface.check(buffer.readableBytesView) {
                case .needMore:
                    if buffer.readableBytes > limits.maxHeadBytes { refuseHTTP2(context, stream: nil) }
                    forwarding = false
                    afterForward(context)
                    return
                case .http2(let stream):
                    forwarding = false
                    refuseHTTP2(context, stream: stream)
                    return
                case .notHTTP2:
                    protocolChecked = true
                }
            }
            guard outstanding < limits.maxPipelined, context.channel.isWritable else { break }
            var consumed = 0
            var overflow = false
            buffer.withUnsafeReadableBytes { bytes in
                for b in bytes {
                    if headBytes == 0 { headStarted(context) }
                    headBytes += 1
                    if headBytes > limits.maxHeadBytes {
                        overflow = true
                        return
                    }
                    consumed += 1
                    switch (b, blankLine) {
                    case (UInt8(ascii: "\n"), 0): blankLine = 1
                    case (UInt8(ascii: "\n"), _):
                        headCompleted()
                        if outstanding >= limits.maxPipelined { return }
                    case (UInt8(ascii: "\r"), 1): blankLine = 2
                    case (UInt8(ascii: "\r"), _): break
                    default: blankLine = 0
                    }
                }
            }
            let slice = buffer.readSlice(length: consumed)!
            held = overflow || buffer.readableBytes == 0 ? nil : buffer
            // May answer at once (re-entering through `ResponseCompleteEvent`).
            if slice.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(slice)) }
            if overflow {
                fail(
                    context, status: "431 Request Header Fields Too Large",
                    "request head larger than \(limits.maxHeadBytes) bytes\n")
            }
        }
        forwarding = false
        afterForward(context)
    }

    /// After passing bytes on: read again if allowed, end a half-closed connection that has
    /// nothing left to answer, keep the right timer running.
    private func afterForward(_ context: ChannelHandlerContext) {
        guard phase == .open else { return }
        if stopping {
            if outstanding == 0 { beginClosing(context) }
            return
        }
        if inputClosed {
            // Complete heads still held are answered once output drains; a partial head at
            // end of input is never answered.
            if outstanding == 0 && (held == nil || !protocolChecked) {
                close(context: context, mode: .all, promise: nil)
                return
            }
        } else if readPending && !readBlocked(context) {
            readPending = false
            context.read()
        }
        updateTimers(context)
    }

    private func readBlocked(_ context: ChannelHandlerContext) -> Bool {
        (held != nil && protocolChecked) || outstanding >= limits.maxPipelined || !context.channel.isWritable
    }

    private func headStarted(_ context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        if headTimer == nil { armHeadTimer(context) }
    }

    private func headCompleted() {
        headBytes = 0
        blankLine = 0
        outstanding += 1
        awaitingFirstHead = false
        headTimer?.cancel()
        headTimer = nil
    }

    // MARK: outbound

    func read(context: ChannelHandlerContext) {
        if phase == .open && readBlocked(context) {
            readPending = true
        } else {
            context.read()
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        write(context, unwrapOutboundIn(data), promise: promise)
    }

    /// Every write goes through here so the guard knows when all of them are out.
    private func write(_ context: ChannelHandlerContext, _ data: IOData, promise: EventLoopPromise<Void>?) {
        unsentWrites += 1
        let done = promise ?? context.eventLoop.makePromise()
        done.futureResult.assumeIsolated().whenComplete { _ in
            self.unsentWrites -= 1
            if self.unsentWrites == 0 && self.closeWhenWritten { context.close(mode: .all, promise: nil) }
        }
        context.write(wrapOutboundOut(data), promise: done)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is ResponseCompleteEvent else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        promise?.succeed(())
        outstanding = max(0, outstanding - 1)
        // A response completed: progress.
        if phase == .open {
            stallTimer?.cancel()
            stallTimer = nil
        }
        if outstanding == 0, let failure = pendingFailure {
            pendingFailure = nil
            sendAndClose(context, failure)
        } else if outstanding == 0 && stopping {
            beginClosing(context)
        } else {
            forward(context)
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, context.channel.isActive, !stopping else {
            context.close(mode: mode, promise: promise)
            return
        }
        context.channel.closeFuture.cascade(to: promise)
        switch phase {
        case .closing, .lingering, .refusedHTTP2:
            // Already closing: the socket closes when the peer does or the linger time is up.
            return
        case .open, .failing:
            break
        }
        held = nil
        cancelTimers()
        if inputClosed {
            // The client will send nothing more: close as soon as the answers are out.
            beginClosing(context)
            return
        }
        phase = .lingering
        context.flush()
        // Shut down our side once pending writes are out; the peer sees EOF after the response.
        context.close(mode: .output, promise: nil)
        context.read()
        lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.lingerTimeout) {
            context.close(mode: .all, promise: nil)
        }
    }

    /// Closes as soon as everything written is out (at most `lingerTimeout` from now).
    private func beginClosing(_ context: ChannelHandlerContext) {
        guard phase != .closing else { return }
        phase = .closing
        held = nil
        cancelTimers()
        context.flush()
        if unsentWrites == 0 {
            context.close(mode: .all, promise: nil)
            return
        }
        closeWhenWritten = true
        stallTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.lingerTimeout) {
            context.close(mode: .all, promise: nil)
        }
    }

    // MARK: limits

    /// Keeps exactly the timer the connection's state calls for: head (a head is being received,
    /// or none yet since connecting), stall (requests outstanding or held back), or idle.
    private func updateTimers(_ context: ChannelHandlerContext) {
        guard phase == .open, context.channel.isActive else { return }
        let blocked = held != nil && protocolChecked
        if headBytes > 0 || (awaitingFirstHead && outstanding == 0 && !blocked) {
            idleTimer?.cancel()
            idleTimer = nil
            stallTimer?.cancel()
            stallTimer = nil
            if headTimer == nil { armHeadTimer(context) }
        } else if outstanding > 0 || blocked {
            headTimer?.cancel()
            headTimer = nil
            idleTimer?.cancel()
            idleTimer = nil
            if stallTimer == nil {
                stallTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.idleTimeout) {
                    // Answers not produced or not read for that long: give up on the client.
                    self.stallTimer = nil
                    context.close(mode: .all, promise: nil)
                }
            }
        } else {
            stallTimer?.cancel()
            stallTimer = nil
            if idleTimer == nil { armIdleTimer(context) }
        }
    }

    private func armHeadTimer(_ context: ChannelHandlerContext) {
        headTimer?.cancel()
        let seconds = limits.headTimeout.nanoseconds / 1_000_000_000
        headTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.headTimeout) {
            self.headTimer = nil
            if !self.protocolChecked, let held = self.held, held.readableBytes >= HTTP2Preface.preface.count {
                self.refuseHTTP2(context, stream: nil)
                return
            }
            self.fail(context, status: "408 Request Timeout", "request head not received within \(seconds) s\n")
        }
    }

    private func armIdleTimer(_ context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.idleTimeout) {
            self.idleTimer = nil
            self.close(context: context, mode: .all, promise: nil)
        }
    }

    private func cancelTimers() {
        headTimer?.cancel()
        headTimer = nil
        idleTimer?.cancel()
        idleTimer = nil
        stallTimer?.cancel()
        stallTimer = nil
    }

    /// Stops reading requests and answers `status` once earlier responses are out, then closes.
    private func fail(_ context: ChannelHandlerContext, status: String, _ body: String) {
        guard phase == .open else { return }
        phase = .failing
        held = nil
        cancelTimers()
        let response = Self.canned(context.channel.allocator, status: status, body: body)
        if outstanding == 0 {
            sendAndClose(context, response)
        } else {
            // A response is still being built (the health probe takes up to a second): send the
            // error after it; close anyway if it never completes.
            pendingFailure = response
            stallTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.headTimeout) {
                self.close(context: context, mode: .all, promise: nil)
            }
        }
    }

    private func sendAndClose(_ context: ChannelHandlerContext, _ response: ByteBuffer) {
        write(context, .byteBuffer(response), promise: nil)
        close(context: context, mode: .all, promise: nil)
    }

    /// Answers an HTTP/2 connection preface the way HTTP/2 clients understand: our (empty)
    /// SETTINGS, then RST_STREAM(HTTP_1_1_REQUIRED) on the client's first stream, after which
    /// curl and others retry over HTTP/1.1; without a stream yet, GOAWAY(HTTP_1_1_REQUIRED)
    /// with a readable reason. Then input is drained until the client closes.
    private func refuseHTTP2(_ context: ChannelHandlerContext, stream: UInt32?) {
        guard phase == .open else { return }
        phase = .refusedHTTP2
        held = nil
        cancelTimers()
        var out = context.channel.allocator.buffer(capacity: 64)
        HTTP2Preface.writeFrame(&out, type: 0x4, stream: 0, payload: [])
        if let stream {
            HTTP2Preface.writeFrame(&out, type: 0x3, stream: stream, payload: HTTP2Preface.be32(HTTP2Preface.http11Required))
        } else {
            HTTP2Preface.writeFrame(
                &out, type: 0x7, stream: 0,
                payload: HTTP2Preface.be32(0) + HTTP2Preface.be32(HTTP2Preface.http11Required)
                    + Array("HTTP/2 is not supported; use HTTP/1.1".utf8))
        }
        write(context, .byteBuffer(out), promise: nil)
        context.flush()
        if inputClosed {
            beginClosing(context)
            return
        }
        context.read()
        lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.lingerTimeout) {
            context.close(mode: .all, promise: nil)
        }
    }

    /// A complete HTTP/1.1 error response with `Connection: close`, written below the encoder.
    static func canned(_ allocator: ByteBufferAllocator, status: String, body: String) -> ByteBuffer {
        let text =
            "HTTP/1.1 \(status)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nDate: \(Format.httpDate(SystemClock.wallSeconds()))\r\n"
            + "Connection: close\r\n\r\n\(body)"
        return allocator.buffer(string: text)
    }
}

/// Recognises the HTTP/2 connection preface (RFC 9113 §3.4) at the start of a connection and
/// finds the client's first stream; writes the few frames used to refuse it.
enum HTTP2Preface {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let http11Required: UInt32 = 0xD

    enum Check: Equatable {
        /// A prefix of the preface, or the preface with no HEADERS frame yet.
        case needMore
        case notHTTP2
        /// The preface, and the stream of the first HEADERS frame.
        case http2(stream: UInt32)
    }

    static func check(_ bytes: ByteBufferView) -> Check {
        let n = min(bytes.count, preface.count)
        guard bytes.prefix(n).elementsEqual(preface.prefix(n)) else { return .notHTTP2 }
        guard bytes.count >= preface.count else { return .needMore }
        var i = bytes.startIndex + preface.count
        // Frames: 24-bit length, type, flags, 31-bit stream id, payload.
        while bytes.endIndex - i >= 9 {
            let length = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            let type = bytes[i + 3]
            let stream =
                (UInt32(bytes[i + 5]) << 24 | UInt32(bytes[i + 6]) << 16 | UInt32(bytes[i + 7]) << 8
                    | UInt32(bytes[i + 8])) & 0x7FFF_FFFF
            if type == 0x1 && stream != 0 { return .http2(stream: stream) }
            i += 9 + length
        }
        return .needMore
    }

    static func be32(_ v: UInt32) -> [UInt8] {
        [UInt8(truncatingIfNeeded: v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)]
    }

    static func writeFrame(_ out: inout ByteBuffer, type: UInt8, stream: UInt32, payload: [UInt8]) {
        let n = UInt32(payload.count)
        out.writeBytes([UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n), type, 0])
        out.writeBytes(be32(stream))
        out.writeBytes(payload)
    }
}

/// The whole pipeline of a connection over the limit: answer 503 and close (lingering).
final class OverLimitHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = IOData

    private let limit: Int

    init(limit: Int) { self.limit = limit }

    func channelActive(context: ChannelHandlerContext) {
        let response = ConnectionGuard.canned(
            context.channel.allocator, status: "503 Service Unavailable",
            body: "too many connections to the status endpoint (limit \(limit))\n")
        context.write(wrapOutboundOut(.byteBuffer(response)), promise: nil)
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
