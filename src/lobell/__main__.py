"""`python -m lobell ...` (and `accelerate launch -m lobell train CONFIG`)."""

import sys

from lobell.cli import main

sys.exit(main())
