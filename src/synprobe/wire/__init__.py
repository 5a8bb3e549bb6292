"""The pure packet core of the raw engine: bytes in, verdicts out, no sockets.

- `checksum`: RFC 1071 sums, kept as integers modulo 0xFFFF so constant parts can be precomputed.
- `cookie`: the keyed hash that gives each target its SYN sequence number and source port.
- `syn`: packet templates built once (with scapy) and patched per packet (without it).
- `replies`: validate and classify one received IPv4/IPv6 packet.
- `bpf`: the classic BPF filter that keeps only candidate replies in the kernel.
- `describe`: a one-line, tcpdump-like description of a packet for `--dry-run` (or its fields,
  for `--dry-run --json`).

Only `syn.syn_template` / `syn.rst_template` import scapy, and only when called, so the hot
path and `import synprobe.wire.*` stay free of it.
"""
