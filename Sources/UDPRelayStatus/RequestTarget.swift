/// Request targets as the status endpoint understands them. Pure (no NIO, no Foundation), so
/// the libFuzzer target in Fuzz/ builds it on its own.
public enum RequestTarget {
    /// Splits an origin-form target (`/status?listener=dns`) into its path and decoded query
    /// pairs; accepts absolute-form (`http://host/status`) too. nil when malformed.
    public static func split(_ uri: String) -> (String, [(String, String)])? {
        var target = Substring(uri)
        if target.hasPrefix("http://") || target.hasPrefix("https://") {
            let afterScheme = target[target.index(target.firstIndex(of: ":")!, offsetBy: 3)...]
            guard let slash = afterScheme.firstIndex(of: "/") else { return ("/", []) }
            target = afterScheme[slash...]
        }
        guard target.first == "/" else { return nil }
        if let hash = target.firstIndex(of: "#") { target = target[..<hash] }
        let pathPart: Substring
        var pairs: [(String, String)] = []
        if let q = target.firstIndex(of: "?") {
            pathPart = target[..<q]
            for item in target[target.index(after: q)...].split(separator: "&", omittingEmptySubsequences: true) {
                let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard let key = Format.percentDecoded(kv[0]),
                    let value = Format.percentDecoded(kv.count > 1 ? kv[1] : "")
                else { return nil }
                pairs.append((key, value))
            }
        } else {
            pathPart = target
        }
        guard let path = Format.percentDecoded(pathPart) else { return nil }
        return (path, pairs)
    }
}
