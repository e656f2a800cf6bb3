"""``python -m saas_demo``: the demo app, served (see ``saas_demo.demo``)."""

import sys

from saas_demo.demo import main

sys.exit(main())
