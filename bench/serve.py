"""``python -m bench.serve service|ceiling``: the benchmark's two servers, same stack."""

from __future__ import annotations

import os
import sys

from bench.ceiling import create_ceiling_app
from cds_service.serving import GunicornService, serve
from cds_service.settings import ServiceSettings

if __name__ == "__main__":
    if sys.argv[1:] == ["ceiling"]:
        GunicornService(ServiceSettings.from_env(os.environ), create_ceiling_app).run()
    else:
        serve()
