import CSystemd

#if canImport(Glibc)
import Glibc
#endif

/// Sockets passed in by systemd (`.socket` units): `sd_listen_fds_with_names(3)`.
public enum SocketActivation {
    /// One inherited descriptor and its `FileDescriptorName=`.
    public struct InheritedSocket: Sendable, Equatable {
        public let fd: Int32
        public let name: String
    }

    /// Why inherited sockets cannot be used; the daemon refuses to start with this message.
    public struct ActivationError: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Takes the sockets systemd passed to this process (`LISTEN_FDS`, `LISTEN_PID`,
    /// `LISTEN_FDNAMES`) and removes those variables from the environment, so children never
    /// see them. Each must be a datagram socket (`sd_is_socket`). Empty when none were passed.
    public static func takeInheritedSockets() throws(ActivationError) -> [InheritedSocket] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        let n = sd_listen_fds_with_names(1, &names)
        defer {
            if let names {
                var i = 0
                while let p = names[i] {
                    free(p)
                    i += 1
                }
                free(names)
            }
        }
        if n < 0 {
            throw ActivationError(description: "cannot take the sockets systemd passed in (LISTEN_FDS): \(String(cString: strerror(-n)))")
        }
        var sockets: [InheritedSocket] = []
        for i in 0..<Int(n) {
            let fd = Int32(SD_LISTEN_FDS_START) + Int32(i)
            let name = names?[i].map { String(cString: $0) } ?? "unknown"
            // sd_listen_fds sets FD_CLOEXEC already; this keeps them out of any child process.
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            // What this daemon left in the file descriptor store is checked where it is used
            // (the session archive is a memfd, not a socket).
            if FileDescriptorStore.isStoreName(name) {
                sockets.append(InheritedSocket(fd: fd, name: name))
                continue
            }
            let rc = sd_is_socket(fd, AF_UNSPEC, Int32(SOCK_DGRAM.rawValue), -1)
            if rc < 0 {
                throw ActivationError(description: "socket '\(name)' passed by systemd (fd \(fd)): \(String(cString: strerror(-rc)))")
            }
            if rc == 0 {
                throw ActivationError(
                    description: "socket '\(name)' passed by systemd (fd \(fd)) is not a datagram socket; use ListenDatagram= in the .socket unit")
            }
            sockets.append(InheritedSocket(fd: fd, name: name))
        }
        return sockets
    }

    /// The listener sockets an earlier process of this service put in the file descriptor store
    /// (see `FileDescriptorStore`): they come back with the socket-activation sockets and are
    /// matched to listeners by the address they are bound to, not by name.
    public static func storedListenerSockets(_ sockets: [InheritedSocket]) -> [InheritedSocket] {
        sockets.filter { FileDescriptorStore.isListenerName($0.name) }
    }

    /// What else this daemon left in the store: the session archive and the session sockets.
    public static func storedSessionDescriptors(_ sockets: [InheritedSocket]) -> [InheritedSocket] {
        sockets.filter { FileDescriptorStore.isStoreName($0.name) && !FileDescriptorStore.isListenerName($0.name) }
    }

    /// Groups inherited sockets by the listener they serve (stored listener sockets aside): a socket's `FileDescriptorName=`
    /// must equal a `[listener NAME]` of the configuration. Several sockets may share a name
    /// (several `ListenDatagram=` lines in one unit). A name that matches no listener is an
    /// error naming the socket and the listeners there are.
    public static func assign(
        _ sockets: [InheritedSocket], toListeners listenerNames: [String],
        configFile: String
    ) throws(ActivationError) -> [String: [Int32]] {
        var byName: [String: [Int32]] = [:]
        let known = Set(listenerNames)
        for s in sockets where !FileDescriptorStore.isStoreName(s.name) {
            guard known.contains(s.name) else {
                let list = listenerNames.isEmpty ? "none" : listenerNames.joined(separator: ", ")
                throw ActivationError(
                    description:
                        "socket '\(s.name)' passed by systemd (fd \(s.fd)) matches no [listener \(s.name)] in \(configFile) (listeners: \(list)); set FileDescriptorName= in the .socket unit to a listener name"
                )
            }
            byName[s.name, default: []].append(s.fd)
        }
        return byName
    }
}
