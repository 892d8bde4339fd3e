"""A tenant's mapping files (the `/api/v1/mappings` resource): uploaded, versioned, activated,
compiled once per version, and tried on a sample (dry run). The language itself is
`gateway/mapping/`."""
