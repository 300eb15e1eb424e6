"""Registers the verbs that live in other modules; kept apart so app.py stays a list of verbs."""

from __future__ import annotations
