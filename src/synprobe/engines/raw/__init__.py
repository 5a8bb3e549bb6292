"""The raw engine: crafted SYNs from cached templates, stateless cookie matching of replies.

`engine` (the loop), `options` (its typed options), `via` (checks through one real server),
`templates` (scapy-built templates, cached on disk). Its sockets live in `synprobe.kernel`; its
bytes in `synprobe.wire`.
"""
