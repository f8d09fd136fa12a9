#if canImport(Glibc)
import Glibc
#endif

/// The one way the start-up self-tests (`TransparentProbe`, `SpoofProbe`) try a privilege: open
/// a scratch socket of a family and set an integer option on it, then close it.
enum ScratchSocket {
    /// What failed: opening the socket, or setting the option; with errno.
    enum Failure {
        case open(Int32)
        case option(Int32)
    }

    /// nil when a socket of `family`, `type` and `proto` opens and takes `option` = 1.
    static func tryOption(
        family: Int32, type: Int32, proto: Int32, option: (level: Int32, name: Int32)
    ) -> Failure? {
        let fd = socket(family, type | Int32(SOCK_CLOEXEC.rawValue), proto)
        guard fd >= 0 else { return .open(errno) }
        defer { close(fd) }
        var one: Int32 = 1
        guard setsockopt(fd, option.level, option.name, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else { return .option(errno) }
        return nil
    }
}
