import sys

from phi3_aipc.cli import main

sys.exit(main())
