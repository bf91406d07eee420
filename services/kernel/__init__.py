"""Shared kernel of the bank services: identifiers and nomenclatures every context speaks."""
