"""The node's disclosure gate: what may leave a node, decided on the node, default-deny.

`rules` holds one small function per disclosure rule, `tables` builds the candidate release
tables from the Hail steps' private outputs, `gate` decides (policy, privacy ledger, audit log,
fail-closed handling) and `ledger` is the privacy ledger of everything the node has released.
No Hail here: the gate runs in its own short process after the Hail steps.
"""
