"""The benchmark: the service as deployed, driven by wrk, against the ceiling of its stack."""
