"""The coordinator: fan a study out as signed tasks, collect verified results, meta-analyse.

Nothing here is imported by a node (and nothing of the node is imported here); they share only
`federation.protocol` and `federation.transport`.
"""
