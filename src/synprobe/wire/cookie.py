"""SYN cookies: a keyed hash per target and a serial number per attempt give each SYN its
sequence number and its source port.

A stateless scanner keeps no table of what it sent; it recognises its replies because only the
holder of the key can compute, for a (local address, remote address, remote port), the sequence
number a SYN carried (a SYN-ACK or RST acknowledges it +1) and the source port it came from.
The key is per engine, from `os.urandom` (what `secrets` reads), so a peer who saw one run's
probes cannot forge replies to the next one.

Every attempt also gets a serial number, counted up per key (`CookieKey.issue`), and the
serial is folded into the pair: with the target's hash (h_seq, h_port) and serial n,

    sport = lo + (h_port + n mod span) mod span,    seq = h_seq + n div span  (mod 2**32)

That map from n to (sport, seq) is one-to-one for n < span * 2**32 (mixed radix), so no two
attempts of one key ever share the pair for the same target: ports repeat, the pair does not.
It is invertible too, so a reply names the attempt it answers (`CookieKey.serial_of`): a
long-lived engine counts an answer only for the attempts of the check in flight, never for an
earlier check of the same target (a late or replayed SYN-ACK to a port that now drops SYNs).
Consecutive checks of a target also leave from different ports, so a SYN_RECV the server still
holds from an earlier check is not hit by a SYN with another sequence number.

The hash is keyed BLAKE2s cut to 8 bytes: a real PRF, and on 10-byte to 34-byte inputs
measured a little faster than BLAKE2b here (~0.45 µs per derive with `copy()` of a keyed
state, against ~0.55 µs; HMAC-SHA256 costs ~1.4 µs).
"""

from __future__ import annotations

import os
import struct

try:  # BLAKE2 alone: hashlib would also load OpenSSL (_hashlib, ~2 ms of every start-up)
    from _blake2 import blake2s
except ImportError:  # not CPython
    from hashlib import blake2s

# Linux hands out ephemeral ports from net.ipv4.ip_local_port_range, 32768-60999 by default.
# Sending from above it means no connect() on this host (including our own shaker engine) is
# given one of our ports, so no kernel socket shares a 4-tuple we probe from. With no socket
# there, the kernel answers each SYN-ACK to these ports with a RST, which is what `--rst kernel`
# relies on. Hosts that widened the range (e.g. to 1024-65535), or run a service bound to a
# port in it, should pass a range disjoint from both.
DEFAULT_PORT_LO = 61000
DEFAULT_PORT_HI = 65535

KEY_BYTES = 16  # 128-bit key; BLAKE2s accepts up to 32
_PORT = struct.Struct("!H").pack
_SPLIT = struct.Struct("!II").unpack  # 8-byte digest -> (sequence number, port index)
# Hashes a long-lived engine keeps (CookieKey.remember): it checks the same targets again and
# again, and a reply is matched a moment after its SYN was made, so most derivations repeat
# one. A lookup costs ~0.15 µs against ~0.6 µs for the hash. Only SYNs being made add to it (a
# packet from outside cannot fill it); a full memo is emptied: at most ~6 MB (IPv4) or ~9 MB
# (IPv6). A one-shot run keeps none: it rarely checks a target twice, and its memory goes to
# checks in flight.
MEMO_LIMIT = 1 << 15


