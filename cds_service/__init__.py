"""The CDS Hooks face of tpi-cds: requests, prefetch, configuration, the command line."""
