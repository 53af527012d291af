"""The faces layer of qlmio-opt (docs/architecture.md)."""
