"""Shadow forks: a private copy of mainnet that a user changes freely and that follows mainnet's head.

A fork is its **base** (chain, block) plus its **journal** (the user's own writes, in order). The anvil process
on a fork host is only a cache of that pair: any host can rebuild it, and a sync (a **rebase**) replays the
journal onto a newer base. Modules: ``models`` (tables), ``journal`` (ordered writes), ``outcomes`` (what a write
did, and whether a replay did the same), ``policy`` (which JSON-RPC methods a fork serves), ``proxy`` (the
authenticated JSON-RPC front door), ``tokens`` (RPC URL tokens), ``tasks`` (the host task protocol),
``service`` (what the bot calls), ``janitor`` (expiry and host loss); the fork-host routes are in functions/agent_api.
"""
