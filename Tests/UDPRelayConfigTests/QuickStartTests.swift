import Foundation
import TestSupport
import XCTest

/// The README's quick start works after `make run` alone: every program its
/// commands run is installed by `make run` (or is part of any Debian system), and the address
/// they talk to is one the example configuration listens on.
final class QuickStartTests: XCTestCase {
    static let root = repositoryRoot

    /// Programs of Debian's essential set, and `make`, which the quick start presumes.
    static let alwaysThere: Set<String> = ["make", "echo", "printf", "cat", "sh", "bash", "kill", "sleep"]

    /// The command lines of the quick start's code blocks, comments removed.
    func quickStartCommands() throws -> [String] {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let start = try XCTUnwrap(readme.range(of: "## Quick start\n"))
        let section = readme[start.upperBound...]
        let end = section.range(of: "\n## ")?.lowerBound ?? section.endIndex
        var commands: [String] = []
        var inCode = false
        for line in section[..<end].split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```") {
                inCode.toggle()
                continue
            }
            guard inCode else { continue }
            let command = (line.range(of: " #").map { line[..<$0.lowerBound] } ?? line).trimmingCharacters(in: .whitespaces)
            if !command.isEmpty && !command.hasPrefix("#") { commands.append(command) }
        }
        return commands
    }

    /// stdout of a command run in the checkout, which must succeed.
    func run(_ arguments: [String]) throws -> String {
        let (status, output) = try runCommand(arguments, in: Self.root, withStderr: false)
        XCTAssertEqual(status, 0, "\(arguments)")
        return output
    }

    func testEveryProgramTheQuickStartRunsIsInstalledByMakeRun() throws {
        let commands = try quickStartCommands()
        XCTAssertTrue(commands.contains("make run"), "\(commands)")
        var programs: Set<String> = []
        for command in commands {
            for stage in command.split(separator: "|") {
                if let program = stage.split(separator: " ").first { programs.insert(String(program)) }
            }
        }
        XCTAssertTrue(programs.contains("socat"), "the quick start talks to the daemon with socat: \(programs)")
        // What `make run` installs: the recipe calls scripts/install-deps.sh run.
        let recipe = try run(["make", "-n", "run"])
        XCTAssertTrue(recipe.contains("scripts/install-deps.sh run\n"), recipe)
        let installed = Set(try run(["scripts/install-deps.sh", "run", "--list"]).split(separator: "\n").map(String.init))
        for program in programs.subtracting(Self.alwaysThere) {
            XCTAssertTrue(installed.contains(program), "the quick start runs '\(program)', which make run does not install (\(installed.sorted()))")
        }
    }

    func testTheQuickStartTalksToAddressesTheExampleListensOn() throws {
        let example = try String(contentsOf: Self.root.appendingPathComponent("config/udprelayd.ini"), encoding: .utf8)
        for command in try quickStartCommands() where command.contains("socat") {
            // socat - UDP:127.0.0.1:7007 / UDP6:[::1]:7007
            let target = try XCTUnwrap(command.split(separator: " ").last { $0.hasPrefix("UDP") })
            let address = target.drop { $0 != ":" }.dropFirst()
            XCTAssertTrue(
                example.split(separator: "\n").contains { $0.hasPrefix("listen = ") && $0.contains(address) },
                "\(command): config/udprelayd.ini does not listen on \(address)")
        }
    }
}
