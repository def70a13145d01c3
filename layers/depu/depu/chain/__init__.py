"""Following an Ethereum chain: JSON-RPC access, Transfer decoding, the checkpointed reorg-safe indexer.

Nothing here imports web3.py: the indexer speaks JSON-RPC over requests and decodes logs by slicing hex words,
which is both exact (Python integers) and fast (no ABI machinery, no checksum addresses)."""
