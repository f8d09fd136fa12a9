import CUDPRelay
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// The relay sessions one process hands to the next across a restart: what each session is
/// (client, upstream, where replies leave from, how long it may stay idle, its age and counts), in a
/// small binary form that goes into a sealed memfd in systemd's file descriptor store beside
/// the session sockets themselves (names: `FileDescriptorStore` in the systemd module).
///
/// The form is versioned and checksummed. A table of another format version, or a damaged
/// one, is refused with an error that says why; the daemon then starts with an empty table.
public struct SessionArchive: Equatable, Sendable {
    /// One session.
    public struct Entry: Equatable, Sendable {
        /// The `[listener NAME]` it belongs to.
        public var listener: String
        /// Which of the listener's sockets (in the order they are bound) the client's datagrams
        /// arrive on; the session is rebuilt in that socket's worker.
        public var socket: UInt16
        public var client: SocketAddress
        /// The address the client sent to, when replies must leave from it (wildcard listeners).
        public var local: SocketAddress?
        /// The interface of `local`.
        public var interface: UInt32
        /// The upstream the session socket is connected to.
        public var upstream: SocketAddress
        /// Milliseconds since the session last carried a datagram either way (the next process
        /// applies its own `session_timeout` to it).
        public var idleMilliseconds: UInt32
        public var requests: UInt32
        public var replies: UInt32
        /// The kernel's drop count of the session socket last seen (SO_RXQ_OVFL), so that
        /// drops already counted are not counted again.
        public var kernelDrops: UInt32
        /// Milliseconds since the session opened, and the bytes sent to the upstream and
        /// forwarded to the client so far: its record (`session_log`) counts from its start,
        /// wherever it ends.
        public var ageMilliseconds: UInt64
        public var requestBytes: UInt64
        public var replyBytes: UInt64

        public init(
            listener: String, socket: UInt16, client: SocketAddress, local: SocketAddress?, interface: UInt32,
            upstream: SocketAddress, idleMilliseconds: UInt32, requests: UInt32, replies: UInt32, kernelDrops: UInt32 = 0,
            ageMilliseconds: UInt64 = 0, requestBytes: UInt64 = 0, replyBytes: UInt64 = 0
        ) {
            self.listener = listener
            self.socket = socket
            self.client = client
            self.local = local
            self.interface = interface
            self.upstream = upstream
            self.idleMilliseconds = idleMilliseconds
            self.requests = requests
            self.replies = replies
            self.kernelDrops = kernelDrops
            self.ageMilliseconds = ageMilliseconds
            self.requestBytes = requestBytes
            self.replyBytes = replyBytes
        }
    }

    /// Why an archive was refused.
    public enum DecodingError: Error, Equatable, Sendable, CustomStringConvertible {
        case notAnArchive
        case otherVersion(UInt32)
        case damaged(String)

        public var description: String {
            switch self {
            case .notAnArchive: "not a udprelayd session table"
            case .otherVersion(let v): "session table format \(v), this build reads format \(SessionArchive.formatVersion)"
            case .damaged(let why): "damaged session table: \(why)"
            }
        }
    }

    public static let formatVersion: UInt32 = 1
    /// Most sessions carried across a restart, over all listeners. Each costs a descriptor in
    /// systemd's store; the unit's `FileDescriptorStoreMax=` leaves room for them and for the
    /// listener sockets. Sessions beyond it are closed and counted.
    public static let maxEntries = 8192
    private static let magic: [UInt8] = Array("UDPRSESS".utf8)

    public var entries: [Entry]

    public init(entries: [Entry] = []) {
        self.entries = entries
    }

    // MARK: encoding

    public func encoded() -> [UInt8] {
        var w = Writer()
        w.bytes(Self.magic)
        w.u32(Self.formatVersion)
        w.u32(UInt32(entries.count))
        for e in entries {
            let name = Array(e.listener.utf8.prefix(255))
            w.u8(UInt8(name.count))
            w.bytes(name)
            w.u16(e.socket)
            w.address(e.client)
            if let local = e.local {
                w.u8(1)
                w.address(local)
            } else {
                w.u8(0)
            }
            w.u32(e.interface)
            w.address(e.upstream)
            w.u32(e.idleMilliseconds)
            w.u32(e.requests)
            w.u32(e.replies)
            w.u32(e.kernelDrops)
            w.u64(e.ageMilliseconds)
            w.u64(e.requestBytes)
            w.u64(e.replyBytes)
        }
        w.u64(Self.checksum(w.out))
        return w.out
    }

