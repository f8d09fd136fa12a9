import Foundation

/// A value shared between a test and the threads or closures it starts.
public final class LockedBox<T>: @unchecked Sendable {
    // @unchecked: every access holds `lock`.
    private let lock = NSLock()
    private var stored: T
    public init(_ value: T) { stored = value }
    public var value: T {
        get {
            lock.lock()
            defer { lock.unlock() }
            return stored
        }
        set {
            lock.lock()
            stored = newValue
            lock.unlock()
        }
    }
}

/// A thread-safe boolean, false unless told otherwise.
public final class Flag: @unchecked Sendable {
    // @unchecked: `v` is guarded by `lock`.
    private let lock = NSLock()
    private var v: Bool
    public init(_ value: Bool = false) { v = value }
    public var value: Bool {
        get {
            lock.lock()
            defer { lock.unlock() }
            return v
        }
        set {
            lock.lock()
            v = newValue
            lock.unlock()
        }
    }
}

/// A thread-safe list of failure messages.
public final class LockedList: @unchecked Sendable {
    // @unchecked: `list` is guarded by `lock`.
    private let lock = NSLock()
    private var list: [String] = []
    public init() {}
    public func append(_ s: String) {
        lock.lock()
        list.append(s)
        lock.unlock()
    }
    public var items: [String] {
        lock.lock()
        defer { lock.unlock() }
        return list
    }
}
