/// One open descriptor and the duty to close it, as a value that cannot be copied: it closes
/// exactly once, when it goes out of scope or on `close()`, unless `take()` has handed the
/// descriptor to a new owner (a worker, a read source's cancel handler). A function that opens a
/// descriptor and then configures it holds one of these, so every error path closes it without
/// a `catch { close(fd) }`; the happy path ends with `take()`.
///
/// The shape of swift-system's `FileDescriptor` with `closeAfter`, and of NIO's
/// `takeDescriptorOwnership`, for the datapath's plain `Int32` descriptors.
public struct SocketDescriptor: ~Copyable {
    /// The descriptor, valid while this value lives. Borrow it for calls; do not close it.
    public let rawValue: Int32

    /// Takes ownership of `rawValue`, an open descriptor.
    public init(_ rawValue: Int32) {
        self.rawValue = rawValue
    }

    /// Hands the descriptor over without closing it: the caller owns it from now on.
    public consuming func take() -> Int32 {
        let fd = rawValue
        discard self
        return fd
    }

    /// Closes the descriptor now.
    public consuming func close() {
        Syscall.close(rawValue)
        discard self
    }

    deinit {
        Syscall.close(rawValue)
    }
}
