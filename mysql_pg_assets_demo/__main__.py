"""``python -m mysql_pg_assets_demo``: see ``cli``."""

import sys

from mysql_pg_assets_demo.cli import main

sys.exit(main())
