"""Fleet telemetry (SPEC §6 "append, then fold"): positions appended to each vehicle's track,
then folded per vehicle into its last position, odometer, geofence states and maintenance
counters.

    fix.py       the canonical fix: parse, validate, normalise (pure)
    append.py    use case: resolve the vehicle, append through the group commit, outcome per fix
    geometry.py geofences.py maintenance.py   the geofence and maintenance evaluators (pure)
    rule_service.py   use case: geofences and maintenance plans as admin resources
    rules.py     the fold's per-tenant cache of those rules
    odometer.py  distance between accepted fixes, jitter, late fixes, re-baselines (pure)
    quality.py   the quality gates (pure)
    state.py     one vehicle's fold state and what a fix does to it (pure)
    settings.py  use case: a tenant's fleet settings (gates, odometer, retention)
    fold.py      use case: the fold processor (leased shards, events, checkpoints)
"""
