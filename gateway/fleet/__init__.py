"""Fleet telemetry: positions, the fold, odometer, geofences and maintenance."""
