"""Distil BERT-style masked language models into smaller students, the DistilBERT way."""

from distil.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()
