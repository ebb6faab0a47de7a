"""The TAO cycle: select, explore, score, optimize, gate, publish."""
