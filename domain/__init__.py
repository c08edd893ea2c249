"""Pure rules of Duologue: ids, validation, the thread fold and command decisions. No I/O."""
