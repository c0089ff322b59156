"""The border between coordinator and node: what crosses it and how it is checked.

Both sides import this package; it imports neither of them. `signing` (ed25519 documents and
trust stores), `manifest` and `bundle` (content-addressed, deterministic tar bundles), `crypt`
(Crypt4GH sealing of results) and `messages` (the task envelope, status report, result marker,
task states and mailbox keys, each typed and checked on the way in).
"""
