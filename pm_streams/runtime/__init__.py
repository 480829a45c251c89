"""Workarounds for faust-streaming, mode, aiokafka and CPython, kept in one place.

Each module is headed by what it answers upstream and the condition under which it can
be deleted. Nothing outside the agents, the composition root and the web layer's reads
should need them; the domain never does.
"""
