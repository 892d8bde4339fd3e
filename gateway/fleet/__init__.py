"""Fleet telemetry: positions appended, then folded per vehicle (SPEC §6)."""
