"""The ppl model zoo: one package per published model, built on the public ppl API.

Registry entries are added by the zoo issues; it is empty for now.
"""

REGISTRY: dict = {}
