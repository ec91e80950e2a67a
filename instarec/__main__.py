import sys

from instarec.cli import main

sys.exit(main())
