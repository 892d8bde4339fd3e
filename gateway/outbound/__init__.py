"""The outbound HTTP client: sender, SSRF guard, per-partner breaker and limits, partner
credentials, JWKS fetching. It knows nothing of deliveries, actions or triggers."""
