import sys

from alignclip.cli.main import main

sys.exit(main())
