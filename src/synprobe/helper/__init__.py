"""The Prober's helper process: a shaker loop that no thread of the caller's can stall.

`process` (the caller's side: starts, feeds and owns the helper), `main` (the helper itself),
`framing` (length-prefixed frames on the pipe between them).
"""
