import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import UDPRelayConfig

/// Who may connect: the `[status] allow` networks. IPv4 peers of a dual-stack (`[::]`) socket
/// appear as `::ffff:a.b.c.d` and are matched as IPv4; an IPv4-mapped network in `allow`
/// (`::ffff:10.0.0.0/104`) is matched as the IPv4 network it names (`10.0.0.0/8`).
public struct AllowList: Sendable {
    public let networks: [CIDR]

    public init(_ networks: [CIDR]) {
        self.networks = networks.map { cidr in
            guard case .v6(let high, let low) = cidr.network, high == 0, low >> 32 == 0xFFFF, cidr.prefixLength >= 96 else {
                return cidr
            }
            return CIDR(network: .v4(UInt32(truncatingIfNeeded: low)), prefixLength: cidr.prefixLength - 96)
        }
    }

    public func allows(_ ip: IPAddress) -> Bool {
        var ip = ip
        if case .v6(let high, let low) = ip, high == 0, low >> 32 == 0xFFFF {
            ip = .v4(UInt32(truncatingIfNeeded: low))
        }
        return networks.contains { $0.contains(ip) }
    }

    /// nil (refused) for a peer that is not an IP address.
    public func allows(_ address: NIOCore.SocketAddress?) -> Bool {
        guard let text = address?.ipAddress, let ip = IPAddress(literal: text) else { return false }
        return allows(ip)
    }
}

/// The HTTP/1.1 status endpoint: one event-loop thread of its own, so nothing it does can slow
/// the datapath (which it only reads through `StatusSource.snapshot()`, summing counters).
public final class StatusServer: Sendable {
    /// The address actually bound (the port is known even when configured as 0).
    public let localAddress: UDPRelayConfig.SocketAddress
    public let history: RateHistory
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel
    private let state: ServerState
    private let sampler: RepeatedTask
    private let logger: Logger
    private let stopped = Atomic(false)

    /// Binds `listen` and starts serving; logs `status listening address=…`.
    public static func start(
        listen: UDPRelayConfig.SocketAddress, allow: [CIDR], source: any StatusSource,
        limits: StatusLimits = StatusLimits(), logger: Logger
    ) async throws -> StatusServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let state = ServerState(limits: limits, allow: AllowList(allow))
        let history = RateHistory()
        let routes = StatusRoutes(
            source: source, history: history, counters: { state.counters },
            monotonicNow: { SystemClock.monotonicSeconds() })
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: limits.backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptPauseHandler { state.countAcceptError() })
                }
            }
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            // A client that shuts down its sending side after a request still gets the answer.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(
                .writeBufferWaterMark,
                value: .init(low: limits.maxUnsentBytes / 2, high: limits.maxUnsentBytes)
            )
            // A fixed kernel send buffer: what a client leaves unread is bounded in the kernel
            // too, not only in our own buffer (see StatusLimits.socketSendBuffer).
            .childChannelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(limits.socketSendBuffer))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try state.initialize(channel, routes: routes, logger: logger)
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.bind(host: "\(listen.ip)", port: Int(listen.port)).get()
        } catch {
            try? await group.shutdownGracefully()
            throw StatusServerError(address: listen, underlying: error)
        }
        let bound =
            channel.localAddress.flatMap { a in
                a.ipAddress.flatMap { IPAddress(literal: $0) }.map { UDPRelayConfig.SocketAddress(ip: $0, port: UInt16(a.port ?? 0)) }
            } ?? listen
        let sampler = channel.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(1)) { _ in
            history.record(source.snapshot().listeners, at: SystemClock.monotonicSeconds())
        }
        logger.info("status listening", metadata: ["address": "\(bound)"])
        return StatusServer(
            localAddress: bound, history: history, group: group, channel: channel, state: state,
            sampler: sampler, logger: logger)
    }

    private init(
        localAddress: UDPRelayConfig.SocketAddress, history: RateHistory, group: MultiThreadedEventLoopGroup,
        channel: Channel, state: ServerState, sampler: RepeatedTask, logger: Logger
    ) {
        self.localAddress = localAddress
        self.history = history
        self.group = group
        self.channel = channel
        self.state = state
        self.sampler = sampler
        self.logger = logger
    }

    /// Connection and request counters of the endpoint itself.
    public var counters: ServerCounters { state.counters }

    /// Stops accepting, closes every connection and the event-loop thread, in well under a
    /// second whatever the clients do: idle connections close at once, all in parallel; a request
    /// being answered gets `stopGrace` to finish, then its connection is closed too.
    public func stop() async {
        // Idempotent: a second call must not wait on futures of a loop that is gone.
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        sampler.cancel()
        try? await channel.close()
        let children = state.trackedChannels()
        for child in children { child.pipeline.fireUserInboundEventTriggered(ServerStoppingEvent()) }
        let loop = channel.eventLoop
        let closed = EventLoopFuture.andAllComplete(children.map(\.closeFuture), on: loop)
        // Past the grace time every connection still open is closed as it stands (the guard
        // passes closes straight through once it saw the stop).
        let deadline = loop.scheduleTask(in: Self.stopGrace) {
            for child in children { child.close(promise: nil) }
        }
        try? await closed.get()
        deadline.cancel()
        try? await group.shutdownGracefully()
    }

    /// How long a request in progress may take to be answered once `stop()` is called.
    static let stopGrace = TimeAmount.milliseconds(500)
}

