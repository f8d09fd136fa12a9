/// The whole typed configuration of one daemon, as loaded from one INI file and the files it
/// includes.
///
/// Values are complete: every default has been applied and every cross-field check has run,
/// so code that receives a `Configuration` never needs to validate it again.
public struct Configuration: Sendable, Equatable {
    /// The file it was loaded from, as given by the user.
    public var file: String
    public var daemon: DaemonConfiguration
    public var status: StatusConfiguration
    /// Listeners in file order (the main file's, then each included file's).
    public var listeners: [ListenerConfiguration]
    /// The files `include =` added, in the order they were read.
    public var includedFiles: [String]

    public init(
        file: String, daemon: DaemonConfiguration, status: StatusConfiguration, listeners: [ListenerConfiguration],
        includedFiles: [String] = []
    ) {
        self.file = file
        self.daemon = daemon
        self.status = status
        self.listeners = listeners
        self.includedFiles = includedFiles
    }
}

/// Log verbosity, from most to least verbose (the swift-log levels).
public enum LogLevel: String, CaseIterable, Sendable, Comparable {
    case trace, debug, info, notice, warning, error, critical

    public static func < (a: LogLevel, b: LogLevel) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// The `[daemon]` section.
public struct DaemonConfiguration: Sendable, Equatable {
    public var logLevel: LogLevel
}

/// The `[status]` section: where the HTTP status endpoint listens and who may use it.
public struct StatusConfiguration: Sendable, Equatable {
    /// nil when `listen = off`.
    public var listen: SocketAddress?
    /// Networks allowed to connect. Already resolved from the default: loopback only when
    /// listening on a wildcard address, everyone otherwise.
    public var allow: [CIDR]
}

/// What a listener does with the datagrams it receives.
public enum ListenerMode: String, CaseIterable, Sendable {
    /// RFC 862: send every datagram back to its sender, unchanged.
    case echo
    /// One session per client with its own upstream socket; replies go back to that client.
    case forward
    /// As `forward`, spreading sessions over several upstreams (`balance = ...`).
    case balance
    /// Every datagram is copied to every upstream; replies are counted and dropped.
    case mirror

    /// Modes that send to `upstream =` addresses.
    public var isRelay: Bool { self != .echo }
    /// Modes that keep a session (and an upstream socket) per client.
    public var hasSessions: Bool { self == .forward || self == .balance }
}

/// One `[listener NAME]` section.
public struct ListenerConfiguration: Sendable, Equatable {
    /// Letters, digits, `-` and `_`; unique in the file.
    public var name: String
    /// The line of the section header, for messages about the listener as a whole.
    public var line: Int
    /// One or more local addresses; each becomes one socket.
    public var listen: [SocketAddress]
    public var mode: ListenerMode
    /// Largest datagram accepted, in bytes; larger ones are dropped and counted (`too_large`).
    public var maxDatagram: Int
    /// Requested kernel receive buffer per socket, in bytes (SO_RCVBUF).
    public var receiveBuffer: Int
    /// Requested kernel send buffer per socket, in bytes (SO_SNDBUF).
    public var sendBuffer: Int
    /// Relay modes: where datagrams go, in file order. Empty for `echo`.
    public var upstreams: [UpstreamEndpoint]
    /// `balance` mode: how a new session picks its upstream.
    public var balance: BalanceAlgorithm
    /// `balance = hash`: the client's address and port, or its address only (`hash_key`).
    public var hashKey: HashKey
    /// `mirror` mode: copy one datagram in `sampleEvery` (`sample = 1/N`); 1 copies all.
    public var sampleEvery: Int
    /// How often upstream hostnames are resolved again (literal addresses never are).
    public var resolveInterval: Duration
    /// Which addresses of an upstream hostname are used (`resolve`): IPv4, IPv6 or both.
    public var resolveFamily: ResolveFamily
    /// `forward`/`balance`: session limits.
    public var sessions: SessionSettings
    /// Passive and active upstream health checks.
    public var health: HealthSettings
    /// Access control, loop guard and rate limits.
    public var protection: ProtectionConfiguration
    /// How long a worker keeps polling its sockets without sleeping after the last datagram
    /// (`busy_poll`); zero (the default) sleeps in `epoll_wait` at once.
    public var busyPoll: Duration
    /// Sockets per `listen` address, each with its own worker (`workers`); more than one share
    /// the address with SO_REUSEPORT and the kernel spreads clients over them.
    public var workers: WorkerCount
    /// Send runs of equal-sized datagrams to one destination as one UDP GSO send (`udp_gso`).
    public var segmentation: Bool
    /// Relay modes: what each datagram to an upstream starts with (`proxy_protocol`): nothing,
    /// or a PROXY protocol v2 header naming the client and the address it sent to.
    public var proxyProtocol: ProxyProtocolVersion
    /// `forward`/`balance`: each session's upstream socket is bound to its client's own address
    /// and port (`transparent`), so upstreams see the client (needs CAP_NET_ADMIN and the
    /// policy routing that brings replies back to this host).
    public var transparent: Bool
    /// `mirror`: each copy leaves with its client's address and port as its source (`spoof`),
    /// sent through raw sockets (needs CAP_NET_RAW).
    public var spoof: Bool

