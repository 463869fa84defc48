import sys

from arrowport.cli import main

sys.exit(main())
