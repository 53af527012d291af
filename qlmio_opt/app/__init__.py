"""The app layer of qlmio-opt (docs/architecture.md)."""
