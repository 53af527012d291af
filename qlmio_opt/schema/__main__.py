"""``python -m qlmio_opt.schema`` regenerates the shipped JSON Schemas."""

from qlmio_opt.schema import write_schemas

write_schemas()
