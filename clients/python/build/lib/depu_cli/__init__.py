"""DePU's public API from Python: ``depu_cli.client.Client`` and the ``depu`` command (``depu_cli.cli``)."""
__version__ = "1.0.0"
