import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Polls `condition` every 2 ms until it holds (true) or `seconds` have passed (false): for
/// state that no event announces, such as a counter another thread moves.
public func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        if Date() >= deadline { return false }
        usleep(2000)
    }
    return true
}
