"""Jinja2 meta-prompts of the evolution engine (package data)."""
