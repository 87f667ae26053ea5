"""``python -m mysql_pg_assets_demo seed | simulate | alter``: the demo shop's command line."""

import sys

from mysql_pg_assets_demo.shop import main

sys.exit(main())
