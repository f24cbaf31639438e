"""spark-submit entry script: ``tpi-cds screen --engine spark`` with the submitted master.

    spark-submit [spark options] scripts/screen_spark.py --ndjson DIR --out DIR [...]

Every argument after the script is passed to ``tpi-cds screen``; ``--engine spark`` is
implied, and without ``--master`` the session spark-submit set up is used.
"""

import sys

from cds_service.cli import main

if __name__ == "__main__":
    sys.exit(main(["screen", "--engine", "spark", *sys.argv[1:]]))
