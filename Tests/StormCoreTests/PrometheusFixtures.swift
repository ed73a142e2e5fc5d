/// A real `/metrics` answer of stormd 0.1.0 (captured with curl after one WebSocket subscriber received 50
/// messages published over HTTP at 100/s), kept byte for byte so parser tests run on what the gateway
/// actually writes: families in registry order, `1.0`-style gauges, `+Inf` buckets, a label-carrying info gauge.
let stormdMetricsSample = #"""
# HELP storm_connections Open client connections by transport.
# TYPE storm_connections gauge
storm_connections{transport="websocket"} 1.0
storm_connections{transport="sse"} 0.0
# HELP storm_connections_accepted_total Client connections accepted since start, by transport.
# TYPE storm_connections_accepted_total counter
storm_connections_accepted_total{transport="websocket"} 1
storm_connections_accepted_total{transport="sse"} 0
# HELP storm_fanout_latency_seconds Time from a message's publish timestamp to its write to local subscribers.
# TYPE storm_fanout_latency_seconds histogram
storm_fanout_latency_seconds_bucket{le="0.00025"} 1
storm_fanout_latency_seconds_bucket{le="0.0005"} 8
storm_fanout_latency_seconds_bucket{le="0.001"} 9
storm_fanout_latency_seconds_bucket{le="0.0025"} 48
storm_fanout_latency_seconds_bucket{le="0.005"} 50
storm_fanout_latency_seconds_bucket{le="0.01"} 50
storm_fanout_latency_seconds_bucket{le="0.025"} 50
storm_fanout_latency_seconds_bucket{le="0.05"} 50
storm_fanout_latency_seconds_bucket{le="0.075"} 50
storm_fanout_latency_seconds_bucket{le="0.1"} 50
storm_fanout_latency_seconds_bucket{le="0.25"} 50
storm_fanout_latency_seconds_bucket{le="0.5"} 50
storm_fanout_latency_seconds_bucket{le="1.0"} 50
storm_fanout_latency_seconds_bucket{le="2.5"} 50
storm_fanout_latency_seconds_bucket{le="5.0"} 50
storm_fanout_latency_seconds_bucket{le="10.0"} 50
storm_fanout_latency_seconds_bucket{le="+Inf"} 50
storm_fanout_latency_seconds_sum 0.05974900000000001
storm_fanout_latency_seconds_count 50
# HELP storm_client_errors_total Errors answered to clients, by code.
# TYPE storm_client_errors_total counter
storm_client_errors_total{code="bad_request"} 0
storm_client_errors_total{code="invalid_channel"} 0
storm_client_errors_total{code="protocol_violation"} 0
storm_client_errors_total{code="broker_unavailable"} 0
storm_client_errors_total{code="too_many_channels"} 0
storm_client_errors_total{code="not_found"} 0
storm_client_errors_total{code="message_too_large"} 0
storm_client_errors_total{code="method_not_allowed"} 0
# HELP storm_messages_dropped_total Deliveries not made, by reason.
# TYPE storm_messages_dropped_total counter
storm_messages_dropped_total{reason="slow_client"} 0
storm_messages_dropped_total{reason="malformed"} 0
# HELP storm_broker_subscriptions Channels this gateway holds a broker subscription for.
# TYPE storm_broker_subscriptions gauge
storm_broker_subscriptions 1.0
# HELP storm_broker_messages_received_total Messages received from the broker for local subscribers.
# TYPE storm_broker_messages_received_total counter
storm_broker_messages_received_total 50
# HELP storm_publish_duration_seconds Time from receiving a publish to the broker accepting it.
# TYPE storm_publish_duration_seconds histogram
storm_publish_duration_seconds_bucket{le="0.00025"} 42
storm_publish_duration_seconds_bucket{le="0.0005"} 50
storm_publish_duration_seconds_bucket{le="0.001"} 50
storm_publish_duration_seconds_bucket{le="0.0025"} 50
storm_publish_duration_seconds_bucket{le="0.005"} 50
storm_publish_duration_seconds_bucket{le="0.01"} 50
storm_publish_duration_seconds_bucket{le="0.025"} 50
storm_publish_duration_seconds_bucket{le="0.05"} 50
storm_publish_duration_seconds_bucket{le="0.075"} 50
storm_publish_duration_seconds_bucket{le="0.1"} 50
storm_publish_duration_seconds_bucket{le="0.25"} 50
storm_publish_duration_seconds_bucket{le="0.5"} 50
storm_publish_duration_seconds_bucket{le="1.0"} 50
storm_publish_duration_seconds_bucket{le="2.5"} 50
storm_publish_duration_seconds_bucket{le="5.0"} 50
storm_publish_duration_seconds_bucket{le="10.0"} 50
storm_publish_duration_seconds_bucket{le="+Inf"} 50
storm_publish_duration_seconds_sum 0.008856678000000002
storm_publish_duration_seconds_count 50
# HELP storm_slow_client_disconnects_total Clients disconnected because their outbound buffer was full.
# TYPE storm_slow_client_disconnects_total counter
storm_slow_client_disconnects_total{transport="sse"} 0
storm_slow_client_disconnects_total{transport="websocket"} 0
# HELP storm_build_info Always 1; labels carry the build.
# TYPE storm_build_info gauge
storm_build_info{version="0.1.0",instance_id="02d780dd8a97"} 1.0
# HELP storm_messages_delivered_total Messages written to client connections, by transport.
# TYPE storm_messages_delivered_total counter
storm_messages_delivered_total{transport="websocket"} 50
storm_messages_delivered_total{transport="sse"} 0
# HELP storm_messages_published_total Messages accepted from clients by this gateway, by transport.
# TYPE storm_messages_published_total counter
storm_messages_published_total{transport="websocket"} 0
storm_messages_published_total{transport="http"} 50
# HELP storm_broker_connected 1 when the broker connection is up.
# TYPE storm_broker_connected gauge
storm_broker_connected 1.0

