import NIOCore

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

    public init() {}
}

/// Sent outbound by the request handler after the `.end` of each response, so the guard knows
/// when the connection is idle again.
struct ResponseCompleteEvent {}

/// First handler of every status connection (next to the socket). It enforces the limits that
/// must hold before any HTTP parsing is trusted:
/// - request head size: it finds each head's end itself (blank line) and answers 431 past
///   `maxHeadBytes`, forwarding nothing more;
/// - head timeout (408) and idle timeout (silent close);
/// - lingering close: every full close becomes "flush, shut down output, drain input until the
///   peer closes or `lingerTimeout`", so a client that is still sending reads our error answer
///   instead of a connection reset.
final class ConnectionGuard: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    enum Phase { case open, failing, lingering }

    private let limits: StatusLimits
    private var phase = Phase.open
    /// Bytes of the request head being received; 0 between heads.
    private var headBytes = 0
    /// Progress towards a blank line: 0 nothing, 1 after LF, 2 after LF CR.
    private var blankLine = 0
    /// Heads received whose response is not complete yet.
    private var outstanding = 0
    /// A canned answer to send once the outstanding responses are out.
    private var pendingFailure: ByteBuffer?
    private var headTimer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
    private var lingerTimer: Scheduled<Void>?

    init(limits: StatusLimits) {
        self.limits = limits
    }

    // MARK: inbound

    func channelActive(context: ChannelHandlerContext) {
        // The first request head is due `headTimeout` after connecting.
        armHeadTimer(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        lingerTimer?.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard phase == .open else {
            // Failing or lingering: input is discarded.
            if phase == .lingering { context.read() }
            return
        }
        var buffer = unwrapInboundIn(data)
        var overflowAt: Int?
        buffer.withUnsafeReadableBytes { bytes in
            for (i, b) in bytes.enumerated() {
                if headBytes == 0 { headStarted(context) }
                headBytes += 1
                if headBytes > limits.maxHeadBytes {
                    overflowAt = i
                    return
                }
                switch (b, blankLine) {
                case (UInt8(ascii: "\n"), 0): blankLine = 1
                case (UInt8(ascii: "\n"), _): headCompleted()
                case (UInt8(ascii: "\r"), 1): blankLine = 2
                case (UInt8(ascii: "\r"), _): break
                default: blankLine = 0
                }
            }
        }
        if let overflowAt {
            if overflowAt > 0, let head = buffer.readSlice(length: overflowAt) {
                context.fireChannelRead(wrapInboundOut(head))
            }
            fail(context, status: "431 Request Header Fields Too Large",
                 "request head larger than \(limits.maxHeadBytes) bytes\n")
            return
        }
        context.fireChannelRead(wrapInboundOut(buffer))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if phase == .lingering { context.read() }
        context.fireChannelReadComplete()
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
        headTimer?.cancel()
        headTimer = nil
    }

    // MARK: outbound

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is ResponseCompleteEvent else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        promise?.succeed(())
        outstanding = max(0, outstanding - 1)
        guard outstanding == 0 else { return }
        if let failure = pendingFailure {
            pendingFailure = nil
            sendAndClose(context, failure)
        } else if phase == .open, headBytes == 0, headTimer == nil {
            armIdleTimer(context)
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all, phase == .lingering {
            // Already closing: the socket closes when the peer does or the linger time is up.
            context.channel.closeFuture.cascade(to: promise)
            return
        }
        guard mode == .all, context.channel.isActive else {
            context.close(mode: mode, promise: promise)
            return
        }
        phase = .lingering
        cancelTimers()
        context.channel.closeFuture.cascade(to: promise)
        context.flush()
        // Shut down our side once pending writes are out; the peer sees EOF after the response.
        context.close(mode: .output, promise: nil)
        context.read()
        lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.lingerTimeout) {
            context.close(mode: .all, promise: nil)
        }
    }

    // MARK: limits

    private func armHeadTimer(_ context: ChannelHandlerContext) {
        headTimer?.cancel()
        let seconds = limits.headTimeout.nanoseconds / 1_000_000_000
        headTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.headTimeout) {
            self.headTimer = nil
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
    }

    /// Stops reading requests and answers `status` once earlier responses are out, then closes.
    private func fail(_ context: ChannelHandlerContext, status: String, _ body: String) {
        guard phase == .open else { return }
        phase = .failing
        cancelTimers()
        let response = Self.canned(context.channel.allocator, status: status, body: body)
        if outstanding == 0 {
            sendAndClose(context, response)
        } else {
            // A response is still being built (the health probe takes up to a second): send the
            // error after it; close anyway if it never completes.
            pendingFailure = response
            idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.headTimeout) {
                self.close(context: context, mode: .all, promise: nil)
            }
        }
    }

    private func sendAndClose(_ context: ChannelHandlerContext, _ response: ByteBuffer) {
        context.write(wrapOutboundOut(.byteBuffer(response)), promise: nil)
        close(context: context, mode: .all, promise: nil)
    }

    /// A complete HTTP/1.1 error response with `Connection: close`, written below the encoder.
    static func canned(_ allocator: ByteBufferAllocator, status: String, body: String) -> ByteBuffer {
        let text = "HTTP/1.1 \(status)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nDate: \(Format.httpDate(StatusHTTPHandler.wallClock()))\r\n"
            + "Connection: close\r\n\r\n\(body)"
        return allocator.buffer(string: text)
    }
}

/// The whole pipeline of a connection over the limit: answer 503 and close (lingering).
final class OverLimitHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = IOData

    private let limit: Int

    init(limit: Int) { self.limit = limit }

    func channelActive(context: ChannelHandlerContext) {
        let response = ConnectionGuard.canned(context.channel.allocator, status: "503 Service Unavailable",
                                              body: "too many connections to the status endpoint (limit \(limit))\n")
        context.write(wrapOutboundOut(.byteBuffer(response)), promise: nil)
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
