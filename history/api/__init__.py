"""The history service's operations, one module per verb or family of verbs (as Temporal's
`service/history/api/<verb>/`), each over the shared load-modify-commit helper
(`history.api.access.RunAccess`): load the run under its workflow's lock, apply the engine's
rules to a Mutation, commit it through the shard's group committer, update the caches and wake
the long polls. `history/service.py` owns the shards and routes each call here.
"""