/// The status endpoint could not bind its address.
public struct StatusServerError: Error, CustomStringConvertible {
    public let address: UDPRelayConfig.SocketAddress
    public let underlying: any Error

    public var description: String { "status endpoint: cannot listen on \(address): \(underlying)" }
}

/// Connection accounting shared by every connection's initializer.
final class ServerState: Sendable {
    let limits: StatusLimits
    let allow: AllowList
    private let accepted = Atomic<UInt64>(0)
    private let rejectedNotAllowed = Atomic<UInt64>(0)
    private let rejectedLimit = Atomic<UInt64>(0)
    private let requests = Atomic<UInt64>(0)
    private let acceptErrors = Atomic<UInt64>(0)
    /// Connections being served, by identity (the ones counted against the limit).
    private let open = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])
    /// Every accepted connection not closed yet, so `stop()` can close them all.
    private let tracked = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])

    init(limits: StatusLimits, allow: AllowList) {
        self.limits = limits
        self.allow = allow
    }

    var counters: ServerCounters {
        var c = ServerCounters()
        c.accepted = accepted.load(ordering: .relaxed)
        c.open = UInt64(open.withLockedValue { $0.count })
        c.rejectedNotAllowed = rejectedNotAllowed.load(ordering: .relaxed)
        c.rejectedLimit = rejectedLimit.load(ordering: .relaxed)
        c.requests = requests.load(ordering: .relaxed)
        c.acceptErrors = acceptErrors.load(ordering: .relaxed)
        return c
    }

    func countAcceptError() { acceptErrors.add(1, ordering: .relaxed) }

    func trackedChannels() -> [Channel] { tracked.withLockedValue { Array($0.values) } }

    /// Sets up a new connection: refused outside `allow`, 503 over the limit, else HTTP.
    func initialize(_ channel: Channel, routes: StatusRoutes, logger: Logger) throws {
        accepted.add(1, ordering: .relaxed)
        let ops = channel.pipeline.syncOperations
        let id = ObjectIdentifier(channel)
        tracked.withLockedValue { $0[id] = channel }
        channel.closeFuture.whenComplete { [self] _ in _ = tracked.withLockedValue { $0.removeValue(forKey: id) } }
        guard allow.allows(channel.remoteAddress) else {
            rejectedNotAllowed.add(1, ordering: .relaxed)
            logger.debug("status connection refused: not in allow", metadata: ["peer.address": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"])
            try ops.addHandler(CloseAtOnceHandler())
            return
        }
        let admitted = open.withLockedValue { channels -> Bool in
            guard channels.count < limits.maxConnections else { return false }
            channels[id] = channel
            return true
        }
        guard admitted else {
            rejectedLimit.add(1, ordering: .relaxed)
            try ops.addHandlers([ConnectionGuard(limits: limits), OverLimitHandler(limit: limits.maxConnections)])
            return
        }
        channel.closeFuture.whenComplete { [self] _ in _ = open.withLockedValue { $0.removeValue(forKey: id) } }
        try Self.addHTTPHandlers(ops, limits: limits, routes: routes) { [self] in requests.add(1, ordering: .relaxed) }
    }

    /// The pipeline of a served connection: guard, NIO's HTTP/1.1 codec with pipelining, our handler.
    static func addHTTPHandlers(
        _ ops: ChannelPipeline.SynchronousOperations, limits: StatusLimits, routes: StatusRoutes,
        requestAnswered: @escaping @Sendable () -> Void
    ) throws {
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderFieldSize = limits.maxHeadBytes
        decoderLimits.maxHeaderListSize = limits.maxHeadBytes
        try ops.addHandler(ConnectionGuard(limits: limits))
        try ops.configureHTTPServerPipeline(
            withPipeliningAssistance: true, withErrorHandling: false,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: decoderLimits)
        try ops.addHandler(StatusHTTPHandler(routes: routes, requestAnswered: requestAnswered))
    }
}

/// On the listening socket: when a connection cannot be accepted for lack of descriptors (or
/// memory), accepting pauses for 100 ms, doubling up to 1 s while it keeps failing, and each
/// failure is counted. Without it the event loop retried `accept4` at once, for ever: a full core
/// and no answer to anyone while relay sessions held every descriptor. The waiting connections
/// stay in the backlog and are served once descriptors free.
final class AcceptPauseHandler: ChannelInboundHandler {
    typealias InboundIn = Channel
    typealias InboundOut = Channel

    static let firstPause = TimeAmount.milliseconds(100)
    static let longestPause = TimeAmount.seconds(1)

    private let counted: @Sendable () -> Void
    private var pause = AcceptPauseHandler.firstPause
    private var resume: Scheduled<Void>?

    init(counted: @escaping @Sendable () -> Void) {
        self.counted = counted
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Accepting works again.
        pause = Self.firstPause
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let io = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(io.errnoCode) else {
            context.fireErrorCaught(error)
            return
        }
        counted()
        guard resume == nil else { return }
        // Turning auto-read off takes the socket out of the poll set until we turn it back on.
        try? context.channel.syncOptions?.setOption(.autoRead, value: false)
        resume = context.eventLoop.assumeIsolated().scheduleTask(in: pause) {
            self.resume = nil
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        }
        pause = TimeAmount.nanoseconds(min(pause.nanoseconds * 2, Self.longestPause.nanoseconds))
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        resume?.cancel()
    }
}

/// The pipeline of a refused connection: closed as soon as it is active, nothing sent.
final class CloseAtOnceHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
