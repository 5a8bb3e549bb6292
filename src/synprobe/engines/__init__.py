"""The engines: `shaker` (kernel sockets) and `raw` (crafted packets). See synprobe.registry."""
