"""`python -m deploy.cli …`: the same as the installed `cellbank …`."""

import sys

from deploy.cli import main

sys.exit(main())
