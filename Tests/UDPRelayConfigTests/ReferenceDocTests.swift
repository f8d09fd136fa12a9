import TestSupport
import XCTest

@testable import UDPRelayConfig

/// config/README.md is the configuration reference, and udprelayd.ini(5) is generated from it
/// (packaging/man/md2man.py; scripts/check-man.sh checks that step). This test closes the chain:
/// the keys the parser accepts and the keys the reference documents are the same, section by section.
final class ReferenceDocTests: XCTestCase {
    static let referencePath = repositoryRoot.appendingPathComponent("config/README.md").path

    /// Keys per section kind, from the reference's tables: a `## `[kind ...]`` heading, then
    /// rows whose first cell is a code span ("| `key` | ...").
    static func documentedKeys() throws -> [String: Set<String>] {
        let text = try String(contentsOfFile: referencePath, encoding: .utf8)
        var keys: [String: Set<String>] = [:]
        var kind: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("## ") {
                // "## `[listener NAME]`" -> "listener"; any other level-2 heading ends the section.
                if let open = line.firstIndex(of: "["), line.contains("`[") {
                    let rest = line[line.index(after: open)...]
                    kind = String(rest.prefix { $0.isLetter || $0 == "_" })
                } else {
                    kind = nil
                }
                continue
            }
            guard let kind, line.hasPrefix("| `") else { continue }
            let cell = line.dropFirst(3).prefix { $0 != "`" }
            keys[kind, default: []].insert(String(cell))
        }
        return keys
    }

    func testEveryParsedKeyIsDocumentedAndEveryDocumentedKeyIsParsed() throws {
        let documented = try Self.documentedKeys()
        let parsed: [String: Set<String>] = [
            "daemon": Set(Schema.daemon.map(\.name)),
            "status": Set(Schema.status.map(\.name)),
            "listener": Set(Schema.listener.map(\.name)),
        ]
        XCTAssertEqual(Set(parsed.keys), Set(Schema.sectionKinds), "a section kind is missing from this test")
        for (kind, keys) in parsed {
            let doc = documented[kind] ?? []
            XCTAssertEqual(keys.subtracting(doc), [], "[\(kind)] keys the parser accepts but config/README.md does not document")
            XCTAssertEqual(doc.subtracting(keys), [], "[\(kind)] keys config/README.md documents but the parser rejects")
        }
    }
}
