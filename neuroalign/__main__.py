"""`python -m neuroalign ...` -- see `neuroalign.cli`."""

import sys

from neuroalign.cli import main

sys.exit(main())