class CookieKey:
    """A per-engine secret, the source-port range cookies map into, and the attempt counter.

    Per target the hash spreads source ports evenly over the range (4,536 ports by default), so
    consecutive targets do not reuse one 4-tuple. Each `issue` takes the next serial, so each
    attempt, retries included, gets a fresh (port, sequence) pair; `serial_of` inverts it.
    """

    __slots__ = ("_base", "_memo", "_memo_limit", "_span", "issued", "key", "limit", "port_hi",
                 "port_lo")

    def __init__(
        self,
        key: bytes | None = None,
        port_lo: int = DEFAULT_PORT_LO,
        port_hi: int = DEFAULT_PORT_HI,
    ) -> None:
        if not 1 <= port_lo <= port_hi <= 0xFFFF:
            raise ValueError(f"bad source port range {port_lo}-{port_hi}")
        self.key = os.urandom(KEY_BYTES) if key is None else key
        if not 1 <= len(self.key) <= 32:
            raise ValueError("a cookie key is 1 to 32 bytes long")
        self.port_lo = port_lo
        self.port_hi = port_hi
        self._span = port_hi - port_lo + 1
        # Distinct pairs for one target: span * 2**32, about 1.9e13 with the default range
        # (six years at 100,000 attempts per second); 2**32 with a one-port range.
        self.limit = self._span << 32
        self.issued = 0  # serials handed out so far: replies may only name these
        # Keying BLAKE2 costs one compression; copying a keyed state is cheaper per packet.
        self._base = blake2s(key=self.key, digest_size=8)
        self._memo: dict[tuple[bytes, bytes, int, bytes], tuple[int, int]] = {}
        self._memo_limit = 0  # none kept until remember()

    def remember(self, limit: int = MEMO_LIMIT) -> None:
        """Keep up to `limit` targets' hashes (see MEMO_LIMIT); 0 keeps none."""
        self._memo_limit = limit
        self._memo.clear()

    def _hash(self, local: bytes, remote: bytes, rport: int, salt: bytes,
              keep: bool = True) -> tuple[int, int]:
        limit = self._memo_limit
        if limit:  # (a one-shot run's per-packet path pays for no lookup)
            found = self._memo.get((local, remote, rport, salt))
            if found is not None:
                return found
        h = self._base.copy()
        h.update(local + remote + _PORT(rport) + salt)
        found = _SPLIT(h.digest())
        if keep and limit:
            memo = self._memo
            if len(memo) >= limit:
                memo.clear()
            memo[local, remote, rport, salt] = found
        return found

    def derive(self, local: bytes, remote: bytes, rport: int, salt: bytes = b"",
               serial: int = 0) -> tuple[int, int]:
        """(SYN sequence number, source port) of attempt `serial` from `local` to
        `remote`:`rport`. Pure: `issue` is what takes a serial for a new attempt.

        `local` and `remote` are packed addresses (4 or 16 bytes), as `socket.inet_pton` gives.
        `salt` is the packed address of the real server a DSR check goes through (`via`), or
        empty: checks of one VIP through two real servers then get distinct sequence numbers
        and (almost always) distinct source ports, so each reply names its real server, and a
        reset that strays to the wrong one matches no connection there. No salted input equals
        an unsalted one: the hashed lengths differ (10 or 34 bytes unsalted; 14, 26, 38 or 50
        salted), so a salt never aliases a plain check's cookie.
        """
        seq, index = self._hash(local, remote, rport, salt)
        span = self._span
        # 32 bits for the port index leave a modulo bias below 2**-19 for any range width.
        return (seq + serial // span) & 0xFFFFFFFF, self.port_lo + (index + serial) % span

    def issue(self, local: bytes, remote: bytes, rport: int,
              salt: bytes = b"") -> tuple[int, int, int]:
        """(sequence number, source port, serial) for a new attempt: a pair this key never
        gave the same target before."""
        serial = self.issued
        if serial >= self.limit:  # a one-port range after 2**32 attempts: start a new key
            self.key = os.urandom(KEY_BYTES)
            self._base = blake2s(key=self.key, digest_size=8)
            self._memo.clear()  # hashes under the old key
            serial = 0
        self.issued = serial + 1
        # derive(), inlined (one SYN each: a call costs ~0.1 µs of its ~0.8), and its hash too
        # when no memo is kept (a one-shot run).
        if self._memo_limit:
            h_seq, index = self._hash(local, remote, rport, salt)
        else:
            h = self._base.copy()
            h.update(local + remote + _PORT(rport) + salt)
            h_seq, index = _SPLIT(h.digest())
        span = self._span
        return ((h_seq + serial // span) & 0xFFFFFFFF, self.port_lo + (index + serial) % span,
                serial)

    def serial_of(self, local: bytes, remote: bytes, rport: int, seq: int, lport: int,
                  salt: bytes = b"") -> int | None:
        """The serial of the attempt whose SYN carried `seq` from port `lport`, if this key
        issued it; None for a pair it never gave out (a forgery, another scanner's reply).

        A random pair passes with probability issued / (span * 2**32): each check still counts
        only the serials of its own attempts, about 2**-44 for a forgery with the default range.
        """
        h_seq, index = self._hash(local, remote, rport, salt, keep=False)  # untrusted input
        span = self._span
        serial = ((seq - h_seq) & 0xFFFFFFFF) * span + (lport - self.port_lo - index) % span
        return serial if serial < self.issued and self.owns_port(lport) else None

    def owns_port(self, port: int) -> bool:
        """Whether `port` is in our source range, i.e. a packet to it may be a reply to us."""
        return self.port_lo <= port <= self.port_hi

    def __repr__(self) -> str:  # never print the key
        return f"CookieKey(ports={self.port_lo}-{self.port_hi})"
