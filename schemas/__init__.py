"""Schemas as code: StructTypes of inputs, the canonical pair table, rejects."""
