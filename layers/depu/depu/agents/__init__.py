"""Provider agents: registration, tokens, verification, the catalogue of GPU classes and the matcher."""
