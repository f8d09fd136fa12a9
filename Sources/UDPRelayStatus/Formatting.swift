#if canImport(Glibc)
import Glibc
#endif

/// Small text helpers shared by the renderers; no Foundation, so the daemon stays small.
enum Format {
    /// `2026-11-25T19:25:30.123Z` (RFC 3339, UTC, milliseconds).
    static func rfc3339(_ time: Double) -> String {
        let (tm, ms) = brokenDown(time)
        return "\(pad(Int(tm.tm_year) + 1900, 4))-\(pad(Int(tm.tm_mon) + 1, 2))-\(pad(Int(tm.tm_mday), 2))"
            + "T\(pad(Int(tm.tm_hour), 2)):\(pad(Int(tm.tm_min), 2)):\(pad(Int(tm.tm_sec), 2)).\(pad(ms, 3))Z"
    }

    /// `Wed, 25 Nov 2026 19:25:30 GMT` (the HTTP `Date` header, RFC 9110 IMF-fixdate).
    static func httpDate(_ time: Double) -> String {
        let (tm, _) = brokenDown(time)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        return "\(days[Int(tm.tm_wday)]), \(pad(Int(tm.tm_mday), 2)) \(months[Int(tm.tm_mon)]) \(Int(tm.tm_year) + 1900) "
            + "\(pad(Int(tm.tm_hour), 2)):\(pad(Int(tm.tm_min), 2)):\(pad(Int(tm.tm_sec), 2)) GMT"
    }

    /// `19:25:30` (UTC), for the page.
    static func clock(_ time: Double) -> String {
        let (tm, _) = brokenDown(time)
        return "\(pad(Int(tm.tm_hour), 2)):\(pad(Int(tm.tm_min), 2)):\(pad(Int(tm.tm_sec), 2))"
    }

    private static func brokenDown(_ time: Double) -> (tm, Int) {
        let whole = time.rounded(.down)
        var t = time_t(whole)
        var ms = Int(((time - whole) * 1000).rounded(.down))
        if ms > 999 { ms = 999 }
        var result = tm()
        gmtime_r(&t, &result)
        return (result, ms)
    }

    static func pad(_ n: Int, _ width: Int) -> String {
        let s = String(n)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    /// A decimal with exactly `decimals` digits after the point (`fixed(3.14159, 2)` = `3.14`).
    static func fixed(_ value: Double, _ decimals: Int) -> String {
        guard value.isFinite else { return "0" }
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        guard scaled < 9.0e18 else { return String(value) }
        let n = UInt64(scaled)
        let sign = value < 0 && n != 0 ? "-" : ""
        let intPart = n / UInt64(scale)
        guard decimals > 0 else { return sign + String(intPart) }
        let frac = n % UInt64(scale)
        return sign + String(intPart) + "." + pad(Int(frac), decimals)
    }

    /// A number for Prometheus and JSON: integers without a fraction, others as Swift prints them.
    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    /// `1 234 567` with thin spaces: exact counters that still read at a glance.
    static func grouped(_ n: UInt64) -> String {
        let s = String(n)
        var out = ""
        for (i, ch) in s.enumerated() {
            if i > 0, (s.count - i) % 3 == 0 { out += "\u{202F}" }
            out.append(ch)
        }
        return out
    }

    /// `950`, `12.3k`, `4.56M`, `7.89G`: a rate or count in three significant-ish digits.
    static func si(_ value: Double) -> String {
        let units: [(Double, String)] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        for (scale, suffix) in units where value >= scale {
            let v = value / scale
            return fixed(v, v < 10 ? 2 : (v < 100 ? 1 : 0)) + suffix
        }
        return value < 10 && value != value.rounded() ? fixed(value, 1) : fixed(value, 0)
    }

    /// Bytes with binary units: `512 B`, `1.5 KiB`, `20.0 MiB`.
    static func bytes(_ value: Double) -> String {
        let units: [(Double, String)] = [(1_099_511_627_776, "TiB"), (1_073_741_824, "GiB"), (1_048_576, "MiB"), (1024, "KiB")]
        for (scale, suffix) in units where value >= scale {
            let v = value / scale
            return fixed(v, v < 10 ? 2 : (v < 100 ? 1 : 0)) + " " + suffix
        }
        return fixed(value, 0) + " B"
    }

    /// `3d 4h`, `2h 05m`, `4m 09s`, `12s`.
    static func duration(_ seconds: Double) -> String {
        let s = Int(max(0, seconds))
        let d = s / 86400, h = (s % 86400) / 3600, m = (s % 3600) / 60, sec = s % 60
        if d > 0 { return "\(d)d \(h)h" }
        if h > 0 { return "\(h)h \(pad(m, 2))m" }
        if m > 0 { return "\(m)m \(pad(sec, 2))s" }
        return "\(sec)s"
    }

    /// Addresses (`127.0.0.1:5000`, `[::1]:5000`) with runs of consecutive ports on the same IP
    /// folded into one line, `127.0.0.1:5000-5099 (100 ports)`, so a port range reads as it
    /// was configured. Order is kept; anything that is not `HOST:PORT` stays as it is.
    static func addressRuns(_ addresses: [String]) -> [String] {
        var out: [String] = []
        var run: (host: Substring, low: Int, high: Int)?
        func flush() {
            guard let r = run else { return }
            out.append(r.low == r.high ? "\(r.host):\(r.low)" : "\(r.host):\(r.low)-\(r.high) (\(r.high - r.low + 1) ports)")
            run = nil
        }
        for a in addresses {
            guard let colon = a.lastIndex(of: ":"), let port = Int(a[a.index(after: colon)...]) else {
                flush()
                out.append(a)
                continue
            }
            let host = a[..<colon]
            if let r = run, r.host == host, r.high + 1 == port {
                run = (host, r.low, port)
            } else {
                flush()
                run = (host, port, port)
            }
        }
        flush()
        return out
    }

    /// Escapes text for HTML element content and attribute values.
    static func html(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// A JSON string literal, quotes included (RFC 8259 escaping).
    static func json(_ s: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count + 2)
        appendJSON(s, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `s` as a JSON string literal, quoted and escaped (`"`, `\`, control characters), appended
    /// as UTF-8. Bytes of multi-byte characters pass through unchanged.
    static func appendJSON(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        // Names, addresses and numbers need no escaping: copied whole.
        if !s.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            out.append(contentsOf: s.utf8)
            out.append(UInt8(ascii: "\""))
            return
        }
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out.append(contentsOf: "\\\"".utf8)
            case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
            case UInt8(ascii: "\n"): out.append(contentsOf: "\\n".utf8)
            case UInt8(ascii: "\r"): out.append(contentsOf: "\\r".utf8)
            case UInt8(ascii: "\t"): out.append(contentsOf: "\\t".utf8)
            case 0..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                out.append(contentsOf: "\\u00".utf8)
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xF)])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// A Prometheus label value (text format 0.0.4: escape `\`, `"` and newline).
    static func label(_ s: String) -> String {
        var out = ""
        for ch in s.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// Decodes `%XX` escapes and `+` in a query-string component; nil when malformed.
    static func percentDecoded(_ s: Substring) -> String? {
        var bytes: [UInt8] = []
        var it = s.utf8.makeIterator()
        while let b = it.next() {
            switch b {
            case UInt8(ascii: "%"):
                guard let h = it.next(), let l = it.next(), let hv = hexValue(h), let lv = hexValue(l) else { return nil }
                bytes.append(hv << 4 | lv)
            case UInt8(ascii: "+"):
                bytes.append(UInt8(ascii: " "))
            default:
                bytes.append(b)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
