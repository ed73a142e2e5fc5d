import ArgumentParser

extension Stormctl {
    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Load-test the gateway (in progress).")
        func run() async throws {}
    }
}
