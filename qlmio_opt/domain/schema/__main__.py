"""``python -m qlmio_opt.domain.schema`` regenerates the shipped JSON Schemas."""

from qlmio_opt.domain.schema import write_schemas

write_schemas()
