#if canImport(Glibc)
import Glibc
#endif

/// Network (and mount) namespaces for tests that must not touch the host's settings.
public enum Namespaces {
    public static let newNetwork: Int32 = 0x4000_0000  // CLONE_NEWNET
    public static let newMount: Int32 = 0x0002_0000  // CLONE_NEWNS

    /// unshare(2) for the calling thread (Glibc's module hides it behind _GNU_SOURCE).
    public static func unshare(_ flags: Int32) -> Bool {
        typealias Unshare = @convention(c) (Int32) -> Int32
        guard let symbol = dlsym(nil, "unshare") else { return false }
        return unsafeBitCast(symbol, to: Unshare.self)(flags) == 0
    }

    /// setns(2) of the calling thread into the named network namespace (`ip netns add NAME`,
    /// /run/netns/NAME). Sockets keep the namespace they were made in, and children the one
    /// of the thread that started them.
    public static func enter(named name: String) -> Bool {
        typealias SetNS = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(nil, "setns") else { return false }
        let fd = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return unsafeBitCast(symbol, to: SetNS.self)(fd, newNetwork) == 0
    }

    /// Sets IFF_UP on `lo` of the calling thread's network namespace.
    public static func bringLoopbackUp() -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var request = ifreq()
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { $0.copyBytes(from: Array("lo".utf8) + [0]) }
        guard ioctl(fd, UInt(SIOCGIFFLAGS), &request) == 0 else { return false }
        request.ifr_ifru.ifru_flags |= Int16(IFF_UP)
        return ioctl(fd, UInt(SIOCSIFFLAGS), &request) == 0
    }
}
