"""A small local web page for human approval of candidate prompts (FastAPI + Jinja2)."""
