"""The pure packet core of the raw engine: bytes in, verdicts out, no sockets.

- `checksum`: RFC 1071 sums, kept as integers modulo 0xFFFF so constant parts can be precomputed.
- `cookie`: the keyed hash that gives each target its SYN sequence number and source port.
- `packets`: our own encoder of whole SYN / RST packets (pure `struct`): what a cached template
  must equal byte for byte.
- `syn`: packet templates built once (with scapy) and patched per packet (without it).
- `replies`: validate and classify one received IPv4/IPv6 packet.
- `icmp`: ICMP / ICMPv6 type and code -> verdict, one table for both engines.
- `ether`, `tunnel`: Ethernet frames, ARP / neighbour discovery, IP-in-IP (checks through a real
  server).
- `netlink`: rtnetlink requests and answers (routes, neighbours, links) as bytes.
- `bpf`: the classic BPF filter that keeps only candidate replies in the kernel.
- `describe`: a one-line, tcpdump-like description of a packet for `--dry-run` (or its fields,
  for `--dry-run --json`).

Only `syn.syn_template` / `syn.rst_template` import scapy, and only when called, so the hot
path and `import synprobe.wire.*` stay free of it.
"""
