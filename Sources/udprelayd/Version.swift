/// The one place the version is set; the package, `--version`, `/status` and `/metrics` use it.
/// Change it with `scripts/set-version.sh`, which also adds the Debian changelog entry;
/// `make test` fails if the two disagree (scripts/check-version.sh).
enum BuildInfo {
    static let version = "0.1.0"
}
