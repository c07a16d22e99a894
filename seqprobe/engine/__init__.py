"""The numeric engine (torch, never YAML): resumable forwards, exact patching, attribution, scoring.

Every number here has an oracle test against TransformerLens or plain transformers.
"""
