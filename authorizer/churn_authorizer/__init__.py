"""ChurnOps external authorizer: API keys, scopes and Redis-backed rate limits for Istio ext_authz."""