    public init(
        name: String, line: Int = 0, listen: [SocketAddress], mode: ListenerMode = .echo,
        maxDatagram: Int = Defaults.maxDatagram, receiveBuffer: Int = Defaults.socketBuffer,
        sendBuffer: Int = Defaults.socketBuffer, upstreams: [UpstreamEndpoint] = [],
        balance: BalanceAlgorithm = Defaults.balance, hashKey: HashKey = Defaults.hashKey, sampleEvery: Int = 1,
        resolveInterval: Duration = Defaults.resolveInterval, resolveFamily: ResolveFamily = Defaults.resolveFamily,
        sessions: SessionSettings = SessionSettings(), health: HealthSettings = HealthSettings(),
        protection: ProtectionConfiguration = ProtectionConfiguration(), busyPoll: Duration = Defaults.busyPoll,
        workers: WorkerCount = Defaults.workers, segmentation: Bool = Defaults.segmentation,
        proxyProtocol: ProxyProtocolVersion = Defaults.proxyProtocol,
        transparent: Bool = Defaults.transparent, spoof: Bool = Defaults.spoof
    ) {
        self.name = name
        self.line = line
        self.listen = listen
        self.mode = mode
        self.maxDatagram = maxDatagram
        self.receiveBuffer = receiveBuffer
        self.sendBuffer = sendBuffer
        self.upstreams = upstreams
        self.balance = balance
        self.hashKey = hashKey
        self.sampleEvery = sampleEvery
        self.resolveInterval = resolveInterval
        self.resolveFamily = resolveFamily
        self.sessions = sessions
        self.health = health
        self.protection = protection
        self.busyPoll = busyPoll
        self.workers = workers
        self.segmentation = segmentation
        self.proxyProtocol = proxyProtocol
        self.transparent = transparent
        self.spoof = spoof
    }
}

/// `workers = N|auto`: how many sockets, each with its own queue and read source, serve one
/// `listen` address. Kept symbolic here (the configuration is pure); the datapath resolves
/// `auto` to the number of online CPUs when it opens the sockets.
public enum WorkerCount: Sendable, Equatable, CustomStringConvertible {
    /// Exactly this many, within `WorkerCount.range`.
    case count(Int)
    /// One per online CPU, counted when the listener opens.
    case auto

    /// Values `workers = N` accepts.
    public static let range = 1...64

    public var description: String {
        switch self {
        case .count(let n): "\(n)"
        case .auto: "auto"
        }
    }
}

/// Every default in one place; the reference in `config/README.md` documents the same values.
public enum Defaults {
    public static let configPath = "/etc/udprelayd/udprelayd.ini"
    public static let logLevel = LogLevel.info
    public static let statusListen = SocketAddress(ip: .v4(0x7F00_0001), port: 9180)
    public static let mode = ListenerMode.echo
    /// Large enough for the protocol maximum over IPv4 (65507) and IPv6 (65527).
    public static let maxDatagram = 65535
    /// Kernel socket buffers: room for bursts of thousands of small datagrams. Set with
    /// SO_RCVBUFFORCE/SO_SNDBUFFORCE when permitted, otherwise capped by net.core.[rw]mem_max.
    public static let socketBuffer = 4 << 20
    public static let balance = BalanceAlgorithm.roundRobin
    /// Address and port, as `balance = hash` hashed before `hash_key` existed.
    public static let hashKey = HashKey.addressPort
    public static let resolveInterval = Duration.seconds(30)
    public static let sessionTimeout = Duration.seconds(60)
    public static let maxSessions = 65536
    /// Session records a second per worker (`session_log_rate`): enough for every session of a
    /// normal load, few enough that a flood of new clients cannot fill the journal.
    public static let sessionLogRate = 100
    /// Off: a worker sleeps in `epoll_wait` as soon as its sockets run dry, which costs what a
    /// C epoll server costs at every rate; spinning costs a CPU at everyday rates for a few µs
    /// of round trip (see BENCHMARKS.md).
    public static let busyPoll = Duration.zero
    /// One socket and worker per address: nothing shares a port unless asked to.
    public static let workers = WorkerCount.count(1)
    /// UDP GSO halves the relay's CPU per datagram in bursts (see BENCHMARKS.md); the kernel
    /// splits the datagrams before they leave, so receivers see no difference.
    public static let segmentation = true
    /// Upstreams get the datagrams as the clients sent them.
    public static let proxyProtocol = ProxyProtocolVersion.off
    /// Upstreams see the relay's own address.
    public static let transparent = false
    /// Collectors see the relay's own address.
    public static let spoof = false
    /// Passive health: failures within `failTimeout` that mark an upstream down (0: never).
    public static let maxFails = 3
    /// Passive health: the failure window and how long an upstream stays down.
    public static let failTimeout = Duration.seconds(10)
    public static let healthInterval = Duration.seconds(5)
    /// Active health: unanswered probes in a row that mark an upstream down.
    public static let healthFails = 1
    /// Loopback networks: the status endpoint's `allow` when it listens on a wildcard address.
    public static let loopbackNetworks: [CIDR] = [
        CIDR(network: .v4(0x7F00_0000), prefixLength: 8),
        CIDR(network: .v6(high: 0, low: 1), prefixLength: 128),
    ]
    /// Everyone: the status endpoint's `allow` when it listens on a specific address.
    public static let allNetworks: [CIDR] = [
        CIDR(network: .v4(0), prefixLength: 0),
        CIDR(network: .v6(high: 0, low: 0), prefixLength: 0),
    ]
}
