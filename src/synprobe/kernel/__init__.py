"""The kernel shell: sockets, syscalls and kernel tables, nothing that decides what bytes mean.

Raw sockets batched with sendmmsg/recvmmsg, the filtered packet receiver, routes and neighbours
over rtnetlink, frames on packet sockets, sysctl reads, socket marks, source addresses and the
open-file limit. The engines drive these; `synprobe.wire` gives the bytes their meaning.
"""
