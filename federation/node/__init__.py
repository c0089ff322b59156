"""A national node: the agent that polls its mailbox, its policy, its ledger and its selftest.

Nothing here is imported by the coordinator (and nothing of the coordinator is imported here);
they share only `federation.protocol` and `federation.transport`.
"""
