"""DePU's public REST API (``/v1``) in the product's words: who may call (``gate``), the contract's shapes
(``models``), how domain objects read in it (``views``), one error shape (``errors``), exports a program can
poll (``exports``). The handler is functions/public_api/app.py."""
