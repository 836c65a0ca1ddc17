"""Channel limits that hold across every replica of a consumer group (`rate_limiter.backend:
redis`): the rate (`limiter`), the concurrency cap (`gate`) and the circuit (`breaker`), each
over a small store Protocol whose Redis implementation is one Lua script per operation
(`permits`, `leases`, `circuit`). `link` is the one client and the switch to each replica's
share while Redis does not answer (`trouble` sorts its errors; `channel_link` is one
channel's view, so one channel's bad keys fall back alone); `replicas` counts the live
replicas for that share; `limits` builds the parts of every channel.
`consumer.limit_backends` chooses this or the local ones.
"""
