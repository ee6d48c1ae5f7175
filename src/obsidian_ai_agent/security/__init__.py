"""Guards: API keys and scopes, rate limits, response headers, the SSRF guard and the vault path guard."""