"""#

/// A second real answer, from stormd with presence support: one WebSocket and one SSE subscriber, 40
/// messages published over HTTP, one publish refused for an invalid channel; families in the order of
/// this registry (it differs from the first: swift-prometheus does not keep registration order).
let stormdMetricsSampleSSE = #"""
# HELP storm_connections_accepted_total Client connections accepted since start, by transport.
# TYPE storm_connections_accepted_total counter
storm_connections_accepted_total{transport="sse"} 1
storm_connections_accepted_total{transport="websocket"} 1
# HELP storm_fanout_latency_seconds Time from a message's publish timestamp to its write to local subscribers.
# TYPE storm_fanout_latency_seconds histogram
storm_fanout_latency_seconds_bucket{le="0.00025"} 1
storm_fanout_latency_seconds_bucket{le="0.0005"} 5
storm_fanout_latency_seconds_bucket{le="0.001"} 6
storm_fanout_latency_seconds_bucket{le="0.0025"} 79
storm_fanout_latency_seconds_bucket{le="0.005"} 80
storm_fanout_latency_seconds_bucket{le="0.01"} 80
storm_fanout_latency_seconds_bucket{le="0.025"} 80
storm_fanout_latency_seconds_bucket{le="0.05"} 80
storm_fanout_latency_seconds_bucket{le="0.075"} 80
storm_fanout_latency_seconds_bucket{le="0.1"} 80
storm_fanout_latency_seconds_bucket{le="0.25"} 80
storm_fanout_latency_seconds_bucket{le="0.5"} 80
storm_fanout_latency_seconds_bucket{le="1.0"} 80
storm_fanout_latency_seconds_bucket{le="2.5"} 80
storm_fanout_latency_seconds_bucket{le="5.0"} 80
storm_fanout_latency_seconds_bucket{le="10.0"} 80
storm_fanout_latency_seconds_bucket{le="+Inf"} 80
storm_fanout_latency_seconds_sum 0.10245400000000002
storm_fanout_latency_seconds_count 80
# HELP storm_connections Open client connections by transport.
# TYPE storm_connections gauge
storm_connections{transport="websocket"} 1.0
storm_connections{transport="sse"} 1.0
# HELP storm_messages_published_total Messages accepted from clients by this gateway, by transport.
# TYPE storm_messages_published_total counter
storm_messages_published_total{transport="websocket"} 0
storm_messages_published_total{transport="http"} 40
# HELP storm_broker_messages_received_total Messages received from the broker for local subscribers.
# TYPE storm_broker_messages_received_total counter
storm_broker_messages_received_total 40
# HELP storm_slow_client_disconnects_total Clients disconnected because their outbound buffer was full.
# TYPE storm_slow_client_disconnects_total counter
storm_slow_client_disconnects_total{transport="websocket"} 0
storm_slow_client_disconnects_total{transport="sse"} 0
# HELP storm_presence_batches_total Pipelined presence writes (about one round trip each).
# TYPE storm_presence_batches_total counter
storm_presence_batches_total 1
# HELP storm_messages_dropped_total Deliveries not made, by reason.
# TYPE storm_messages_dropped_total counter
storm_messages_dropped_total{reason="slow_client"} 0
storm_messages_dropped_total{reason="malformed"} 0
# HELP storm_build_info Always 1; labels carry the build.
# TYPE storm_build_info gauge
storm_build_info{version="0.1.0",instance_id="219d89cf67dc"} 1.0
# HELP storm_client_errors_total Errors answered to clients, by code.
# TYPE storm_client_errors_total counter
storm_client_errors_total{code="broker_unavailable"} 0
storm_client_errors_total{code="message_too_large"} 0
storm_client_errors_total{code="invalid_channel"} 1
storm_client_errors_total{code="method_not_allowed"} 0
storm_client_errors_total{code="not_found"} 0
storm_client_errors_total{code="protocol_violation"} 0
storm_client_errors_total{code="too_many_channels"} 0
storm_client_errors_total{code="bad_request"} 0
# HELP storm_presence_errors_total Presence store writes that failed (the store was then reconnected and rewritten).
# TYPE storm_presence_errors_total counter
storm_presence_errors_total 0
# HELP storm_publish_duration_seconds Time from receiving a publish to the broker accepting it.
# TYPE storm_publish_duration_seconds histogram
storm_publish_duration_seconds_bucket{le="0.00025"} 35
storm_publish_duration_seconds_bucket{le="0.0005"} 38
storm_publish_duration_seconds_bucket{le="0.001"} 40
storm_publish_duration_seconds_bucket{le="0.0025"} 40
storm_publish_duration_seconds_bucket{le="0.005"} 40
storm_publish_duration_seconds_bucket{le="0.01"} 40
storm_publish_duration_seconds_bucket{le="0.025"} 40
storm_publish_duration_seconds_bucket{le="0.05"} 40
storm_publish_duration_seconds_bucket{le="0.075"} 40
storm_publish_duration_seconds_bucket{le="0.1"} 40
storm_publish_duration_seconds_bucket{le="0.25"} 40
storm_publish_duration_seconds_bucket{le="0.5"} 40
storm_publish_duration_seconds_bucket{le="1.0"} 40
storm_publish_duration_seconds_bucket{le="2.5"} 40
storm_publish_duration_seconds_bucket{le="5.0"} 40
storm_publish_duration_seconds_bucket{le="10.0"} 40
storm_publish_duration_seconds_bucket{le="+Inf"} 40
storm_publish_duration_seconds_sum 0.008291938
storm_publish_duration_seconds_count 40
# HELP storm_broker_subscriptions Channels this gateway holds a broker subscription for.
# TYPE storm_broker_subscriptions gauge
storm_broker_subscriptions 1.0
# HELP storm_redis_connected 1 while the presence store in Redis is writable; 0 when it is down (presence degraded) or not configured (--redis).
# TYPE storm_redis_connected gauge
storm_redis_connected 0.0
# HELP storm_broker_connected 1 when the broker connection is up.
# TYPE storm_broker_connected gauge
storm_broker_connected 1.0
# HELP storm_presence_writes_total Presence entries and user routes written to or deleted from the presence store.
# TYPE storm_presence_writes_total counter
storm_presence_writes_total 0
# HELP storm_messages_delivered_total Messages written to client connections, by transport.
# TYPE storm_messages_delivered_total counter
storm_messages_delivered_total{transport="sse"} 40
storm_messages_delivered_total{transport="websocket"} 40

"""#
