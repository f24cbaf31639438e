"""Population screening: a Bulk Data export in, a worklist of patients to act on out.

``tpi-cds screen`` reads an NDJSON export (a folder, or one it downloads with the Bulk
Data client), runs the patient-view engine once per patient with a TPI session in the
last 365 days, and writes ``worklist.csv``, ``worklist.parquet`` and ``summary.json``.
"""
