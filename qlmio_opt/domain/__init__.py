"""The domain layer of qlmio-opt (docs/architecture.md)."""
