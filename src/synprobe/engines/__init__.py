"""The engines behind one contract (`base`): `shaker` (kernel sockets) and the `raw` package
(crafted packets), found by name through `registry`."""
