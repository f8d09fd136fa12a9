/// The health of one upstream: a pure state machine fed with failures, probe results and the
/// time (nanoseconds, injected), so tests run it on a fake clock.
///
/// Passive: `maxFails` failures within `failTimeout` of the first one mark the upstream down for
/// `failTimeout`. Active: `probeFails` probes in a row that got no answer mark it down until a
/// probe is answered.
struct HealthState: Sendable, Equatable {
    let maxFails: Int
    let failTimeout: UInt64
    let probeFails: Int
    /// Probes in a row that got no answer.
    private(set) var missedProbes = 0
    private(set) var failures = 0
    private(set) var windowStart: UInt64 = 0
    /// Passively down while `now < downUntil`.
    private(set) var downUntil: UInt64 = 0
    /// Actively down: the last `probeFails` probes went unanswered.
    private(set) var probeDown = false

    init(maxFails: Int, failTimeout: UInt64, probeFails: Int = 1) {
        self.maxFails = maxFails
        self.failTimeout = failTimeout
        self.probeFails = max(1, probeFails)
    }

    func isDown(now: UInt64) -> Bool { probeDown || now < downUntil }

    /// Records one failure; returns true when this failure marked the upstream down.
    ///
    /// Workers read their clocks before they take the lock this state sits behind, so failures
    /// can come slightly out of clock order: one older than the window's start counts inside the
    /// window, and the window's start only moves forward (a late, older failure never restarts
    /// the count the newer ones began).
    mutating func recordFailure(now: UInt64) -> Bool {
        guard maxFails > 0, now >= downUntil else { return false }
        if failures == 0 || (now > windowStart && now - windowStart >= failTimeout) {
            failures = 0
            windowStart = now
        }
        failures += 1
        guard failures >= maxFails else { return false }
        failures = 0
        downUntil = now &+ failTimeout
        return true
    }

    /// Records a probe outcome; returns the new "down" value when it changed, nil otherwise.
    mutating func recordProbe(answered: Bool, now: UInt64) -> Bool? {
        let wasDown = isDown(now: now)
        missedProbes = answered ? 0 : missedProbes + 1
        probeDown = missedProbes >= probeFails
        let isNowDown = isDown(now: now)
        return wasDown == isNowDown ? nil : isNowDown
    }
}
