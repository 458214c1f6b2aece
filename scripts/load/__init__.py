"""Load, soak, capacity and fault scenarios of the ChurnOps serving stack (docs/_incoming/load.md).

- `payloads`: the request mix of real clients (customers drawn from the feature contract, v1, v2 single and
  batches, feedback labels, a share of invalid requests that must be refused with a 4xx);
- `locustfile`: that mix as a locust user, against any `--host` (optionally with an API key);
- `pacer`: the same mix as an open-loop asyncio load loop that records every request (fault scenarios,
  tests/faults);
- `localstack`: the local stack (churnops.stack) with the detector, and optionally the authorizer behind an
  Envoy-like gateway, PostgreSQL and Redis reached through TCP proxies the scenarios can cut;
- `gateway`: that Envoy stand-in (ext_authz HTTP check, then forward);
- `procstats`: resident memory and open descriptors of every process of the stack, sampled over time;
- `locust_run`: locust headless as a subprocess (CSV and HTML reports) and its figures.
"""
