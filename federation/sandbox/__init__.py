"""A whole federation on one machine: the demo, synthetic cohorts, and the real servers
(SeaweedFS, OpenSSH) that the demo and the integration tests start on loopback.

Never used by a node or a coordinator in production; it uses them.
"""
