import Foundation

/// The web page and the `storm.js` client, read from the SwiftPM resource bundle once at start.
///
/// The files live as real files in `Sources/StormWeb/Resources/` (edit them there, no build step) and are
/// copied by SwiftPM into the `storm_StormWeb.resources` bundle next to the built binaries; `make install`
/// installs that bundle next to the installed `stormd`. Each file is read once; the HTTP side keeps the
/// bytes and their ETag, so a request costs no file access.
public enum StormWebFiles {
    /// One served file: where it is answered, what it is, and its bytes.
    public struct File: Sendable {
        /// The file's name in `Resources/`.
        public let name: String
        /// The URL paths that answer it.
        public let paths: [String]
        public let contentType: String
        /// Whether it is the HTML page, which gets the Content-Security-Policy and framing headers.
        public let isPage: Bool
        public let bytes: [UInt8]
    }

    /// A resource that could not be read: the bundle is missing or incomplete.
    public struct LoadError: Error, CustomStringConvertible, Sendable {
        public let file: String
        public let reason: String
        public var description: String {
            "the web file '\(file)' could not be read from the resource bundle storm_StormWeb.resources (\(reason)); "
                + "install the bundle next to stormd (make install does) or run with --web-ui off"
        }
    }

    /// What is served, by file: `/` and `/ui/…` for the page, `/storm.js` and `/storm.d.ts` for the client.
    static let catalog: [(name: String, paths: [String], contentType: String, isPage: Bool)] = [
        ("index.html", ["/", "/ui", "/ui/", "/ui/index.html"], "text/html; charset=utf-8", true),
        ("app.js", ["/ui/app.js"], "text/javascript; charset=utf-8", false),
        ("app.css", ["/ui/app.css"], "text/css; charset=utf-8", false),
        ("favicon.svg", ["/ui/favicon.svg"], "image/svg+xml", false),
        ("storm.js", ["/storm.js", "/ui/storm.js"], "text/javascript; charset=utf-8", false),
        ("storm.d.ts", ["/storm.d.ts"], "application/typescript; charset=utf-8", false),
    ]

    /// Reads every file of the catalog from the bundle; throws `LoadError` naming the first missing one.
    public static func load() throws(LoadError) -> [File] {
        let bundle = Bundle.module
        var files: [File] = []
        for entry in catalog {
            let dot = entry.name.firstIndex(of: ".") ?? entry.name.endIndex
            let base = String(entry.name[..<dot])
            let ext = dot < entry.name.endIndex ? String(entry.name[entry.name.index(after: dot)...]) : nil
            guard let url = bundle.url(forResource: base, withExtension: ext, subdirectory: "Resources") else {
                throw LoadError(file: entry.name, reason: "not in \(bundle.bundlePath)")
            }
            let data: Data
            do {
                data = try Data(contentsOf: url)
            } catch {
                throw LoadError(file: entry.name, reason: "\(error)")
            }
            files.append(File(name: entry.name, paths: entry.paths, contentType: entry.contentType, isPage: entry.isPage, bytes: Array(data)))
        }
        return files
    }
}
