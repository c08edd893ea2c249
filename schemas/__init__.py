"""The msgspec Structs of the wire contract (protocol.md): events, frames, HTTP bodies.

Imports msgspec and the standard library only.
"""
