/// How the listeners of a new configuration differ from the running ones, by name: what a
/// reload keeps, rebuilds, closes and opens. Pure, so it is tested without sockets.
public struct ListenerChanges: Sendable, Equatable {
    /// Same name, same settings: keeps its sockets, sessions and counters.
    public var unchanged: [String] = []
    /// Same name, different settings: replaced by a new listener.
    public var changed: [String] = []
    /// Only in the running configuration: drained and closed.
    public var removed: [String] = []
    /// Only in the new configuration: opened.
    public var added: [String] = []

    public init(unchanged: [String] = [], changed: [String] = [], removed: [String] = [], added: [String] = []) {
        self.unchanged = unchanged
        self.changed = changed
        self.removed = removed
        self.added = added
    }

    /// Compares listeners by name; settings are compared with `==` (every key counts, so new
    /// keys are covered without touching this), ignoring only where the section sits in the file.
    public init(from old: [ListenerConfiguration], to new: [ListenerConfiguration]) {
        var before: [String: ListenerConfiguration] = [:]
        for l in old { before[l.name] = l }
        let newNames = Set(new.map(\.name))
        for l in new {
            guard let o = before[l.name] else {
                added.append(l.name)
                continue
            }
            if Self.sameSettings(o, l) { unchanged.append(l.name) } else { changed.append(l.name) }
        }
        removed = old.map(\.name).filter { !newNames.contains($0) }
    }

    static func sameSettings(_ a: ListenerConfiguration, _ b: ListenerConfiguration) -> Bool {
        var a = a, b = b
        a.line = 0
        b.line = 0
        return a == b
    }

    /// True when nothing about the listeners changed.
    public var isEmpty: Bool { changed.isEmpty && removed.isEmpty && added.isEmpty }

    /// `unchanged=2 changed=1 (b) removed=0 added=1 (d)`, for logs.
    public var summary: String {
        func part(_ label: String, _ names: [String]) -> String {
            names.isEmpty ? "\(label)=0" : "\(label)=\(names.count) (\(names.joined(separator: ",")))"
        }
        return [part("unchanged", unchanged), part("changed", changed), part("removed", removed), part("added", added)]
            .joined(separator: " ")
    }
}
