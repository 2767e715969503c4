import sys

from facebridge.cli import main

sys.exit(main())