    public init(decoding data: [UInt8]) throws(DecodingError) {
        guard data.count >= Self.magic.count, Array(data.prefix(Self.magic.count)) == Self.magic else { throw .notAnArchive }
        var r = Reader(data: data, at: Self.magic.count)
        guard let version = r.u32() else { throw .damaged("truncated header") }
        guard version == Self.formatVersion else { throw .otherVersion(version) }
        guard data.count >= Self.magic.count + 16 else { throw .damaged("truncated header") }
        let body = data.count - 8
        var tail = Reader(data: data, at: body)
        guard tail.u64() == Self.checksum(data[0..<body]) else { throw .damaged("checksum mismatch") }
        guard let count = r.u32() else { throw .damaged("truncated header") }
        guard count <= Self.maxEntries else { throw .damaged("\(count) sessions, more than \(Self.maxEntries)") }
        var entries: [Entry] = []
        entries.reserveCapacity(Int(count))
        for i in 0..<Int(count) {
            guard let nameLength = r.u8(), let name = r.bytes(Int(nameLength)), let socket = r.u16(), let client = r.address(),
                let hasLocal = r.u8(), hasLocal <= 1
            else { throw .damaged("session \(i) is cut short or malformed") }
            var local: SocketAddress?
            if hasLocal == 1 {
                guard let l = r.address() else { throw .damaged("session \(i) is cut short or malformed") }
                local = l
            }
            guard let interface = r.u32(), let upstream = r.address(), let idle = r.u32(), let requests = r.u32(),
                let replies = r.u32(), let kernelDrops = r.u32(), let age = r.u64(), let requestBytes = r.u64(),
                let replyBytes = r.u64(), r.offset <= body
            else { throw .damaged("session \(i) is cut short or malformed") }
            guard let listener = String(validating: name, as: UTF8.self) else { throw .damaged("session \(i): listener name is not UTF-8") }
            entries.append(
                Entry(
                    listener: listener, socket: socket, client: client, local: local, interface: interface,
                    upstream: upstream, idleMilliseconds: idle, requests: requests, replies: replies,
                    kernelDrops: kernelDrops, ageMilliseconds: age, requestBytes: requestBytes, replyBytes: replyBytes))
        }
        guard r.offset == body else { throw .damaged("\(body - r.offset) bytes after the last session") }
        self.entries = entries
    }

    /// FNV-1a, 64 bits: catches a damaged or cut table (not an attacker: the memfd is sealed
    /// and only systemd and this service hold it).
    static func checksum(_ bytes: some Collection<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h &*= 0x0000_0100_0000_01b3
        }
        return h
    }

    private struct Writer {
        var out: [UInt8] = []
        mutating func u8(_ v: UInt8) { out.append(v) }
        mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        mutating func bytes(_ b: [UInt8]) { out.append(contentsOf: b) }
        mutating func address(_ a: SocketAddress) {
            switch a.ip {
            case .v4(let v):
                u8(4)
                u64(0)
                u64(UInt64(v))
            case .v6(let high, let low):
                u8(6)
                u64(high)
                u64(low)
            }
            u16(a.port)
        }
    }

    private struct Reader {
        let data: [UInt8]
        var offset: Int
        init(data: [UInt8], at offset: Int) {
            self.data = data
            self.offset = offset
        }
        private mutating func integer<T: FixedWidthInteger>(_: T.Type) -> T? {
            let size = MemoryLayout<T>.size
            guard offset + size <= data.count else { return nil }
            var v: T = 0
            for k in 0..<size { v |= T(data[offset + k]) << (8 * k) }
            offset += size
            return v
        }
        mutating func u8() -> UInt8? { integer(UInt8.self) }
        mutating func u16() -> UInt16? { integer(UInt16.self) }
        mutating func u32() -> UInt32? { integer(UInt32.self) }
        mutating func u64() -> UInt64? { integer(UInt64.self) }
        mutating func bytes(_ n: Int) -> [UInt8]? {
            guard offset + n <= data.count else { return nil }
            defer { offset += n }
            return Array(data[offset..<offset + n])
        }
        mutating func address() -> SocketAddress? {
            guard let family = u8(), let high = u64(), let low = u64(), let port = u16() else { return nil }
            switch family {
            case 4:
                guard high == 0, low <= UInt64(UInt32.max) else { return nil }
                return SocketAddress(ip: .v4(UInt32(low)), port: port)
            case 6: return SocketAddress(ip: .v6(high: high, low: low), port: port)
            default: return nil
            }
        }
    }
}

extension SessionArchive {
    /// The archive in a new sealed memfd (nothing can change it once made), for the store.
    /// The caller owns the descriptor.
    public func sealedMemoryFile() throws(SyscallError) -> Int32 {
        let bytes = encoded()
        return try bytes.withUnsafeBytes { raw in
            Result { () throws(SyscallError) in try Syscall.sealedMemoryFile(name: "udprelayd-sessions", raw) }
        }.get()
    }

    /// Reads an archive from a memfd the store gave back: it must carry the seals
    /// `sealedMemoryFile()` sets and be at most `maxBytes` long. Does not close `fd`.
    public init(sealedMemoryFile fd: Int32) throws(DecodingError) {
        guard cur_is_sealed_memfd(fd) == 1 else { throw .damaged("not a sealed memfd") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .damaged("cannot stat it: errno \(errno)") }
        let size = Int(st.st_size)
        guard size <= Self.maxBytes else { throw .damaged("\(size) bytes, more than \(Self.maxBytes)") }
        var data = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw .damaged("cannot read it: \(n < 0 ? "errno \(errno)" : "cut short")") }
            done += n
        }
        try self.init(decoding: data)
    }

    /// The largest archive read back: `maxEntries` of the largest entries, with room to spare.
    static let maxBytes = 64 + maxEntries * 384
}
