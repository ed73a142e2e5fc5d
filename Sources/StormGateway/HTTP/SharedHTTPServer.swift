// The HTTP server pieces every role shares (request handling, Host/Origin policy, limits, deadlines,
// responses) live in StormHTTP; the gateway's files and tests see them through StormGateway.
@_exported import StormHTTP
